"""A real `redis-server` for the tests, started on a free loopback port.

The Redis backend is tested against the real server, never a fake: Lua scripts, stream
consumer groups and XAUTOCLAIM are exactly what a fake would get wrong. When the binary is
missing the fixture fails (it never skips), naming the package to install; `make test`
installs it on a fresh machine.
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
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
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


def start_redis(directory: Path) -> RedisServer:
    """Start redis-server with AOF on (everysec) in `directory`; fail with its log if not."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed, and the Redis queue backend is tested against a "
            "real server: `apt-get install -y redis-server` (make test installs it)",
            pytrace=False,
        )
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(5):  # the free port can be taken between probing and binding
        port = free_port()
        log = directory / f"redis-{port}.log"
        process = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(directory),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--daemonize", "no",
                "--logfile", str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        server = RedisServer(f"redis://127.0.0.1:{port}/0", port, process, log)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if server.ping():
                return server
            time.sleep(0.05)
        server.stop()
        last_error = log.read_text() if log.exists() else "(no log)"
    pytest.fail(f"redis-server did not start; its log:\n{last_error}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests isolate themselves by key prefix."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
