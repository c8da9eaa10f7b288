"""Triggers on real pods (docs/triggers.md): a schedule waking a function scaled to zero,
and a NATS JetStream queue whose messages are each handled and acked.

Handlers POST what they handled to a recorder on this machine (`e2e.host_services`), so
what ran is counted by its side effects; nats-server runs on this machine too, reached by
the gateway pod through the pod bridge.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.js.api import StreamConfig

from e2e.harness import wait_for
from e2e.host_services import Recorder, bridge_nats, recorder

if TYPE_CHECKING:
    from e2e.conftest import Deploy
    from e2e.harness import Release
    from tests.nats_server import NatsServer

__all__ = ["bridge_nats", "recorder"]

pytestmark = pytest.mark.e2e

MESSAGES = 20

# POSTs {"key", "id", "instance"} to $RECORD_URL: the message number or the tick.
CODE = """\
import json
import os
import urllib.request

def handler(event, context):
    key = str(event.get("n", event.get("scheduledTime")))
    body = {"key": key, "id": context.request_id, "instance": os.environ.get("HOSTNAME")}
    request = urllib.request.Request(
        os.environ["RECORD_URL"], data=json.dumps(body).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=10).read()
    return {"key": key}
"""


def _function(recorder: Recorder, **spec: Any) -> dict[str, Any]:
    return {
        "spec": {
            "code": {"inline": {"main.py": CODE}},
            "env": [{"name": "RECORD_URL", "value": recorder.url}],
            **spec,
        }
    }


def trigger_status(release: Release, name: str) -> list[dict[str, Any]]:
    function = release.cluster.json("get", "function", name, "-n", release.functions_namespace)
    found: list[dict[str, Any]] = (function.get("status") or {}).get("triggers") or []
    return found


def by_key(documents: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Key -> the invocation ids that handled it."""
    keys: dict[str, list[str]] = {}
    for document in documents:
        keys.setdefault(document["key"], []).append(document["id"])
    return keys


def test_a_schedule_wakes_a_function_scaled_to_zero_and_shows_in_status(
    release: Release, deploy: Deploy, recorder: Recorder
) -> None:
    name = deploy("hello", **_function(recorder))
    assert release.function_replicas(name) == 0
    assert not release.function_pods(name)

    release.cluster.kubectl(
        "patch", "function", name, "-n", release.functions_namespace, "--type=merge", "-p",
        json.dumps({"spec": {"triggers": [
            {"name": "two-seconds", "schedule": {"expression": "@every 2s"}}
        ]}}),
    )  # fmt: skip
    wait_for(
        "three ticks handled by the function",
        lambda: len(by_key(recorder.seen())) >= 3,
        timeout=180,
        interval=1,
        explain=release.diagnostics,
    )
    # The first tick raised the Deployment from zero.
    assert release.function_replicas(name) >= 1
    handled = by_key(recorder.seen())
    ticks = sorted(float(key) for key in handled)
    assert all(tick % 2 == 0 for tick in ticks), ticks
    assert [b - a for a, b in itertools.pairwise(ticks)] == [2.0] * (len(ticks) - 1)
    assert {key: ids for key, ids in handled.items() if len(set(ids)) != 1} == {}
    pods = {pod["metadata"]["name"] for pod in release.function_pods(name)}
    assert {document["instance"] for document in recorder.seen()} <= pods

    # The operator combines the gateways' view into status.triggers.
    [status] = wait_for(
        f"status.triggers of {name} to show a fire",
        lambda: [t for t in trigger_status(release, name) if t.get("lastFireTime")],
        timeout=90,
        interval=1,
        explain=lambda: json.dumps(trigger_status(release, name)),
    )
    assert status["name"] == "two-seconds"
    assert not status.get("lastError")
    # The last fire's invocation record is the gateway's, readable by id.
    fires = release.gateway.client.get("/internal/triggers", headers=release.metrics_auth()).json()[
        "functions"
    ]
    [mine] = fires[f"{release.functions_namespace}/{name}"]
    record = release.gateway.client.get(f"/invocations/{mine['lastInvocationId']}").json()
    assert record["status"] in ("queued", "running", "succeeded"), record


async def _publish(url: str, stream: str, subject: str, count: int) -> None:
    client = await nats.connect(url)
    jetstream = client.jetstream()
    await jetstream.add_stream(StreamConfig(name=stream, subjects=[subject]))
    for n in range(count):
        await jetstream.publish(subject, json.dumps({"n": n}).encode())
    await client.close()


async def _consumer_state(url: str, stream: str, consumer: str) -> tuple[int, int]:
    client = await nats.connect(url)
    try:
        info = await client.jetstream().consumer_info(stream, consumer)
    finally:
        await client.close()
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


def test_nats_jetstream_messages_are_each_handled_once_and_acked(
    release: Release, deploy: Deploy, recorder: Recorder, bridge_nats: NatsServer
) -> None:
    tag = uuid.uuid4().hex[:8]
    stream, subject = f"ORDERS{tag}", f"orders.{tag}"
    asyncio.run(_publish(bridge_nats.url, stream, subject, MESSAGES))
    source = {"url": bridge_nats.url, "stream": stream, "subject": subject, "consumer": "fn"}
    name = deploy(
        "hello",
        **_function(
            recorder,
            triggers=[{"name": "orders", "queue": {"nats": source, "batchSize": 5}}],
        ),
    )
    wait_for(
        f"{MESSAGES} messages handled",
        lambda: len(by_key(recorder.seen())) == MESSAGES,
        timeout=240,
        interval=1,
        explain=lambda: f"handled {sorted(by_key(recorder.seen()))}\n{release.diagnostics()}",
    )
    wait_for(
        "every message acked (nothing pending on the consumer)",
        lambda: asyncio.run(_consumer_state(bridge_nats.url, stream, "fn")) == (0, 0),
        timeout=60,
        interval=1,
        explain=lambda: str(asyncio.run(_consumer_state(bridge_nats.url, stream, "fn"))),
    )
    handled = by_key(recorder.seen())
    assert sorted(int(key) for key in handled) == list(range(MESSAGES))
    # No gateway died: each message ran exactly once.
    assert {key: ids for key, ids in handled.items() if len(ids) != 1} == {}

    [status] = wait_for(
        f"status.triggers of {name} to show the last message",
        lambda: [t for t in trigger_status(release, name) if t.get("lastMessageTime")],
        timeout=90,
        interval=1,
        explain=lambda: json.dumps(trigger_status(release, name)),
    )
    assert status["name"] == "orders"
    assert not status.get("lastError")

    def mine() -> dict[str, Any]:
        [entry] = release.gateway.client.get(
            "/internal/triggers", headers=release.metrics_auth()
        ).json()["functions"][f"{release.functions_namespace}/{name}"]
        return dict(entry)

    assert mine()["acks"] == MESSAGES
    # The gateway reads the consumer's lag every 2 s: it comes down to 0 on its next look.
    wait_for(
        "the trigger's lag to read 0",
        lambda: mine()["lag"] == 0,
        timeout=20,
        interval=1,
        explain=lambda: json.dumps(mine()),
    )
