"""Local mode scales a function out under concurrent load and back to zero when idle,
with the decider running inside the real gateway and real runtime processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.loopback import wait_until

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

# Sleeps like the `slow` example, and says which instance (process) served the call.
SLOW_PID_SOURCE = """\
import asyncio
import os

async def handler(event, context):
    await asyncio.sleep(float(event.get("seconds", 1)))
    return {"pid": os.getpid()}
"""
IDLE_SECONDS = 10
CONCURRENT_CALLS = 8
CALL_SECONDS = 2.5
ROUNDS = 3


def function_stats(gateway: RunningGateway, key: str) -> dict[str, Any]:
    stats: dict[str, Any] = gateway.client.get("/internal/stats").json()["functions"][key]
    return stats


async def sample_until(
    gateway: RunningGateway, key: str, done: asyncio.Event, into: list[dict[str, Any]]
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as client:
        while not done.is_set():
            response = await client.get("/internal/stats")
            into.append(response.json()["functions"][key])
            await asyncio.sleep(0.25)


async def test_concurrent_slow_calls_scale_out_then_back_to_zero_after_idle(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function(
        "busy",
        SLOW_PID_SOURCE,
        timeoutSeconds=30,
        scaling={
            "targetConcurrency": 1,
            "maxScale": 10,
            "scaleToZeroAfterSeconds": IDLE_SECONDS,
        },
    )
    gateway = start_gateway(manifest_dir.path)
    key = "default/busy"
    samples: list[dict[str, Any]] = []
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_until(gateway, key, done, samples))
    pids_by_round: list[set[int]] = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60, trust_env=False) as client:
        for _ in range(ROUNDS):
            answers = await asyncio.gather(
                *(
                    client.post("/function/busy", json={"seconds": CALL_SECONDS})
                    for _ in range(CONCURRENT_CALLS)
                )
            )
            assert [a.status_code for a in answers] == [200] * CONCURRENT_CALLS
            pids_by_round.append({a.json()["pid"] for a in answers})
    last_call = time.monotonic()
    done.set()
    await sampler

    # 8 callers at targetConcurrency 1: the autoscaler adds instances (panic on the burst)
    # and later rounds are spread over them instead of queueing on the first one.
    peak = max(s["readyInstances"] for s in samples)
    assert peak >= 6, [s["readyInstances"] for s in samples]
    assert len(pids_by_round[-1]) >= 6
    assert any(s.get("panic") for s in samples)
    assert max(s["desiredReplicas"] for s in samples if "desiredReplicas" in s) >= 6

    # Idle: every instance stays for the idle window, then all go (halving per tick).
    assert function_stats(gateway, key)["readyInstances"] >= 1
    assert wait_until(
        lambda: function_stats(gateway, key)["replicas"] == 0, IDLE_SECONDS + 30, interval=0.25
    )
    assert time.monotonic() - last_call >= IDLE_SECONDS - 1
    assert wait_until(lambda: gateway.instance_pids() == [], 10, interval=0.25)
    final = function_stats(gateway, key)
    assert final["desiredReplicas"] == 0
    assert final["inFlight"] == 0
    assert final["pending"] == 0
    assert gateway.sample("kubefaas_instances", function="busy", state="ready") == 0


def test_stats_and_metrics_report_the_load_while_calls_run(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("busy", SLOW_PID_SOURCE, timeoutSeconds=30)
    gateway = start_gateway(manifest_dir.path)
    assert gateway.invoke("busy", {"seconds": 0}).status_code == 200  # warm

    async def three_calls_and_a_look() -> tuple[dict[str, Any], str]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, trust_env=False) as c:
            calls = [
                asyncio.create_task(c.post("/function/busy", json={"seconds": 2})) for _ in range(3)
            ]
            await asyncio.sleep(1.0)
            stats = (await c.get("/internal/stats")).json()
            metrics = (await c.get("/metrics")).text
            await asyncio.gather(*calls)
            return stats, metrics

    stats, metrics = asyncio.run(three_calls_and_a_look())
    entry = stats["functions"]["default/busy"]
    assert entry["inFlight"] == 3
    assert entry["idleSeconds"] == 0
    assert entry["panicConcurrency"] > 1
    assert stats["gateway"]
    panic_gauge = [
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "kubefaas_concurrency_average"
        and sample.labels == {"namespace": "default", "function": "busy", "window": "panic"}
    ]
    assert panic_gauge == [pytest.approx(entry["panicConcurrency"], rel=0.2)]
    after = function_stats(gateway, "default/busy")
    assert after["inFlight"] == 0
    assert after["idleSeconds"] >= 0


def test_an_open_provisioned_window_starts_instances_before_any_call(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    # `* * * * *` is open every minute, so the window is open for the whole test.
    manifest_dir.add_function(
        "warm",
        SLOW_PID_SOURCE,
        scaling={"provisioned": [{"schedule": "* * * * *", "minScale": 2}]},
    )
    manifest_dir.add_function("cold", SLOW_PID_SOURCE)
    gateway = start_gateway(manifest_dir.path)
    assert wait_until(
        lambda: function_stats(gateway, "default/warm")["readyInstances"] == 2, timeout=20
    )
    entry = function_stats(gateway, "default/warm")
    assert entry["reason"] == "provisioned"
    # The first call finds a ready instance: no cold start.
    response = gateway.invoke("warm", {"seconds": 0})
    assert response.status_code == 200
    assert response.headers["x-cold-start"] == "false"
    # A function without a window stays at zero.
    assert function_stats(gateway, "default/cold")["replicas"] == 0
