"""The real runtime process (``python -m kubefaas_runtime``) over loopback HTTP.

Started exactly as the local backend and the pod start it: by environment variables,
on a free port, with a private code folder and a private TMPDIR.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.loopback import free_port

pytestmark = pytest.mark.local

RUNTIME_SOURCE = Path(__file__).resolve().parents[2] / "runtime"


@dataclass
class RuntimeProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    scratch: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        # A fresh connection per call: a drain closes kept-alive ones.
        with httpx.Client(trust_env=False, timeout=10) as client:
            return client.get(self.url + path, **kwargs)  # type: ignore[arg-type]

    def post(self, payload: object, **kwargs: object) -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=10) as client:
            return client.post(self.url + "/", json=payload, **kwargs)  # type: ignore[arg-type]

    def accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[Callable[..., RuntimeProcess]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(source: str, *, wait_ready: bool = True, **env: str) -> RuntimeProcess:
        code = tmp_path / "code"
        code.mkdir(exist_ok=True)
        (code / "main.py").write_text(textwrap.dedent(source))
        scratch = tmp_path / "scratch"
        port = free_port()
        python_path = [str(RUNTIME_SOURCE), os.environ.get("PYTHONPATH", "")]
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in python_path if p),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "KUBEFAAS_CODE_DIR": str(code),
            "KUBEFAAS_FUNCTION_NAME": "proc-test",
            "TMPDIR": str(scratch),
            "KUBEFAAS_DRAIN_GRACE_SECONDS": "0.3",
            **env,
        }
        log_path = tmp_path / f"runtime-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "kubefaas_runtime"],
                env=environment,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        started.append(process)
        runtime = RuntimeProcess(process, port, log_path, scratch)
        if wait_ready:
            deadline = time.monotonic() + 15
            while True:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "runtime not ready in 15 s"
                try:
                    if runtime.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return runtime

    yield start

    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_serves_invocations_and_keeps_module_state_and_tmp_between_calls(
    start_runtime: Callable[..., RuntimeProcess],
) -> None:
    runtime = start_runtime(
        """
        import os, tempfile
        calls = 0

        def handler(event, context):
            global calls
            calls += 1
            path = os.path.join(context.tmp_dir, "seen.txt")
            with open(path, "a") as notes:
                notes.write(event["note"] + "\\n")
            with open(path) as notes:
                seen = notes.read().split()
            return {"calls": calls, "seen": seen, "tempdir": tempfile.gettempdir(),
                    "function": context.function_name}
        """
    )
    first = runtime.post({"note": "a"}, headers={"X-Invocation-Id": "one"})
    second = runtime.post({"note": "b"})

    assert first.status_code == second.status_code == 200
    assert first.headers["x-invocation-id"] == "one"
    assert float(first.headers["x-duration-ms"]) >= 0
    assert first.json()["calls"] == 1
    assert second.json() == {
        "calls": 2,
        "seen": ["a", "b"],
        "tempdir": str(runtime.scratch),
        "function": "proc-test",
    }
    assert (runtime.scratch / "seen.txt").read_text() == "a\nb\n"

    [ready] = [line for line in runtime.log_lines() if line.get("msg") == "ready"]
    assert isinstance(ready["initMs"], float)


def test_sigterm_drains_the_in_flight_call_then_exits_0(
    start_runtime: Callable[..., RuntimeProcess],
) -> None:
    runtime = start_runtime(
        """
        import os, time

        def handler(event, context):
            open(os.path.join(context.tmp_dir, "entered"), "w").close()
            time.sleep(1.5)
            return "finished"
        """
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(runtime.post, {})
        deadline = time.monotonic() + 5
        while not (runtime.scratch / "entered").exists():
            assert time.monotonic() < deadline, "the handler never started"
            time.sleep(0.01)

        runtime.process.send_signal(signal.SIGTERM)

        # Readiness fails at once, while the socket still accepts during the grace.
        health = runtime.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "draining"}

        # Then it stops accepting new connections, before the in-flight call is done.
        deadline = time.monotonic() + 5
        while runtime.accepts_connections():
            assert time.monotonic() < deadline, "still accepting connections"
            time.sleep(0.02)
        assert not in_flight.done()

        response = in_flight.result(timeout=10)
    assert response.status_code == 200
    assert response.json() == "finished"
    assert runtime.process.wait(timeout=10) == 0

    messages = {str(line.get("msg")): line for line in runtime.log_lines()}
    assert messages["draining"]["inflight"] == 1
    assert messages["drained"]["inflightLeft"] == 0


def test_sigint_drains_too(start_runtime: Callable[..., RuntimeProcess]) -> None:
    runtime = start_runtime("def handler(event, context):\n    return 1\n")
    runtime.process.send_signal(signal.SIGINT)
    assert runtime.get("/healthz").status_code == 503
    assert runtime.process.wait(timeout=10) == 0


def test_a_handler_stuck_past_its_deadline_does_not_hold_up_the_exit(
    start_runtime: Callable[..., RuntimeProcess],
) -> None:
    runtime = start_runtime(
        """
        import time

        def handler(event, context):
            time.sleep(60)
        """,
        KUBEFAAS_TIMEOUT_SECONDS="0.5",
    )
    response = runtime.post({})
    assert response.status_code == 504
    assert response.headers["x-function-error"] == "Timeout"

    started = time.monotonic()
    runtime.process.send_signal(signal.SIGTERM)
    assert runtime.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    assert any(line.get("abandoned") == 1 for line in runtime.log_lines())


def test_code_that_fails_to_import_is_reported_by_a_running_instance(
    start_runtime: Callable[..., RuntimeProcess],
) -> None:
    runtime = start_runtime("def handler(event, context)\n    return 1\n")
    health = runtime.get("/healthz")
    assert health.json()["status"] == "init-failed"

    response = runtime.post({})
    assert response.status_code == 500
    assert response.headers["x-function-error"] == "Unhandled"
    assert response.json()["errorType"] == "Runtime.ImportModuleError"
    assert "main.py" in "".join(response.json()["stackTrace"])
    assert any(line.get("level") == "ERROR" for line in runtime.log_lines())


def test_a_bad_setting_exits_2_naming_the_variable(
    start_runtime: Callable[..., RuntimeProcess],
) -> None:
    runtime = start_runtime(
        "def handler(event, context):\n    return 1\n",
        wait_ready=False,
        KUBEFAAS_TIMEOUT_SECONDS="soon",
    )
    assert runtime.process.wait(timeout=15) == 2
    assert "KUBEFAAS_TIMEOUT_SECONDS='soon'" in runtime.log_path.read_text()
