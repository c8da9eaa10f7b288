"""Schedule and queue triggers through the real gateway, runtime processes, Redis and
NATS JetStream (docs/triggers.md; docs/architecture.md, "Triggers").

Handlers leave side effects in files under $COUNTS, so what ran is counted by what a user
would see, across instances being replaced and gateways being killed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import redis
from nats.js.api import StreamConfig

from tests.loopback import wait_until
from tests.nats_server import NatsServer, nats_server
from tests.redis_server import RedisServer, redis_server

from .conftest import ManifestDir, RunningGateway

__all__ = ["nats_server", "redis_server"]

pytestmark = pytest.mark.local

FAST = {
    "KUBEFAAS_ASYNC_RETRY_BASE_SECONDS": "0.3",
    "KUBEFAAS_ASYNC_BACKOFF_INITIAL_SECONDS": "0.2",
    "KUBEFAAS_ASYNC_RETRY_JITTER": "0",
    "KUBEFAAS_ASYNC_LEASE_MARGIN_SECONDS": "1",
    "KUBEFAAS_ASYNC_POLL_INTERVAL_SECONDS": "0.2",
    "KUBEFAAS_ASYNC_STATS_INTERVAL_SECONDS": "0.2",
    "KUBEFAAS_DEADLINE_GRACE_SECONDS": "0.5",
    "KUBEFAAS_TRIGGER_ACK_WAIT_SECONDS": "2",
    "KUBEFAAS_TRIGGER_CLAIM_IDLE_SECONDS": "2",
    "KUBEFAAS_TRIGGER_RECONCILE_SECONDS": "0.5",
}

# Appends one line per run to $COUNTS/<key>: the key is the tick or the message number.
RECORDER = """\
import json
import os

def handler(event, context):
    key = str(event.get("n", event.get("scheduledTime")))
    with open(os.path.join(os.environ["COUNTS"], key), "a") as f:
        f.write(context.request_id + "\\n")
    return {"key": key}
"""

FAILING = """\
import os

def handler(event, context):
    with open(os.path.join(os.environ["COUNTS"], "runs"), "a") as f:
        f.write("x")
    raise ValueError(f"cannot handle {event['n']}")
"""

MESSAGES = 200


def runs(counts: Path) -> dict[str, list[str]]:
    """Key -> the invocation ids of its runs, oldest first."""
    return {p.name: p.read_text().split() for p in counts.iterdir()}


def trigger_status(gateway: RunningGateway, function: str) -> list[dict[str, Any]]:
    return gateway.client.get("/internal/triggers").json()["functions"].get(function, [])


@pytest.fixture
def counts(tmp_path: Path) -> Path:
    folder = tmp_path / "counts"
    folder.mkdir()
    return folder


def test_an_every_2s_schedule_fires_on_its_ticks_into_a_zero_scaled_function(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway], counts: Path
) -> None:
    manifest_dir.add_function(
        "tick",
        RECORDER,
        env=[{"name": "COUNTS", "value": str(counts)}],
        triggers=[{"name": "two-seconds", "schedule": {"expression": "@every 2s"}}],
    )
    gateway = start_gateway(manifest_dir.path, env=FAST)
    assert wait_until(lambda: len(runs(counts)) >= 3, timeout=15)
    ticks = sorted(float(k) for k in runs(counts))
    assert all(t % 2 == 0 for t in ticks), ticks
    assert [b - a for a, b in itertools.pairwise(ticks)] == [2.0] * (len(ticks) - 1)
    assert all(len(ids) == 1 for ids in runs(counts).values())
    [status] = trigger_status(gateway, "default/tick")
    assert status["type"] == "schedule"
    assert status["fires"] >= 3
    assert status["lastError"] is None
    # The operator's feed carries the same, for status.triggers on a cluster.
    stats = gateway.client.get("/internal/stats").json()["functions"]["default/tick"]
    assert [t["name"] for t in stats["triggers"]] == ["two-seconds"]
    record = gateway.client.get(f"/invocations/{status['lastInvocationId']}").json()
    assert record["status"] in ("queued", "running", "succeeded")
    fired = gateway.sample("kubefaas_trigger_fires_total", function="tick", trigger="two-seconds")
    assert fired is not None
    assert fired >= 3
    # Nothing ran the function before the first tick: that tick started it from zero.
    assert gateway.sample("kubefaas_cold_starts_total", function="tick") == 1


@pytest.mark.redis
def test_two_gateways_on_one_redis_queue_fire_each_tick_once(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    counts: Path,
    redis_server: RedisServer,
) -> None:
    manifest_dir.add_function(
        "tick",
        RECORDER,
        env=[{"name": "COUNTS", "value": str(counts)}],
        triggers=[{"name": "every-second", "schedule": {"expression": "@every 1s"}}],
    )
    env = {
        **FAST,
        "KUBEFAAS_REDIS_URL": redis_server.url,
        "KUBEFAAS_REDIS_PREFIX": f"ticks-{uuid.uuid4().hex[:8]}",
    }
    first = start_gateway(manifest_dir.path, env=env)
    second = start_gateway(manifest_dir.path, env=env)
    assert wait_until(lambda: len(runs(counts)) >= 6, timeout=20)
    both = [trigger_status(g, "default/tick")[0] for g in (first, second)]
    first.terminate()
    second.terminate()
    # Both gateways ran the schedule (each tried to store the ticks) ...
    assert all(status["lastScheduledTime"] is not None for status in both), both
    seen = runs(counts)
    ticks = sorted(float(k) for k in seen)
    # Every tick while both ran, each handled by exactly one invocation, run once.
    assert [b - a for a, b in itertools.pairwise(ticks)] == [1.0] * (len(ticks) - 1)
    assert {k: len(v) for k, v in seen.items() if len(v) != 1} == {}


async def _publish_nats(url: str, stream: str, subject: str, count: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[subject]))
    for n in range(count):
        await js.publish(subject, json.dumps({"n": n}).encode())
    await nc.close()


async def _nats_consumer_state(url: str, stream: str, consumer: str) -> tuple[int, int]:
    nc = await nats.connect(url)
    info = await nc.jetstream().consumer_info(stream, consumer)
    await nc.close()
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


def _publish_redis(url: str, stream: str, count: int) -> None:
    client = redis.Redis.from_url(url)
    for n in range(count):
        client.xadd(stream, {"body": json.dumps({"n": n})})
    client.close()


def _redis_group_state(url: str, stream: str, group: str) -> tuple[int, int]:
    client = redis.Redis.from_url(url)
    [info] = [g for g in client.xinfo_groups(stream) if g["name"] == group.encode()]
    client.close()
    return int(info["lag"] or 0), int(info["pending"])


@pytest.mark.redis
@pytest.mark.nats
@pytest.mark.parametrize("broker", ["nats", "redis"])
def test_200_messages_are_each_processed_once_through_a_kill_9(
    broker: str,
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    counts: Path,
    redis_server: RedisServer,
    nats_server: NatsServer,
) -> None:
    tag = uuid.uuid4().hex[:8]
    if broker == "nats":
        stream, subject = f"ORDERS{tag}", f"orders.{tag}"
        asyncio.run(_publish_nats(nats_server.url, stream, subject, MESSAGES))
        source = {
            "nats": {"url": nats_server.url, "stream": stream, "subject": subject, "consumer": "fn"}
        }
    else:
        stream = f"orders-{tag}"
        _publish_redis(redis_server.url, stream, MESSAGES)
        source = {"redis": {"url": redis_server.url, "stream": stream, "group": "fn"}}
    manifest_dir.add_function(
        "orders",
        RECORDER,
        env=[{"name": "COUNTS", "value": str(counts)}],
        triggers=[{"name": "orders", "queue": {**source, "batchSize": 20, "maxInFlight": 50}}],
    )
    env = {
        **FAST,
        # The async queue in Redis survives the gateway; the consumer name is the same
        # after the restart, as it is for a restarted pod.
        "KUBEFAAS_REDIS_URL": redis_server.url,
        "KUBEFAAS_REDIS_PREFIX": f"orders-{tag}",
        "KUBEFAAS_TRIGGER_CONSUMER": f"gw-{tag}",
    }
    gateway = start_gateway(manifest_dir.path, env=env)
    assert wait_until(lambda: len(runs(counts)) >= MESSAGES // 4, timeout=60)
    gateway.kill()
    assert len(runs(counts)) < MESSAGES, "killed mid-way"

    restarted = start_gateway(manifest_dir.path, env=env)
    assert wait_until(lambda: len(runs(counts)) == MESSAGES, timeout=90), len(runs(counts))

    def all_acked() -> bool:
        if broker == "nats":
            state = asyncio.run(_nats_consumer_state(nats_server.url, stream, "fn"))
        else:
            state = _redis_group_state(redis_server.url, stream, "fn")
        return state == (0, 0)

    assert wait_until(all_acked, timeout=30)
    seen = runs(counts)
    assert sorted(int(k) for k in seen) == list(range(MESSAGES))
    # One invocation per message, even for messages delivered again after the kill; an
    # attempt cut off by the kill may run again (at-least-once), only those.
    assert all(len(set(ids)) == 1 for ids in seen.values())
    rerun = sum(len(ids) - 1 for ids in seen.values())
    assert rerun <= 8, f"{rerun} runs beyond one per message: more than were in flight"
    [status] = trigger_status(restarted, "default/orders")
    assert status["type"] == broker
    assert status["acks"] >= 1
    assert status["lag"] == 0


async def _nats_error_messages(url: str, stream: str, subject: str, wait: float) -> list[Any]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable="reader", stream=stream)
    try:
        return await sub.fetch(1, timeout=wait)
    finally:
        await nc.close()


@pytest.mark.redis
@pytest.mark.nats
@pytest.mark.parametrize("broker", ["nats", "redis"])
def test_a_failing_message_lands_in_the_error_destination_after_its_retries(
    broker: str,
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    counts: Path,
    redis_server: RedisServer,
    nats_server: NatsServer,
) -> None:
    tag = uuid.uuid4().hex[:8]
    if broker == "nats":
        stream, subject, errors = f"IN{tag}", f"in.{tag}", f"failed.{tag}"

        async def prepare() -> None:
            nc = await nats.connect(nats_server.url)
            await nc.jetstream().add_stream(StreamConfig(name=f"FAILED{tag}", subjects=[errors]))
            await nc.close()

        asyncio.run(prepare())
        asyncio.run(_publish_nats(nats_server.url, stream, subject, 1))
        source: dict[str, Any] = {
            "nats": {"url": nats_server.url, "stream": stream, "subject": subject, "consumer": "fn"}
        }
    else:
        stream, errors = f"in-{tag}", f"failed-{tag}"
        _publish_redis(redis_server.url, stream, 1)
        source = {"redis": {"url": redis_server.url, "stream": stream, "group": "fn"}}
    manifest_dir.add_function(
        "picky",
        FAILING,
        env=[{"name": "COUNTS", "value": str(counts)}],
        triggers=[{"name": "in", "queue": {**source, "errorDestination": errors}}],
        **{"async": {"maxRetries": 2}},
    )
    gateway = start_gateway(manifest_dir.path, env=FAST)

    if broker == "nats":
        [dead] = asyncio.run(_nats_error_messages(nats_server.url, f"FAILED{tag}", errors, 30))
        body, error = json.loads(dead.data), json.loads(dead.headers["Kubefaas-Error"])
    else:
        client = redis.Redis.from_url(redis_server.url)
        assert wait_until(lambda: client.xlen(errors) == 1, timeout=30)
        [(_, fields)] = client.xrange(errors)
        client.close()
        body, error = json.loads(fields[b"body"]), json.loads(fields[b"error"])
    assert body == {"n": 0}
    assert error["errorMessage"] == "cannot handle 0"
    assert error["errorType"] == "ValueError"
    assert (counts / "runs").read_text() == "xxx"  # the first try and 2 retries
    # The message is acked (and counted) right after its dead letter is published.
    assert wait_until(
        lambda: trigger_status(gateway, "default/picky")[0]["deadLettered"] == 1, timeout=10
    )
    [status] = trigger_status(gateway, "default/picky")
    assert "dead-lettered" in status["lastError"]


SLOW = """\
import time

def handler(event, context):
    time.sleep(0.3)
    return {"n": event["n"]}
"""


@pytest.mark.redis
def test_a_backlog_in_the_broker_scales_the_function_out_then_lets_it_go(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    redis_server: RedisServer,
) -> None:
    tag = uuid.uuid4().hex[:8]
    stream = f"backlog-{tag}"
    _publish_redis(redis_server.url, stream, 150)
    manifest_dir.add_function(
        "worker",
        SLOW,
        scaling={"targetConcurrency": 2, "maxScale": 4, "scaleToZeroAfterSeconds": 10},
        triggers=[
            {
                "name": "backlog",
                "queue": {"redis": {"url": redis_server.url, "stream": stream, "group": "fn"}},
            }
        ],
    )
    gateway = start_gateway(
        manifest_dir.path,
        env={**FAST, "KUBEFAAS_ASYNC_CONCURRENCY_CAP": "8"},
    )
    seen: list[tuple[int, int]] = []

    def sample() -> dict[str, Any]:
        entry: dict[str, Any] = gateway.client.get("/internal/stats").json()["functions"][
            "default/worker"
        ]
        seen.append((entry["queued"], entry["replicas"]))
        return entry

    # The broker's lag is queued work on the scaling signals, and the backlog's
    # concurrency scales the function out.
    assert wait_until(lambda: sample()["replicas"] > 1, timeout=60), seen
    assert any(queued > 0 for queued, _ in seen), seen
    # Once the broker is drained, nothing holds the instances: back to zero.
    assert wait_until(
        lambda: _redis_group_state(redis_server.url, stream, "fn") == (0, 0), timeout=90
    )
    assert wait_until(lambda: sample()["replicas"] == 0, timeout=60), seen[-5:]
    assert sample()["queued"] == 0


# Later messages finish sooner, and message 3's first attempt fails: run concurrently or
# skipped past a retry, the log of finished messages comes out of order.
ORDERED = """\
import os
import time

def handler(event, context):
    n = event["n"]
    marker = os.path.join(os.environ["COUNTS"], f"tried-{n}")
    if n == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt of 3 fails")
    time.sleep((12 - n) * 0.02)
    with open(os.path.join(os.environ["COUNTS"], "order"), "a") as f:
        f.write(f"{n}\\n")
    return {"n": n}
"""


@pytest.mark.redis
@pytest.mark.nats
@pytest.mark.parametrize("broker", ["nats", "redis"])
def test_max_in_flight_1_handles_messages_in_the_brokers_order_through_a_retry(
    broker: str,
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    counts: Path,
    redis_server: RedisServer,
    nats_server: NatsServer,
) -> None:
    tag = uuid.uuid4().hex[:8]
    count = 12
    if broker == "nats":
        stream, subject = f"SEQ{tag}", f"seq.{tag}"
        asyncio.run(_publish_nats(nats_server.url, stream, subject, count))
        source: dict[str, Any] = {
            "nats": {"url": nats_server.url, "stream": stream, "subject": subject, "consumer": "fn"}
        }
    else:
        stream = f"seq-{tag}"
        _publish_redis(redis_server.url, stream, count)
        source = {"redis": {"url": redis_server.url, "stream": stream, "group": "fn"}}
    manifest_dir.add_function(
        "sequence",
        ORDERED,
        env=[{"name": "COUNTS", "value": str(counts)}],
        # Room for several instances: only the trigger's maxInFlight keeps the order.
        scaling={"targetConcurrency": 1, "maxScale": 4},
        triggers=[{"name": "seq", "queue": {**source, "batchSize": 10, "maxInFlight": 1}}],
        **{"async": {"maxRetries": 2}},
    )
    gateway = start_gateway(manifest_dir.path, env=FAST)
    order = counts / "order"
    assert wait_until(
        lambda: order.exists() and len(order.read_text().split()) == count, timeout=60
    ), order.read_text() if order.exists() else "nothing ran"
    assert [int(n) for n in order.read_text().split()] == list(range(count))
    assert (counts / "tried-3").exists(), "message 3 was retried"
    assert wait_until(
        lambda: trigger_status(gateway, "default/sequence")[0]["acks"] == count, timeout=10
    )
    assert trigger_status(gateway, "default/sequence")[0]["deadLettered"] == 0
