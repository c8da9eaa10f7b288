"""A real server process the tests start on a free loopback port (redis-server,
nats-server): launch, wait until it answers, stop; retried on a port taken meanwhile."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.loopback import free_port

START_TIMEOUT_SECONDS = 10.0


@dataclass
class Daemon:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def answers(self) -> bool:
        """True once the server takes requests (each kind says how it greets)."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


D = TypeVar("D", bound=Daemon)


def start_daemon(name: str, directory: Path, launch: Callable[[int, Path], D]) -> D:
    """`launch(port, log)` on a free port until the server answers; fail with its log."""
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(5):  # the free port can be taken between probing and binding
        port = free_port()
        log = directory / f"{name}-{port}.log"
        server = launch(port, log)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline and server.process.poll() is None:
            if server.answers():
                return server
            time.sleep(0.05)
        server.stop()
        last_error = log.read_text() if log.exists() else "(no log)"
    pytest.fail(f"{name} did not start; its log:\n{last_error}", pytrace=False)
