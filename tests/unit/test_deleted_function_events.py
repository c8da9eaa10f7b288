"""Events of a deleted function over the real SQLite queue and a real redis-server
(docs/security.md, "Failure modes").

What a user would notice: events queued for a function that is then deleted wait for it
(they run if it comes back) but not forever: past the longest event age any function may
set they are dead-lettered with reason `function_deleted`, and the dead-letter admin
operations list and purge them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from kubefaas import limits
from kubefaas.api import Function, parse_function
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.invoker import Invoker
from kubefaas_gateway.queue import AttemptError, InvocationQueue, Lease, NewInvocation
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics
from kubefaas_gateway.queue.redis import RedisQueue
from kubefaas_gateway.queue.sqlite import SQLiteQueue
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.signals import ScalingSignals
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

WAIT = 5.0
MAX_AGE = float(limits.ASYNC_MAX_EVENT_AGE_MAX)


def function(name: str) -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(e, c):\n    return e\n"}},
            },
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class NeverInvoked:
    async def invoke(self, fn: Function, request: Any) -> Any:
        raise AssertionError("no event of a deleted function may be attempted")


@dataclass
class Gateway:
    delivery: AsyncDelivery
    queue: InvocationQueue
    registry: FunctionRegistry
    clock: Clock
    metrics: CollectorRegistry


def _queue(request: pytest.FixtureRequest, tmp_path: Path) -> InvocationQueue:
    if request.param == "sqlite":
        return SQLiteQueue.in_state_dir(tmp_path)
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisQueue(server.url, prefix=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(state_dir=tmp_path, async_stats_interval_seconds=0.05)
    registry = FunctionRegistry([function("kept")])
    queue = _queue(request, tmp_path)
    clock = Clock()
    metrics = CollectorRegistry()
    delivery = AsyncDelivery(
        settings=settings,
        registry=registry,
        metrics=AsyncMetrics(metrics),
        queue=queue,
        signals=ScalingSignals(),
        clock=clock,
    )
    invoker: Any = NeverInvoked()
    async with aiohttp.ClientSession() as session:
        await delivery.start(invoker=_as_invoker(invoker), session=session)
        try:
            yield Gateway(delivery, queue, registry, clock, metrics)
        finally:
            await delivery.stop()


def _as_invoker(fake: Any) -> Invoker:
    invoker: Invoker = fake
    return invoker


async def _status(gateway: Gateway, invocation_id: str) -> str | None:
    record = await gateway.queue.get(invocation_id)
    return None if record is None else record.status


async def _until_status(gateway: Gateway, invocation_id: str, status: str) -> None:
    deadline = time.monotonic() + WAIT
    while await _status(gateway, invocation_id) != status:
        assert time.monotonic() < deadline, f"{invocation_id} never became {status}"
        await asyncio.sleep(0.02)


async def test_events_of_a_deleted_function_are_dead_lettered_when_their_age_runs_out(
    gateway: Gateway,
) -> None:
    gone = function("gone")
    # Stored while the function existed; then it is deleted before a dispatcher saw them.
    old = await gateway.delivery.submit(gone, b'{"n": 1}')
    gateway.clock.now += 60
    young = await gateway.delivery.submit(gone, b'{"n": 2}')
    assert "default/gone" not in gateway.registry

    # Younger than any function's maximum age: they wait (they would run if it came back).
    gateway.clock.now += MAX_AGE - 120
    await asyncio.sleep(0.3)  # several stats refreshes
    assert await _status(gateway, old) == "queued"
    assert await _status(gateway, young) == "queued"

    # The first one's age runs out, the second's not yet.
    gateway.clock.now += 90
    await _until_status(gateway, old, "dead")
    assert await _status(gateway, young) == "queued"
    record = await gateway.queue.get(old)
    assert record is not None
    data = record.to_json()
    assert data["deadLetter"]["reason"] == "function_deleted", data
    assert "not deployed" in data["deadLetter"]["message"]
    assert data["attempts"][-1]["status"] == "expired"
    assert data["attempts"][-1]["error"]["type"] == "FunctionDeleted"
    value = gateway.metrics.get_sample_value(
        "kubefaas_async_dead_letters_total",
        {"namespace": "default", "function": "gone", "reason": "function_deleted"},
    )
    assert value == 1.0

    # Listed and purged like any dead letter (what the admin routes call).
    page = await gateway.queue.list_dead_letters(function="default/gone", limit=10, cursor=None)
    assert [r.id for r in page.items] == [old]
    gateway.clock.now += 60
    await _until_status(gateway, young, "dead")
    purged = await gateway.queue.purge_all(now=gateway.clock.now, function="default/gone")
    assert purged == 2
    page = await gateway.queue.list_dead_letters(function="default/gone", limit=10, cursor=None)
    assert page.items == ()


async def test_aged_events_of_a_deployed_function_keep_their_own_reason(
    gateway: Gateway,
) -> None:
    kept = gateway.registry.get("default/kept")
    assert kept is not None
    invocation_id = "evt-kept"
    stored = NewInvocation(id=invocation_id, function=kept.key, body=b"{}", headers={})
    await gateway.queue.enqueue(stored, now=gateway.clock.now - MAX_AGE - 10)
    gateway.delivery.wake(kept.key)
    await _until_status(gateway, invocation_id, "dead")
    record = await gateway.queue.get(invocation_id)
    assert record is not None
    assert record.to_json()["deadLetter"]["reason"] == "event_age_exceeded"


async def test_a_retry_waiting_and_a_lease_that_ran_out_are_dead_lettered_a_live_one_kept(
    gateway: Gateway,
) -> None:
    """The queue operation itself, on both backends: what no dispatcher will finish goes
    to the dead letters with its history; a lease still held is left to its worker."""
    queue, now = gateway.queue, gateway.clock.now
    fn = "default/gone"
    error = AttemptError(kind="function_error", type="RuntimeError", message="boom")

    async def stored(name: str, at: float) -> str:
        invocation_id = f"evt-{name}-{uuid.uuid4().hex[:6]}"
        await queue.enqueue(NewInvocation(id=invocation_id, function=fn, body=b"{}"), now=at)
        return invocation_id

    async def leased(invocation_id: str, at: float, seconds: float) -> Lease:
        taken = await queue.lease(fn, now=at, lease_seconds=seconds)
        assert taken is not None
        assert taken.id == invocation_id
        return taken

    lost = await stored("lost", now - 100)
    await leased(lost, now - 100, 10)  # its worker died: the lease ran out at now - 90
    retrying = await stored("retrying", now - 99)
    failed = await leased(retrying, now - 99, 10)
    assert await queue.retry(failed, now=now - 98, error=error, at=now + 3600)
    live = await stored("live", now - 97)
    holding = await leased(live, now - 97, 1000)
    waiting = await stored("waiting", now - 96)

    message = "function default/gone is not deployed"
    moved = await queue.dead_letter_aged(
        fn,
        started_before=now - 50,
        now=now,
        error=AttemptError(kind="expired", type="FunctionDeleted", message=message),
        reason="function_deleted",
        message=message,
    )
    assert sorted(r.id for r in moved) == sorted([lost, retrying, waiting])
    for record in moved:
        data = record.to_json()
        assert data["status"] == "dead"
        assert data["deadLetter"]["reason"] == "function_deleted"
        assert data["attempts"][-1]["status"] == "expired"
        assert data["attempts"][-1]["error"]["type"] == "FunctionDeleted"
    statuses = {r.id: [a.status for a in r.attempts] for r in moved}
    assert statuses == {
        lost: ["abandoned", "expired"],
        retrying: ["failed", "expired"],
        waiting: ["expired"],
    }
    kept = await queue.get(live)
    assert kept is not None
    assert kept.status == "running"
    # The live lease still finishes; nothing dead-lettered is ever leased again.
    assert await queue.complete(holding, now=now + 1, result=1) is not None
    assert await queue.lease(fn, now=now + 7200, lease_seconds=10) is None
    assert [s for s in await queue.stats(now=now + 7200) if s.function == fn] == []
    page = await queue.list_dead_letters(function=fn, limit=10)
    assert {r.id for r in page.items} == {lost, retrying, waiting}
    assert await queue.purge_all(now=now + 2, function=fn) == 3
    assert (await queue.list_dead_letters(function=fn, limit=10)).items == ()
