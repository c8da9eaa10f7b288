"""Local mode's autoscaler and the gateway's scaling signals, with a fake backend and an
explicit clock: what `backend.scale` is asked for as load comes and goes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kubefaas.api import Function, parse_function
from kubefaas.scaling import Reason
from kubefaas_gateway.backends.base import Acquired, Instance
from kubefaas_gateway.local_autoscaler import LocalAutoscaler
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.signals import ScalingSignals, read_signals
from kubefaas_gateway.tracker import Tracker


def function(**scaling: Any) -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "api"},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(e, c):\n    return e\n"}},
                "scaling": {"targetConcurrency": 1, "maxScale": 20, **scaling},
            },
        }
    )


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeBackend:
    """Instances appear ready as soon as `scale` asks for them."""

    ready: dict[str, int] = field(default_factory=dict)
    calls: list[int] = field(default_factory=list)

    async def start(self, *, tracker: Tracker) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def acquire(self, fn: Function, deadline: float) -> Acquired:
        raise NotImplementedError

    def evict(self, instance: Instance) -> None:
        pass

    def instances(self, fn: Function) -> list[Instance]:
        return [
            Instance(id=f"i{n}", function_key=fn.key, host="127.0.0.1", port=1, ready=True)
            for n in range(self.ready.get(fn.key, 0))
        ]

    def ready_count(self, fn: Function) -> int:
        return self.ready.get(fn.key, 0)

    async def scale(self, fn: Function, replicas: int) -> None:
        self.calls.append(replicas)
        self.ready[fn.key] = replicas


@dataclass
class World:
    fn: Function
    clock: Clock = field(default_factory=Clock)
    backend: FakeBackend = field(default_factory=FakeBackend)
    signals: ScalingSignals = field(default_factory=ScalingSignals)
    tracker: Tracker = field(init=False)
    autoscaler: LocalAutoscaler = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = Tracker(clock=self.clock)
        self.autoscaler = LocalAutoscaler(
            functions=lambda: [self.fn],
            tracker=self.tracker,
            backend=self.backend,
            signals=self.signals,
        )

    async def ticks(self, seconds: float) -> None:
        """Run the autoscaler every 2 s of simulated time and let its scale tasks finish."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now += 2.0
            await self.autoscaler.tick()
            await settle()


async def settle() -> None:
    """Let every ready task run up to its next real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def hold_in_flight(tracker: Tracker, key: str, count: int, release: asyncio.Event) -> None:
    async def one(n: int) -> None:
        async with tracker.track(key, f"i{n}"):
            await release.wait()

    await asyncio.gather(*(one(n) for n in range(count)))


async def test_tracker_averages_are_time_weighted_over_both_windows() -> None:
    world = World(function())
    key = world.fn.key
    release = asyncio.Event()
    load = asyncio.create_task(hold_in_flight(world.tracker, key, 4, release))
    await settle()
    world.clock.now += 30
    assert world.tracker.averages(key) == (4.0, 4.0)
    release.set()
    await load
    world.clock.now += 6
    stable, panic = world.tracker.averages(key)
    assert panic == 0.0
    assert abs(stable - 4 * 30 / 36) < 1e-9


async def test_load_scales_up_then_idle_scales_to_zero_after_the_window() -> None:
    world = World(function(scaleToZeroAfterSeconds=10))
    key = world.fn.key
    release = asyncio.Event()
    load = asyncio.create_task(hold_in_flight(world.tracker, key, 8, release))
    await settle()
    await world.ticks(10)
    assert world.backend.ready[key] == 8
    # Eight callers arriving at zero wait on the activation: no panic (kubefaas/scaling.py).
    assert not world.autoscaler.decisions[key].in_panic

    release.set()
    await load
    await world.ticks(8)
    assert world.backend.ready[key] >= 1  # within the idle window
    await world.ticks(12)
    assert world.backend.ready[key] == 0
    # Down by halves, never straight from 8 to 0.
    downs = world.backend.calls[world.backend.calls.index(8) :]
    assert downs == [8, 4, 2, 1, 0]
    assert world.autoscaler.decisions[key].reason in {Reason.SCALE_TO_ZERO, Reason.IDLE}


async def test_queued_async_events_keep_an_instance() -> None:
    world = World(function(scaleToZeroAfterSeconds=10))
    key = world.fn.key
    world.backend.ready[key] = 1
    world.signals.publish_queue_depths({key: 3})  # as the async delivery does
    await world.ticks(60)
    assert world.backend.ready[key] == 1
    assert world.autoscaler.decisions[key].reason is Reason.HELD_BY_QUEUED
    world.signals.publish_queue_depths({})
    await world.ticks(20)
    assert world.backend.ready[key] == 0


async def test_a_request_arriving_during_a_scale_to_zero_keeps_the_instance() -> None:
    world = World(function(scaleToZeroAfterSeconds=10))
    key = world.fn.key
    world.backend.ready[key] = 1
    world.clock.now += 100
    await world.autoscaler.tick()  # decides 0 and schedules the change ...
    # ... but a caller arrives before the change runs.
    async with world.tracker.hold(key):
        await settle()
    assert world.backend.ready[key] == 1


async def test_signals_and_gauges_report_the_same_figures() -> None:
    world = World(function())
    key = world.fn.key
    release = asyncio.Event()
    load = asyncio.create_task(hold_in_flight(world.tracker, key, 2, release))
    await settle()
    await world.ticks(6)
    metrics = Metrics(
        functions=lambda: [world.fn],
        tracker=world.tracker,
        backend=world.backend,
        signals=world.signals,  # the board the autoscaler publishes on
    )
    metrics.record_throttled(world.fn)
    metrics.record_throttled(world.fn)
    signals = read_signals(world.tracker, key, queued=0, now=world.clock.now)
    samples = {
        (s.name, s.labels.get("window")): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.labels.get("function") == "api"
    }
    assert signals.in_flight == 2
    assert signals.idle_seconds == 0.0
    assert samples[("kubefaas_concurrency_average", "stable")] == signals.stable_concurrency
    assert samples[("kubefaas_concurrency_average", "panic")] == 2.0
    assert samples[("kubefaas_desired_replicas", None)] == 2
    assert samples[("kubefaas_throttled_total", None)] == 2
    release.set()
    await load
