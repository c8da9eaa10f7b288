"""Queue-trigger lag counts as queued work on the scaling-signals board, so a broker
backlog scales a function out and an empty one lets it go back to zero
(docs/architecture.md, "Triggers")."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from kubefaas_gateway.signals import ScalingSignals
from kubefaas_gateway.triggers.board import TriggerBoard


def test_trigger_lag_adds_to_the_async_queue_depth_of_its_function() -> None:
    registry = CollectorRegistry()
    board = TriggerBoard(registry)
    board.set_lag(board.state("shop/orders", "nats-in", "nats"), 120)
    board.set_lag(board.state("shop/orders", "redis-in", "redis"), 30)
    board.set_lag(board.state("shop/idle", "redis-in", "redis"), 0)
    signals = ScalingSignals()
    signals.publish_queue_depths({"shop/orders": 5, "shop/other": 2})
    signals.publish_trigger_lag(board.lag_by_function())
    assert signals.queued("shop/orders") == 155
    assert signals.queued("shop/other") == 2
    assert signals.queued("shop/idle") == 0
    # A later async refresh keeps the lag; an emptied broker drops it.
    signals.publish_queue_depths({"shop/orders": 0})
    assert signals.queued("shop/orders") == 150
    signals.publish_trigger_lag({})
    assert signals.queued("shop/orders") == 0
    assert (
        registry.get_sample_value(
            "kubefaas_trigger_lag",
            {"namespace": "shop", "function": "orders", "trigger": "nats-in"},
        )
        == 120
    )


def test_the_status_of_each_trigger_names_what_it_last_did() -> None:
    board = TriggerBoard(CollectorRegistry())
    tick = board.state("default/tick", "every-second", "schedule")
    board.fired(tick, tick=1000.0, now=1000.004, invocation="tick-1")
    board.missed(tick, 2)
    queue = board.state("default/tick", "orders", "nats")
    board.received(queue, now=1001.0, invocation="msg-1")
    board.acked(queue, "dead")
    board.error(queue, "message ORDERS:7 dead-lettered", now=1002.0)
    [first, second] = board.to_json()["default/tick"]
    assert first["name"] == "every-second"
    assert (first["fires"], first["misses"]) == (1, 2)
    assert first["lastScheduledTime"] == "1970-01-01T00:16:40.000+00:00"
    assert second["name"] == "orders"
    assert (second["messages"], second["acks"], second["deadLettered"]) == (1, 1, 1)
    assert second["lastError"] == "message ORDERS:7 dead-lettered"
