"""A real `nats-server -js` for the tests, started on a free loopback port.

Queue triggers are tested against the real JetStream server (durable consumers, acks,
redelivery after ack_wait), never a fake. When the binary is missing the fixture fails (it
never skips), naming the package to install; `make test` installs it (SYSTEM_PACKAGES).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.daemon import Daemon, start_daemon


class NatsServer(Daemon):
    def answers(self) -> bool:
        try:
            host = urlsplit(self.url).hostname or "127.0.0.1"
            with socket.create_connection((host, self.port), timeout=0.5) as sock:
                return sock.recv(4096).startswith(b"INFO")
        except OSError:
            return False


def start_nats(directory: Path, *, host: str = "127.0.0.1") -> NatsServer:
    """Start nats-server with JetStream storing in `directory`, listening on `host` (the
    loopback address, or for e2e the local cluster's pod bridge); fail with its log if not."""
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        pytest.fail(
            "nats-server is not installed, and NATS queue triggers are tested against a real "
            "server: `apt-get install -y nats-server` (make test installs it)",
            pytrace=False,
        )

    def launch(port: int, log: Path) -> NatsServer:
        process = subprocess.Popen(
            [binary, "-js", "-a", host, "-p", str(port), "-sd", str(directory / "js"),
             "-l", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return NatsServer(f"nats://{host}:{port}", port, process, log)

    return start_daemon("nats-server", directory, launch)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the session; tests isolate themselves by stream name."""
    server = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()
