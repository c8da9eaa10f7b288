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
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.daemon import Daemon, start_daemon


class RedisServer(Daemon):
    def answers(self) -> bool:
        try:
            host = urlsplit(self.url).hostname or "127.0.0.1"
            with socket.create_connection((host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def start_redis(directory: Path, *, host: str = "127.0.0.1") -> RedisServer:
    """Start redis-server with AOF on (everysec) in `directory`, listening on `host` (the
    loopback address, or for e2e the local cluster's pod bridge); fail with its log if not."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed, and the Redis queue backend is tested against a "
            "real server: `apt-get install -y redis-server` (make test installs it)",
            pytrace=False,
        )

    def launch(port: int, log: Path) -> RedisServer:
        process = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", host,
                # No password: off loopback, protected mode would refuse every client.
                "--protected-mode", "yes" if host == "127.0.0.1" else "no",
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
        return RedisServer(f"redis://{host}:{port}/0", port, process, log)

    return start_daemon("redis-server", directory, launch)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests isolate themselves by key prefix."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
