"""Host preparation and clean-up for the full cluster (root only).

Forwarding is off on a fresh machine, which silently breaks pod egress and Service traffic,
so it is switched on; bridged pod traffic must traverse iptables for kube-proxy's rules to
apply to pods on the same bridge. ``down`` must leave no process behind, and containers
are children of containerd's shims, not of any process this package started, so they are
found and stopped through containerd and /proc.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from kubefaas_cluster.binaries import BuildError, apt_install, ensure_command
from kubefaas_cluster.images import CONTAINERD_NAMESPACE
from kubefaas_cluster.node import CNI_BIN_DIR, CNI_PACKAGE, NODE_COMMANDS

SYSCTLS: dict[str, str] = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
}
# Refuse to start below this much free disk: the kubelet would evict at once.
MIN_FREE_BYTES = 4 * 1024**3


def require_root() -> None:
    if os.geteuid() != 0:
        raise BuildError("the full cluster runs containers and changes iptables: run it as root")


def ensure_node_commands() -> dict[str, Path]:
    """containerd, runc, CNI plugins, iptables and conntrack, installed from Debian if missing.

    Missing packages are installed in one apt-get run: each run costs seconds of dpkg work.
    """
    missing = {pkg for cmd, pkg in NODE_COMMANDS.items() if shutil.which(cmd) is None}
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.add(CNI_PACKAGE)
    if missing:
        apt_install(sorted(missing))
    found = {cmd: ensure_command(cmd, package=pkg) for cmd, pkg in NODE_COMMANDS.items()}
    if not (CNI_BIN_DIR / "bridge").exists():
        raise BuildError(f"{CNI_PACKAGE} installed no bridge plugin in {CNI_BIN_DIR}")
    return found


def set_sysctls() -> None:
    """Write the sysctls the node needs, skipping keys this kernel does not have."""
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key.replace(".", "/")
        if path.exists() and path.read_text(encoding="utf-8").strip() != value:
            path.write_text(value, encoding="utf-8")


def check_free_disk(*paths: Path) -> None:
    """Fail early instead of letting disk-pressure eviction taint the node."""
    for path in paths:
        existing = path
        while not existing.exists():
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if free < MIN_FREE_BYTES:
            raise BuildError(
                f"only {free / 1024**3:.1f} GiB free under {existing}; "
                f"the node needs at least {MIN_FREE_BYTES / 1024**3:.0f} GiB"
            )


def _ctr(ctr: Path, address: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ctr), f"--address={address}", f"--namespace={CONTAINERD_NAMESPACE}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def stop_containers(*, ctr: Path, address: Path, timeout: float = 30.0) -> list[str]:
    """Kill every running container task; keep the container records.

    The records stay so that on the next ``up`` the kubelet tears the sandboxes down through
    the CRI (releasing their IPs and network namespaces) before starting them again.
    """
    if not address.exists():
        return []
    tasks = _running_tasks(ctr, address)
    for task in tasks:
        _ctr(ctr, address, "tasks", "kill", "--all", "--signal=SIGKILL", task)
    deadline = time.monotonic() + timeout
    while _running_tasks(ctr, address) and time.monotonic() < deadline:
        time.sleep(0.2)
    for task in tasks:
        # Deleting the task makes its shim exit; failures here leave the shim to kill_shims.
        _ctr(ctr, address, "tasks", "delete", "--force", task)
    return tasks


def _running_tasks(ctr: Path, address: Path) -> list[str]:
    """IDs of tasks not yet stopped (``ctr tasks ls`` prints TASK PID STATUS)."""
    listed = _ctr(ctr, address, "tasks", "ls")
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    return [row[0] for row in rows if len(row) >= 3 and row[2] != "STOPPED"]


def kill_shims(address: Path) -> list[int]:
    """SIGKILL runc shims that belong to our containerd (their command line names its socket)."""
    killed = []
    needle = str(address).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline.split(b"\0", 1)[0] and needle in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed


def unmount_below(root: Path) -> list[str]:
    """Lazily unmount every mount point below `root`, deepest first (before deleting it)."""
    prefix = str(root.resolve()).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) > 1:
            point = fields[1].encode().decode("unicode_escape")
            if point.startswith(prefix):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return points
