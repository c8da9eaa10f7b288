"""Local scale to zero: which functions `idle_functions` picks at a given time."""

from __future__ import annotations

from typing import Any

from kubefaas.api import Function, parse_function
from kubefaas_gateway.backends.base import Acquired, Instance
from kubefaas_gateway.idle import IdleReaper, idle_functions
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.tracker import Tracker


def function(name: str, **scaling: Any) -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(e, c): return 1"}},
                "scaling": {"scaleToZeroAfterSeconds": 10, **scaling},
            },
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class StubBackend:
    """Instances per function key; records scale calls."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[Instance]] = {}
        self.scaled: list[tuple[str, int]] = []

    def add(self, fn: Function, *, ready_at: float | None) -> Instance:
        instance = Instance(
            id=f"{fn.name}-{len(self.by_key.get(fn.key, []))}",
            function_key=fn.key,
            host="127.0.0.1",
            port=1,
            ready=ready_at is not None,
            ready_at=ready_at,
        )
        self.by_key.setdefault(fn.key, []).append(instance)
        return instance

    async def start(self, *, tracker: Tracker) -> None: ...
    async def stop(self) -> None: ...

    async def acquire(self, fn: Function, deadline: float) -> Acquired:
        raise NotImplementedError

    def evict(self, instance: Instance) -> None: ...

    def instances(self, fn: Function) -> list[Instance]:
        return list(self.by_key.get(fn.key, []))

    def ready_count(self, fn: Function) -> int:
        return sum(1 for i in self.instances(fn) if i.ready)

    async def scale(self, fn: Function, replicas: int) -> None:
        self.scaled.append((fn.key, replicas))
        if replicas == 0:
            self.by_key.pop(fn.key, None)


async def served_once(tracker: Tracker, clock: Clock, fn: Function, at: float) -> None:
    clock.now = at
    async with tracker.track(fn.key, "x"):
        pass


async def test_a_function_idle_for_its_period_is_picked_and_not_before() -> None:
    clock, backend = Clock(), StubBackend()
    tracker = Tracker(clock=clock)
    fn = function("hello")
    backend.add(fn, ready_at=990.0)
    await served_once(tracker, clock, fn, at=1000.0)

    def pick(now: float) -> list[str]:
        chosen = idle_functions(functions=[fn], tracker=tracker, backend=backend, now=now)
        return [f.key for f in chosen]

    assert pick(1009.9) == []
    assert pick(1010.0) == ["default/hello"]


async def test_never_with_zero_period_or_min_scale_or_no_instances() -> None:
    clock, backend = Clock(), StubBackend()
    tracker = Tracker(clock=clock)
    never = function("never", scaleToZeroAfterSeconds=0)
    warm = function("warm", minScale=1)
    cold = function("cold")
    backend.add(never, ready_at=0.0)
    backend.add(warm, ready_at=0.0)
    chosen = idle_functions(
        functions=[never, warm, cold], tracker=tracker, backend=backend, now=10_000.0
    )
    assert chosen == []


async def test_in_flight_or_starting_work_keeps_the_function() -> None:
    clock, backend = Clock(), StubBackend()
    tracker = Tracker(clock=clock)
    busy, starting = function("busy"), function("starting")
    backend.add(busy, ready_at=0.0)
    backend.add(starting, ready_at=0.0)
    backend.add(starting, ready_at=None)  # the autoscaler just asked for another
    async with tracker.track(busy.key, "b"):
        chosen = idle_functions(
            functions=[busy, starting], tracker=tracker, backend=backend, now=10_000.0
        )
    assert chosen == []


async def test_a_fresh_instance_counts_as_activity() -> None:
    """An instance started after the last request gets the full idle period too."""
    clock, backend = Clock(), StubBackend()
    tracker = Tracker(clock=clock)
    fn = function("hello")
    await served_once(tracker, clock, fn, at=1000.0)
    backend.add(fn, ready_at=1005.0)
    assert idle_functions(functions=[fn], tracker=tracker, backend=backend, now=1012.0) == []
    assert idle_functions(functions=[fn], tracker=tracker, backend=backend, now=1015.0) == [fn]


async def test_the_reaper_scales_idle_functions_to_zero() -> None:
    clock, backend = Clock(), StubBackend()
    tracker = Tracker(clock=clock)
    idle, fresh = function("idle"), function("fresh")
    backend.add(idle, ready_at=900.0)
    backend.add(fresh, ready_at=999.0)
    reaper = IdleReaper(
        registry=FunctionRegistry([idle, fresh]), tracker=tracker, backend=backend, interval=1
    )
    await reaper.tick()
    assert backend.scaled == [("default/idle", 0)]
