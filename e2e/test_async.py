"""Asynchronous invocation on the cluster: 202 at once, delivered to a real pod, queryable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from e2e.harness import wait_for

if TYPE_CHECKING:
    from e2e.conftest import Deploy
    from e2e.harness import Release

pytestmark = pytest.mark.e2e

DELIVERY_TIMEOUT_SECONDS = 90


def _record(release: Release, invocation_id: str) -> dict[str, Any]:
    response = release.gateway.client.get(f"/invocations/{invocation_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def test_async_invocation_is_delivered_and_shows_in_invocations(
    release: Release, deploy: Deploy
) -> None:
    name = deploy("hello")

    accepted = release.gateway.invoke_async(name, {"name": "later"})

    assert accepted.status_code == 202, accepted.text
    invocation_id = accepted.json()["invocationId"]
    assert accepted.headers["location"] == f"/invocations/{invocation_id}"
    record = wait_for(
        f"async invocation {invocation_id} to succeed",
        lambda: (r := _record(release, invocation_id))["status"] == "succeeded" and r,
        timeout=DELIVERY_TIMEOUT_SECONDS,
        interval=1,
        explain=lambda: str(_record(release, invocation_id)),
    )
    assert record["function"].endswith(name)
    assert "hello, later!" in str(record["result"])
    assert [a["status"] for a in record["attempts"]] == ["succeeded"]


def test_failing_async_invocation_is_retried_and_recorded(release: Release, deploy: Deploy) -> None:
    name = deploy("fail", spec={"async": {"maxRetries": 0}})

    accepted = release.gateway.invoke_async(name, {"n": 1})

    assert accepted.status_code == 202, accepted.text
    invocation_id = accepted.json()["invocationId"]
    record = wait_for(
        f"async invocation {invocation_id} to end",
        lambda: (r := _record(release, invocation_id))["status"] in ("failed", "dead") and r,
        timeout=DELIVERY_TIMEOUT_SECONDS,
        interval=1,
        explain=lambda: str(_record(release, invocation_id)),
    )
    assert len(record["attempts"]) == 1
    assert "failing on purpose" in str(record["attempts"][0]["error"]) + str(record.get("error"))
