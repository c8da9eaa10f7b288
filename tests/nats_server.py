"""A real `nats-server -js` for the tests, started on a free loopback port.

Queue triggers are tested against the real JetStream server (durable consumers, acks,
redelivery after ack_wait), never a fake. When the binary is missing the fixture fails (it
never skips), naming the package to install; `make test` installs it (SYSTEM_PACKAGES).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.loopback import free_port

START_TIMEOUT_SECONDS = 10.0


@dataclass
class NatsServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                return sock.recv(4096).startswith(b"INFO")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nats(directory: Path) -> NatsServer:
    """Start nats-server with JetStream storing in `directory`; fail with its log if not."""
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        pytest.fail(
            "nats-server is not installed, and NATS queue triggers are tested against a real "
            "server: `apt-get install -y nats-server` (make test installs it)",
            pytrace=False,
        )
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(5):  # the free port can be taken between probing and binding
        port = free_port()
        log = directory / f"nats-{port}.log"
        process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(directory / "js"),
             "-l", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        server = NatsServer(f"nats://127.0.0.1:{port}", port, process, log)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if server.answers():
                return server
            time.sleep(0.05)
        server.stop()
        last_error = log.read_text() if log.exists() else "(no log)"
    pytest.fail(f"nats-server did not start; its log:\n{last_error}", pytrace=False)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the session; tests isolate themselves by stream name."""
    server = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()
