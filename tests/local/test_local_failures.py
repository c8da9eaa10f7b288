"""Failure modes of the queue's store (docs/security.md): with Redis down the gateway says
so on /readyz (naming Redis; 200 unless the queue is required), keeps serving sync calls,
and async lookups answer 503, not 500."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.redis_server import start_redis

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local


def _wait_degraded(gateway: RunningGateway) -> httpx.Response:
    deadline = time.monotonic() + 10
    while (ready := gateway.client.get("/readyz")).json()["status"] != "degraded":
        assert time.monotonic() < deadline, "/readyz never reported the queue down"
        time.sleep(0.1)
    return ready


def test_redis_down_is_reported_and_lookups_are_503(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    redis = start_redis(tmp_path / "redis")
    try:
        manifest_dir.add_function("echo", "def handler(event, context):\n    return 1\n")
        gateway = start_gateway(
            manifest_dir.path,
            env={"KUBEFAAS_REDIS_URL": redis.url, "KUBEFAAS_ASYNC_STATS_INTERVAL_SECONDS": "0.2"},
        )
        accepted = gateway.client.post("/async-function/echo", json={})
        assert accepted.status_code == 202
        assert gateway.client.get("/readyz").json()["status"] == "ready"
    finally:
        redis.stop()
    ready = _wait_degraded(gateway)
    # Still ready by default: sync calls need no queue, and a probe failing on every
    # replica at once would empty the gateway's Service for a Redis blip.
    assert ready.status_code == 200
    body = ready.json()
    assert body["down"] == ["redis"]
    assert body["message"].startswith("Redis (the async queue) is unreachable")
    assert body["queue"].startswith("unavailable")
    lookup = gateway.client.get(accepted.headers["location"])
    assert lookup.status_code == 503
    assert lookup.json()["error"]["type"] == "NoCapacity"
    assert gateway.invoke("echo", {}).status_code == 200


def test_redis_down_fails_readiness_when_the_queue_is_required(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    redis = start_redis(tmp_path / "redis")
    try:
        manifest_dir.add_function("echo", "def handler(event, context):\n    return 1\n")
        gateway = start_gateway(
            manifest_dir.path,
            env={
                "KUBEFAAS_REDIS_URL": redis.url,
                "KUBEFAAS_ASYNC_STATS_INTERVAL_SECONDS": "0.2",
                "KUBEFAAS_READYZ_REQUIRES_QUEUE": "true",
            },
        )
    finally:
        redis.stop()
    ready = _wait_degraded(gateway)
    assert ready.status_code == 503
    assert ready.json()["down"] == ["redis"]
    assert gateway.invoke("echo", {}).status_code == 200  # the process itself still serves


def test_a_corrupt_sqlite_queue_is_moved_aside_and_the_gateway_serves(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    manifest_dir.add_function("echo", "def handler(event, context):\n    return 1\n")
    state = tmp_path / "state-0"  # what start_gateway's first gateway uses
    state.mkdir()
    (state / "async-queue.sqlite3").write_bytes(b"this is not a database" * 100)
    gateway = start_gateway(manifest_dir.path)
    assert gateway.state_dir == state
    assert "moved aside to" in gateway.stderr()
    [aside] = state.glob("async-queue.sqlite3.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert gateway.invoke("echo", {}).status_code == 200
    assert gateway.client.post("/async-function/echo", json={}).status_code == 202
