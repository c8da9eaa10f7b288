"""The runtime process under deadlines a caller controls (docs/security.md): X-Deadline-Ms
never extends the function's timeout; a runtime whose every thread is held past its deadline
reports unhealthy, and does not run the calls it already answered 504."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.local.test_runtime_process import RuntimeProcess, start_runtime

__all__ = ["start_runtime"]  # the fixture, used by name below

pytestmark = pytest.mark.local


def test_a_far_deadline_header_does_not_extend_the_timeout(
    start_runtime: Callable[..., RuntimeProcess],
) -> None:
    runtime = start_runtime(
        "import time\n\ndef handler(event, context):\n    time.sleep(60)\n",
        KUBEFAAS_TIMEOUT_SECONDS="0.5",
    )
    far = str(int((time.time() + 3600) * 1000))
    response = runtime.post({}, headers={"X-Deadline-Ms": far})  # httpx gives up at 10 s
    assert response.status_code == 504
    assert response.headers["x-function-error"] == "Timeout"


def test_all_threads_held_past_deadline_is_unhealthy_and_answered_calls_never_run(
    start_runtime: Callable[..., RuntimeProcess], tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    runtime = start_runtime(
        f"""
import time

def handler(event, context):
    if event.get("hold"):
        time.sleep(event["hold"])
    else:
        open({str(marker)!r}, "w").close()
""",
        KUBEFAAS_TIMEOUT_SECONDS="0.5",
        KUBEFAAS_MAX_THREADS="1",
    )
    assert runtime.post({"hold": 4}).status_code == 504  # the one thread is now held
    health = runtime.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "saturated"
    assert runtime.post({}).status_code == 504  # waited for the thread past its deadline
    deadline = time.monotonic() + 15
    while runtime.get("/healthz").status_code != 200:
        assert time.monotonic() < deadline, "the runtime never recovered"
        time.sleep(0.1)
    time.sleep(0.3)  # time for a queued call to have run, were it run
    assert not marker.exists(), "a call already answered 504 was run"
    assert runtime.post({}).status_code == 200
    assert marker.exists()
