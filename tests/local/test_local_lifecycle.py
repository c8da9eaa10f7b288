"""Instances come and go: cold start then warm reuse, scale to zero after idle, crashes
that take down an instance but never the gateway, and no instance outliving the gateway."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.loopback import wait_until

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway


pytestmark = pytest.mark.local

PID_SOURCE = """\
import os

def handler(event, context):
    if isinstance(event, dict) and event.get("exit"):
        os._exit(1)
    return {"pid": os.getpid()}
"""


def test_first_call_is_a_cold_start_then_the_instance_is_reused(
    examples_gateway: RunningGateway,
) -> None:
    first = examples_gateway.invoke("counter", {})
    second = examples_gateway.invoke("counter", {})
    assert first.headers["x-cold-start"] == "true"
    assert second.headers["x-cold-start"] == "false"
    assert first.json()["instance"] == second.json()["instance"]
    assert examples_gateway.sample("kubefaas_cold_starts_total", function="counter") == 1


def test_idle_function_scales_to_zero_and_the_next_call_starts_fresh(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_example("counter", spec={"scaling": {"scaleToZeroAfterSeconds": 10}})
    gateway = start_gateway(manifest_dir.path)
    before = gateway.invoke("counter", {}).json()
    assert gateway.invoke("counter", {}).json()["count"] == 2
    idle_since = time.monotonic()

    def scaled_to_zero() -> bool:
        return gateway.sample("kubefaas_instances", function="counter", state="ready") == 0

    assert wait_until(scaled_to_zero, 20)
    assert time.monotonic() - idle_since >= 9  # not before its idle period
    assert wait_until(lambda: gateway.instance_pids() == [], 5)

    after = gateway.invoke("counter", {})
    assert after.headers["x-cold-start"] == "true"
    assert after.json()["count"] == 1
    assert after.json()["instance"] != before["instance"]


def test_an_instance_that_exits_mid_call_is_502_and_the_next_call_works(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("exiter", PID_SOURCE)
    gateway = start_gateway(manifest_dir.path)
    first_pid = gateway.invoke("exiter", {}).json()["pid"]

    crashed = gateway.invoke("exiter", {"exit": True})
    assert crashed.status_code == 502
    assert crashed.json()["error"]["type"] == "FunctionFailed"
    assert gateway.client.get("/healthz").status_code == 200

    again = gateway.invoke("exiter", {})
    assert again.status_code == 200
    assert again.headers["x-cold-start"] == "true"
    assert again.json()["pid"] != first_pid
    assert wait_until(lambda: "exited with code 1" in gateway.stderr(), 5)


def test_instances_die_with_a_gateway_that_is_killed(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("pid", PID_SOURCE)
    manifest_dir.add_example("hello")
    gateway = start_gateway(manifest_dir.path)
    pid = gateway.invoke("pid", {}).json()["pid"]
    gateway.invoke("hello", {})
    assert len(gateway.instance_pids()) == 2

    gateway.kill()  # SIGKILL: no shutdown code runs in the gateway

    assert wait_until(lambda: not Path(f"/proc/{pid}").exists(), 5)
    assert wait_until(lambda: gateway.instance_pids() == [], 5)


def test_stopping_the_gateway_stops_instances_and_removes_their_scratch(
    examples_gateway: RunningGateway,
) -> None:
    examples_gateway.invoke("tmp-cache", {})
    examples_gateway.invoke("hello", {})
    scratch = examples_gateway.state_dir / "local" / "instances"
    # These two, and any the heartbeat example's schedule has started meanwhile.
    assert len(list(scratch.iterdir())) >= 2
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit says why.
    assert examples_gateway.terminate() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in examples_gateway.stderr()
    assert examples_gateway.instance_pids() == []
    assert list(scratch.iterdir()) == []


def test_each_instance_gets_its_own_scratch_as_tmpdir(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    source = "import tempfile\n\ndef handler(event, context):\n    return tempfile.gettempdir()\n"
    manifest_dir.add_function("where", source)
    gateway = start_gateway(manifest_dir.path)
    tmp = Path(gateway.invoke("where", {}).json())
    assert tmp.is_dir()
    assert tmp.parent == (gateway.state_dir / "local" / "instances").resolve()
    assert os.access(tmp, os.W_OK)
