"""The cluster autoscaler loop with fake I/O: what it writes to Deployments and Functions
given what the gateways report, with explicit time."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from kubefaas.api import Function, parse_function
from kubefaas.scaling import Decision, Reason, ScalingState, Tuning
from kubefaas_operator.autoscaler import ScaleTarget, autoscale_once, run_autoscaler
from kubefaas_operator.gateway_stats import FunctionStats, combine, parse_stats


def function(name: str = "api", **scaling: Any) -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "image": "example/api:1",
                "scaling": {"targetConcurrency": 1, "maxScale": 100, **scaling},
            },
        }
    )


def entry(**fields: Any) -> dict[str, Any]:
    return {
        "inFlight": 0,
        "pending": 0,
        "stableConcurrency": 0.0,
        "panicConcurrency": 0.0,
        "queued": 0,
        "idleSeconds": None,
        **fields,
    }


@dataclass
class FakeCluster:
    """Gateways answering stats, Deployments with replicas, Functions with status."""

    targets: dict[str, ScaleTarget]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # endpoint -> functions
    down: set[str] = field(default_factory=set)
    conflicts: int = 0
    scaled: list[tuple[str, int]] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)
    clock: float = 1000.0

    async def list_gateway_endpoints(self) -> Sequence[str]:
        return list(self.stats)

    async def read_stats(self, endpoint: str) -> Mapping[str, Any]:
        if endpoint in self.down:
            raise ConnectionRefusedError(endpoint)
        return {"gateway": endpoint, "time": self.clock, "functions": self.stats[endpoint]}

    async def get_functions(self) -> Sequence[ScaleTarget]:
        return list(self.targets.values())

    async def scale_deployment(self, target: ScaleTarget, replicas: int) -> bool:
        if self.conflicts:
            self.conflicts -= 1
            return False
        key = target.function.key
        self.scaled.append((key, replicas))
        # Instances come up (or go) by the next tick.
        self.targets[key] = replace(target, replicas=replicas, ready=replicas)
        return True

    async def write_status(self, fn: Function, replicas: int, decision: Decision) -> None:
        self.statuses.append((fn.key, replicas))

    def now(self) -> float:
        return self.clock

    async def tick(self, states: dict[str, ScalingState]) -> dict[str, Decision]:
        decisions = await autoscale_once(
            states,
            list_gateway_endpoints=self.list_gateway_endpoints,
            read_stats=self.read_stats,
            get_functions=self.get_functions,
            scale_deployment=self.scale_deployment,
            write_status=self.write_status,
            now=self.now,
        )
        self.clock += 2.0
        return decisions


def cluster_with(fn: Function, *, replicas: int = 1) -> FakeCluster:
    return FakeCluster(
        targets={fn.key: ScaleTarget(function=fn, replicas=replicas, ready=replicas)}
    )


async def test_load_reported_by_two_gateways_is_added_up() -> None:
    fn = function()
    cluster = cluster_with(fn)
    load = entry(inFlight=30, stableConcurrency=30.0, panicConcurrency=30.0, idleSeconds=0.0)
    cluster.stats = {"http://10.0.0.1:8080": {fn.key: load}, "http://10.0.0.2:8080": {fn.key: load}}
    await cluster.tick({})
    assert cluster.scaled == [(fn.key, 60)]
    assert cluster.statuses == [(fn.key, 60)]


def test_shared_queue_depth_is_not_double_counted_and_idle_is_the_most_recent() -> None:
    a = parse_stats({"functions": {"shop/api": entry(queued=7, idleSeconds=30.0)}})
    b = parse_stats({"functions": {"shop/api": entry(queued=7, idleSeconds=4.0)}})
    c = parse_stats({"functions": {"shop/api": entry(queued=7)}})
    combined = combine([a, b, c])["shop/api"]
    assert combined.queued == 7
    assert combined.idle_seconds == 4.0


def test_malformed_stats_entries_are_ignored_not_fatal() -> None:
    parsed = parse_stats({"functions": {"shop/a": {"inFlight": "many"}, "shop/b": entry()}})
    assert parsed == {"shop/b": FunctionStats()}
    assert parse_stats({"functions": []}) == {}


async def test_a_gateway_not_answering_never_causes_a_scale_down() -> None:
    fn = function()
    cluster = cluster_with(fn, replicas=10)
    quiet = entry(inFlight=1, stableConcurrency=1.0, panicConcurrency=1.0, idleSeconds=0.0)
    cluster.stats = {"http://a:8080": {fn.key: quiet}, "http://b:8080": {fn.key: quiet}}
    cluster.down = {"http://b:8080"}
    states: dict[str, ScalingState] = {}
    for _ in range(10):
        await cluster.tick(states)
    assert cluster.scaled == []
    # Once both answer, the (rate-limited) scale-down proceeds.
    cluster.down = set()
    await cluster.tick(states)
    await cluster.tick(states)
    assert cluster.scaled
    assert cluster.scaled[-1][1] < 10


async def test_a_gateway_not_answering_still_allows_a_scale_up() -> None:
    fn = function()
    cluster = cluster_with(fn, replicas=1)
    busy = entry(inFlight=8, stableConcurrency=8.0, panicConcurrency=8.0, idleSeconds=0.0)
    cluster.stats = {"http://a:8080": {fn.key: busy}, "http://b:8080": {}}
    cluster.down = {"http://b:8080"}
    await cluster.tick({})
    assert cluster.scaled == [(fn.key, 8)]


async def test_no_gateway_at_all_holds_replicas() -> None:
    fn = function(scaleToZeroAfterSeconds=10)
    cluster = cluster_with(fn, replicas=3)
    states: dict[str, ScalingState] = {}
    for _ in range(60):
        await cluster.tick(states)
    assert cluster.scaled == []


async def test_conflict_with_the_gateways_activation_is_skipped_then_retried() -> None:
    fn = function()
    cluster = cluster_with(fn, replicas=1)
    busy = entry(inFlight=5, stableConcurrency=5.0, panicConcurrency=5.0, idleSeconds=0.0)
    cluster.stats = {"http://a:8080": {fn.key: busy}}
    cluster.conflicts = 1
    states: dict[str, ScalingState] = {}
    await cluster.tick(states)
    assert cluster.scaled == []
    await cluster.tick(states)
    assert cluster.scaled == [(fn.key, 5)]


async def test_pending_request_after_activation_keeps_the_instance() -> None:
    # The gateway raised 0 -> 1 and holds a caller while the pod starts (ready = 0).
    fn = function(scaleToZeroAfterSeconds=10)
    cluster = FakeCluster(targets={fn.key: ScaleTarget(function=fn, replicas=1, ready=0)})
    cluster.stats = {"http://a:8080": {fn.key: entry(pending=1, idleSeconds=0.0)}}
    decisions = await cluster.tick({})
    assert cluster.scaled == []  # stays at the 1 the gateway set
    assert decisions[fn.key].replicas == 1
    assert decisions[fn.key].reason is Reason.HELD_BY_PENDING


async def test_idle_function_goes_to_zero_after_its_idle_window_and_status_says_so() -> None:
    fn = function(scaleToZeroAfterSeconds=10)
    cluster = cluster_with(fn, replicas=4)
    states: dict[str, ScalingState] = {}
    started = cluster.clock
    idle_since = started - 1.0
    for _ in range(12):
        cluster.stats = {"http://a:8080": {fn.key: entry(idleSeconds=cluster.clock - idle_since)}}
        await cluster.tick(states)
    replicas = [r for _, r in cluster.scaled]
    assert replicas[-1] == 0
    assert replicas == sorted(replicas, reverse=True)
    assert cluster.statuses[-1] == (fn.key, 0)


async def test_status_is_not_rewritten_when_unchanged() -> None:
    fn = function()
    cluster = cluster_with(fn, replicas=1)
    cluster.targets[fn.key] = replace(cluster.targets[fn.key], desired_replicas=1)
    steady = entry(inFlight=1, stableConcurrency=1.0, panicConcurrency=1.0, idleSeconds=0.0)
    cluster.stats = {"http://a:8080": {fn.key: steady}}
    await cluster.tick({})
    assert cluster.scaled == []
    assert cluster.statuses == []


async def test_deleted_function_state_is_dropped() -> None:
    fn = function()
    cluster = cluster_with(fn)
    cluster.stats = {"http://a:8080": {}}
    states: dict[str, ScalingState] = {}
    await cluster.tick(states)
    assert fn.key in states
    cluster.targets.clear()
    await cluster.tick(states)
    assert states == {}


async def test_run_autoscaler_ticks_until_stopped_and_survives_a_failing_tick() -> None:
    fn = function()
    cluster = cluster_with(fn)
    cluster.stats = {"http://a:8080": {}}
    calls = 0

    async def flaky_functions() -> Sequence[ScaleTarget]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("API server unavailable")
        return await cluster.get_functions()

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_autoscaler(
            stop,
            list_gateway_endpoints=cluster.list_gateway_endpoints,
            read_stats=cluster.read_stats,
            get_functions=flaky_functions,
            scale_deployment=cluster.scale_deployment,
            now=cluster.now,
            tuning=Tuning(tick_seconds=0.01),
        )
    )
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, timeout=1)
    assert calls >= 3


@pytest.mark.parametrize("idle", [None, 5.0])
def test_stats_round_trip(idle: float | None) -> None:
    parsed = parse_stats({"functions": {"shop/api": entry(inFlight=2, idleSeconds=idle)}})
    assert parsed["shop/api"] == FunctionStats(in_flight=2, idle_seconds=idle)


async def test_a_provisioned_window_scales_an_idle_function_up_and_its_end_lets_it_go() -> None:
    # The fake clock starts at epoch second 1000: 00:16 UTC, inside `* 0 * * *`.
    window = {"schedule": "* 0 * * *", "minScale": 3}
    fn = function(scaleToZeroAfterSeconds=10, provisioned=[window])
    cluster = cluster_with(fn, replicas=0)
    cluster.stats = {"http://a:8080": {fn.key: entry()}}
    states: dict[str, ScalingState] = {}
    decisions = await cluster.tick(states)
    assert cluster.scaled == [(fn.key, 3)]
    assert decisions[fn.key].reason is Reason.PROVISIONED
    cluster.clock = 3600.0  # 01:00 UTC: the window closed
    for _ in range(5):
        cluster.stats = {"http://a:8080": {fn.key: entry(idleSeconds=cluster.clock - 1000.0)}}
        await cluster.tick(states)
    assert cluster.scaled[-1] == (fn.key, 0)
