"""status.triggers on the cluster: what the gateways saw of a Function's triggers,
combined and written by the operator's autoscaler loop (docs/triggers.md, "Visibility")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kubefaas.api import Function
from kubefaas_operator.autoscaler import autoscale_once
from tests.unit.test_scaling_loop import FakeCluster, cluster_with, entry, function

A, B = "http://10.0.0.1:8080", "http://10.0.0.2:8080"


async def tick(cluster: FakeCluster, written: list[tuple[str, list[dict[str, Any]]]]) -> None:
    async def write_trigger_status(fn: Function, entries: list[dict[str, Any]]) -> None:
        written.append((fn.key, entries))
        key = fn.key
        cluster.targets[key] = replace(cluster.targets[key], trigger_status=tuple(entries))

    await autoscale_once(
        {},
        list_gateway_endpoints=cluster.list_gateway_endpoints,
        read_stats=cluster.read_stats,
        get_functions=cluster.get_functions,
        scale_deployment=cluster.scale_deployment,
        write_trigger_status=write_trigger_status,
        now=cluster.now,
    )


async def test_the_latest_fire_message_and_error_of_any_gateway_reach_the_status() -> None:
    fn = function()
    cluster = cluster_with(fn)
    day1, day2 = "2026-01-01T03:00:00", "2026-01-02T03:00:00"
    nightly = {"name": "nightly", "type": "schedule"}
    orders = {"name": "orders", "type": "nats", "lag": 40}
    from_a = [
        {**nightly, "lastFireTime": f"{day2}.001+00:00"},
        {**orders, "lastMessageTime": f"{day2}.500+00:00", "lastError": "old",
         "lastErrorTime": f"{day1}.000+00:00"},
    ]  # fmt: skip
    from_b = [
        {**nightly, "lastFireTime": f"{day1}.002+00:00"},
        {**orders, "lastMessageTime": f"{day2}.900+00:00",
         "lastError": "message ORDERS:7 dead-lettered", "lastErrorTime": f"{day2}.800+00:00"},
    ]  # fmt: skip
    cluster.stats = {A: {fn.key: entry(triggers=from_a)}, B: {fn.key: entry(triggers=from_b)}}
    written: list[tuple[str, list[dict[str, Any]]]] = []
    await tick(cluster, written)
    assert written == [
        (
            fn.key,
            [
                {"name": "nightly", "lastFireTime": f"{day2}.001+00:00"},
                {
                    "name": "orders",
                    "lastMessageTime": f"{day2}.900+00:00",
                    "lag": 40,
                    "lastError": "message ORDERS:7 dead-lettered",
                },
            ],
        )
    ]
    # Unchanged next tick: nothing is written again.
    await tick(cluster, written)
    assert len(written) == 1


async def test_a_function_without_triggers_gets_no_trigger_status() -> None:
    fn = function()
    cluster = cluster_with(fn)
    cluster.stats = {A: {fn.key: entry()}}
    written: list[tuple[str, list[dict[str, Any]]]] = []
    await tick(cluster, written)
    assert written == []
