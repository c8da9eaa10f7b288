"""Dead-letter retention (docs/security.md, "Failure modes"): a dead letter older than the
retention, or beyond a function's count, is purged by the gateway itself, on both queue
backends (SQLite, and a real redis-server), counted in
`kubefaas_async_dead_letters_purged_total{reason}`; its record stays readable as `failed`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.redis_server import RedisServer, redis_server

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

__all__ = ["redis_server"]

pytestmark = pytest.mark.local

ADMIN = {"Authorization": "Bearer retention-admin-token"}
BOOM = "def handler(event, context):\n    raise RuntimeError('always fails')\n"
WAIT_SECONDS = 20.0


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    env = {"KUBEFAAS_ADMIN_TOKEN": ADMIN["Authorization"].split()[1]}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env["KUBEFAAS_REDIS_URL"] = server.url
        env["KUBEFAAS_REDIS_PREFIX"] = f"t{uuid.uuid4().hex[:8]}"
    return env


def _start(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    env: dict[str, str],
) -> RunningGateway:
    manifest_dir.add_function("boom", BOOM, **{"async": {"maxRetries": 0}})
    return start_gateway(
        manifest_dir.path, env={**env, "KUBEFAAS_ASYNC_SWEEP_INTERVAL_SECONDS": "0.2"}
    )


def _until(gateway: RunningGateway, invocation_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        record: dict[str, Any] = gateway.client.get(f"/invocations/{invocation_id}").json()
        if record.get("status") == status:
            return record
        assert time.monotonic() < deadline, f"{invocation_id} never became {status}: {record}"
        time.sleep(0.1)


def _dead_letter_ids(gateway: RunningGateway) -> set[str]:
    page = gateway.client.get("/system/dead-letters", params={"limit": 100}, headers=ADMIN)
    assert page.status_code == 200, page.text
    return {item["invocationId"] for item in page.json()["items"]}


def test_a_dead_letter_past_its_retention_is_purged(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    backend_env: dict[str, str],
) -> None:
    gateway = _start(
        manifest_dir,
        start_gateway,
        {**backend_env, "KUBEFAAS_ASYNC_DEAD_LETTER_RETENTION_SECONDS": "4"},
    )
    submitted = gateway.client.post("/async-function/boom", json={})
    assert submitted.status_code == 202
    invocation_id = submitted.json()["invocationId"]
    dead = _until(gateway, invocation_id, "dead")
    assert dead["deadLetter"]["reason"] == "retries_exhausted", dead
    assert invocation_id in _dead_letter_ids(gateway)  # kept while younger than 4 s

    purged = _until(gateway, invocation_id, "failed")
    assert purged["deadLetter"]["reason"] == "retries_exhausted"  # the history stays
    assert invocation_id not in _dead_letter_ids(gateway)
    assert (
        gateway.sample("kubefaas_async_dead_letters_purged_total", function="boom", reason="age")
        == 1
    )
    assert "purged 1 dead letters dead for more than 4 s" in gateway.stderr()


def test_dead_letters_beyond_the_count_of_a_function_are_purged_oldest_first(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    backend_env: dict[str, str],
) -> None:
    gateway = _start(
        manifest_dir,
        start_gateway,
        {**backend_env, "KUBEFAAS_ASYNC_DEAD_LETTER_MAX_PER_FUNCTION": "2"},
    )
    ids = []
    for n in range(4):  # one after the other, so they die in this order
        submitted = gateway.client.post("/async-function/boom", json={"n": n})
        assert submitted.status_code == 202
        ids.append(submitted.json()["invocationId"])
        _until_any(gateway, ids[-1], ("dead", "failed"))
    for old in ids[:2]:
        _until(gateway, old, "failed")
    assert _dead_letter_ids(gateway) == set(ids[2:])
    assert (
        gateway.sample("kubefaas_async_dead_letters_purged_total", function="boom", reason="count")
        == 2
    )


def _until_any(gateway: RunningGateway, invocation_id: str, statuses: tuple[str, ...]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while gateway.client.get(f"/invocations/{invocation_id}").json().get("status") not in (
        statuses
    ):
        assert time.monotonic() < deadline, f"{invocation_id} never reached {statuses}"
        time.sleep(0.1)
