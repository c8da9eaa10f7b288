"""The async delivery's dispatchers over the real SQLite queue, with a scripted invoker.

What a user would notice: a gateway serving many functions with nothing queued does not
keep reading its queue for each of them (the cost of idling must not grow with the number
of functions), yet an event enqueued through it starts at once, and a retry it scheduled
runs when it is due, not at the next slow poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from kubefaas.api import Function, parse_function
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.errors import Throttled
from kubefaas_gateway.invoker import InvocationRequest, InvocationResponse, Invoker
from kubefaas_gateway.queue import Lease
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics
from kubefaas_gateway.queue.sqlite import SQLiteQueue
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.signals import ScalingSignals

FUNCTIONS = 200
WAIT = 5.0


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


class CountingQueue(SQLiteQueue):
    """The real SQLite queue, counting the reads dispatchers make to find work."""

    leases = 0

    async def lease(self, function: str, *, now: float, lease_seconds: float) -> Lease | None:
        self.leases += 1
        return await super().lease(function, now=now, lease_seconds=lease_seconds)


@dataclass
class ScriptedInvoker:
    """Answers each attempt with the next scripted outcome (default: success)."""

    script: list[Exception] = field(default_factory=list)
    calls: list[tuple[float, InvocationRequest]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def invoke(self, fn: Function, request: InvocationRequest) -> InvocationResponse:
        self.calls.append((time.monotonic(), request))
        self.called.set()
        if self.script:
            raise self.script.pop(0)
        return InvocationResponse(
            status=200,
            headers=[(b"content-type", b"application/json")],
            body=b'{"ok": true}',
            cold_start=False,
            duration=0.001,
            instance_id="i0",
        )


@dataclass
class Gateway:
    delivery: AsyncDelivery
    queue: CountingQueue
    invoker: ScriptedInvoker
    registry: FunctionRegistry


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    # The default poll interval: what an idle production gateway does.
    settings = Settings(
        state_dir=tmp_path, async_backoff_initial_seconds=0.2, async_retry_jitter=0.0
    )
    registry = FunctionRegistry([function(f"fn-{n}") for n in range(FUNCTIONS)])
    queue = CountingQueue.in_state_dir(tmp_path)
    assert isinstance(queue, CountingQueue)
    delivery = AsyncDelivery(
        settings=settings,
        registry=registry,
        metrics=AsyncMetrics(CollectorRegistry()),
        queue=queue,
        signals=ScalingSignals(),
    )
    invoker = ScriptedInvoker()
    async with aiohttp.ClientSession() as session:
        await delivery.start(invoker=_as_invoker(invoker), session=session)
        try:
            yield Gateway(delivery, queue, invoker, registry)
        finally:
            await delivery.stop()


def _as_invoker(fake: ScriptedInvoker) -> Invoker:
    invoker: Any = fake
    return invoker  # the delivery calls `invoke` only


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_an_idle_gateway_with_many_functions_rarely_reads_its_queue(
    gateway: Gateway,
) -> None:
    # Each dispatcher looks once when it starts; after that an idle one sleeps.
    await _until(lambda: gateway.queue.leases >= FUNCTIONS, "every dispatcher's first look")
    await asyncio.sleep(0.2)
    before = gateway.queue.leases
    await asyncio.sleep(1.5)
    # Polling every 0.5 s per function would be ~600 reads here.
    assert gateway.queue.leases - before < FUNCTIONS // 20


async def test_an_event_enqueued_at_an_idle_gateway_starts_at_once(gateway: Gateway) -> None:
    await _until(lambda: gateway.queue.leases >= FUNCTIONS, "every dispatcher's first look")
    await asyncio.sleep(0.2)
    fn = gateway.registry.get("default/fn-7")
    assert fn is not None
    submitted = time.monotonic()
    invocation_id = await gateway.delivery.submit(fn, b'{"n": 1}')
    await asyncio.wait_for(gateway.invoker.called.wait(), WAIT)
    started, request = gateway.invoker.calls[0]
    assert request.invocation_id == invocation_id
    assert request.invocation_type == "async"
    # Far sooner than the idle poll interval: the enqueue woke the dispatcher.
    poll = gateway.delivery.settings.async_poll_interval_seconds
    assert started - submitted < poll / 2
    await _until_status(gateway, invocation_id, "succeeded")


async def test_a_retry_runs_when_due_not_at_the_next_poll(gateway: Gateway) -> None:
    gateway.invoker.script.append(Throttled("over reserved concurrency"))
    fn = gateway.registry.get("default/fn-3")
    assert fn is not None
    invocation_id = await gateway.delivery.submit(fn, b"{}")
    await _until(lambda: len(gateway.invoker.calls) >= 2, "the retry")
    (first, _), (second, retried) = gateway.invoker.calls[:2]
    assert retried.invocation_id == invocation_id
    assert retried.attempt == 2
    poll = gateway.delivery.settings.async_poll_interval_seconds
    assert second - first < poll / 2  # due after 0.2 s, the poll is seconds away
    await _until_status(gateway, invocation_id, "succeeded")


async def _until_status(gateway: Gateway, invocation_id: str, status: str) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        record = await gateway.queue.get(invocation_id)
        if record is not None and record.status == status:
            return
        assert time.monotonic() < deadline, f"{invocation_id} never became {status}"
        await asyncio.sleep(0.01)
