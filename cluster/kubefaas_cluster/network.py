"""Address plan of the local cluster and the few socket checks it needs.

All ranges sit in private space that the machines' own networks do not use; everything a
cluster serves binds to loopback except what pods must reach on the node address.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DNS_IP = "10.96.0.10"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
LOOPBACK = "127.0.0.1"


def free_port(*, host: str = LOOPBACK) -> int:
    """A TCP port the kernel considers free right now.

    There is a window between this check and the component binding it; a clash then shows up
    as a component that fails its readiness check with "address already in use" in its log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, *, host: str = LOOPBACK) -> bool:
    """True if nothing listens on `port` (binding succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def node_ip() -> str:
    """The address of the interface holding the default route.

    Pods reach the API server through the node address (10.96.0.1 is DNAT-ed to it), so the
    full cluster cannot use loopback there. A UDP "connect" only consults the routing table;
    no packet leaves the machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.254", 9))
            address: str = sock.getsockname()[0]
        except OSError:
            address = ""
    if address and not address.startswith("127."):
        return address
    output = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout
    for candidate in output.split():
        if "." in candidate and not candidate.startswith("127."):
            return candidate
    raise RuntimeError("this machine has no non-loopback IPv4 address for the node")


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    abort: Callable[[], str | None] | None = None,
) -> None:
    """Poll `check` until it is true; `abort` returns a reason to give up early (a dead PID)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if abort is not None:
            reason = abort()
            if reason:
                raise TimeoutError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
