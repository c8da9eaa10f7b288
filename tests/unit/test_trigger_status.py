"""status.triggers on the cluster: what the gateways saw of a Function's triggers,
combined and written by the operator's autoscaler loop (docs/triggers.md, "Visibility")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kubefaas.api import Function
from kubefaas.crd import function_crd
from kubefaas_operator.apply import function_path
from kubefaas_operator.autoscaler import FunctionScaler, autoscale_once
from kubefaas_operator.trigger_status import summary
from tests.fake_kube import FakeKube
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


def test_kubectl_get_fn_has_a_triggers_column_from_the_summary() -> None:
    version = function_crd()["spec"]["versions"][0]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Triggers"]["jsonPath"] == ".status.triggersSummary"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["triggersSummary"]["type"] == "string"


async def test_the_operator_writes_the_triggers_summary_next_to_the_entries() -> None:
    fn = function()
    kube = FakeKube()
    path = function_path(fn.namespace, fn.name)
    kube.put_object(path, {"metadata": {"name": fn.name}, "status": {}})
    entries = [
        {"name": "nightly", "lastFireTime": "2026-01-02T03:00:00.001+00:00"},
        {"name": "orders", "lastMessageTime": "2026-01-02T04:05:06.900+01:00", "lag": 3},
    ]
    await FunctionScaler(kube=kube).write_trigger_status(fn, entries)
    status = kube.objects[path]["status"]
    assert status["triggers"] == entries
    # The latest of the two is the message: 04:05:06+01:00 is 03:05:06Z.
    assert status["triggersSummary"] == "2 (last 2026-01-02T03:05:06Z)"


def test_the_summary_is_the_count_before_anything_fired() -> None:
    assert summary([{"name": "orders", "lag": 0}]) == "1"
