"""spec.triggers in the Function model: what a user gets back for a good or a bad trigger
(docs/triggers.md)."""

from __future__ import annotations

from typing import Any

import pytest

from kubefaas import limits
from kubefaas.api import parse_function
from kubefaas.manifests import load_directory
from tests.unit.test_api import manifest, problems

REDIS = {"url": "redis://127.0.0.1:6379/0", "stream": "orders", "group": "fn"}
NATS = {"url": "nats://127.0.0.1:4222", "stream": "ORDERS", "subject": "orders.>", "consumer": "fn"}


def test_triggers_default_to_none_and_queue_triggers_get_their_defaults() -> None:
    assert parse_function(manifest()).spec.triggers == []
    fn = parse_function(
        manifest(
            triggers=[
                {
                    "name": "nightly",
                    "schedule": {"expression": "0 3 * * *", "timezone": "Europe/Paris"},
                },
                {"name": "orders", "queue": {"nats": NATS, "secretRef": {"name": "nats-creds"}}},
            ]
        )
    )
    schedule, queue = fn.spec.triggers
    assert schedule.schedule is not None
    assert (schedule.schedule.catch_up, schedule.schedule.payload) == ("none", None)
    assert queue.queue is not None
    assert queue.queue.batch_size == limits.TRIGGER_BATCH_SIZE_DEFAULT
    assert queue.queue.max_in_flight == limits.TRIGGER_MAX_IN_FLIGHT_DEFAULT
    assert queue.queue.secret_ref is not None
    assert queue.queue.secret_ref.name == "nats-creds"


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (
            {"name": "t", "schedule": {"expression": "61 * * * *"}},
            "spec.triggers.0.schedule.expression: invalid cron expression '61 * * * *'",
        ),
        (
            {"name": "t", "schedule": {"expression": "@every 500ms"}},
            "spec.triggers.0.schedule.expression: String should match pattern",
        ),
        (
            {"name": "t", "schedule": {"expression": "@every 0s"}},
            "spec.triggers.0.schedule.expression: @every must be at least 1s",
        ),
        (
            {"name": "t", "schedule": {"expression": "0 * * * *", "timezone": "Mars/Base"}},
            "spec.triggers.0.schedule.timezone: unknown time zone 'Mars/Base'",
        ),
        (
            {"name": "t", "schedule": {"expression": "@every 5s", "timezone": "UTC"}},
            "schedule.timezone applies to cron expressions, not to @every",
        ),
        (
            {"name": "t", "schedule": {"expression": "@every 5s", "catchUp": "all"}},
            "spec.triggers.0.schedule.catchUp: Input should be 'none' or 'last'",
        ),
        (
            {"name": "t", "schedule": {"expression": "@every 5s", "payload": "x" * 70_000}},
            "payload is 70002 bytes of JSON, more than 65536",
        ),
        ({"name": "t"}, "spec.triggers.0: a trigger sets exactly one of schedule and queue"),
        (
            {"name": "t", "queue": {"nats": NATS, "redis": REDIS}},
            "spec.triggers.0.queue: a queue trigger sets exactly one source: nats or redis",
        ),
        (
            {"name": "t", "queue": {"redis": {**REDIS, "url": "http://127.0.0.1"}}},
            "spec.triggers.0.queue.redis.url: String should match pattern",
        ),
        (
            {"name": "t", "queue": {"redis": REDIS, "maxInFlight": 0}},
            "spec.triggers.0.queue.maxInFlight: Input should be greater than or equal to 1",
        ),
        (
            {"name": "Bad_Name", "schedule": {"expression": "@every 5s"}},
            "spec.triggers.0.name: String should match pattern",
        ),
    ],
)
def test_a_bad_trigger_is_refused_naming_its_field(trigger: dict[str, Any], expected: str) -> None:
    assert expected in problems(manifest(triggers=[trigger]))


def test_trigger_names_are_unique() -> None:
    twice = [{"name": "t", "schedule": {"expression": "@every 5s"}}] * 2
    assert "spec.triggers names must be unique" in problems(manifest(triggers=twice))


def test_local_mode_reads_secrets_beside_the_manifests(tmp_path: Any) -> None:
    (tmp_path / "creds.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: shop}\n"
        "data: {username: YWxpY2U=}\nstringData: {password: s3cret}\n"
    )
    result = load_directory(tmp_path)
    assert result.secrets == {("shop", "creds"): {"username": "alice", "password": "s3cret"}}
    assert result.errors == []
