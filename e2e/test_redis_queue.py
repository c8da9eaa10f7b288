"""The chart with `redis.url`: two gateway replicas sharing the async queue in a real
redis-server (docs/architecture.md, "Queue semantics").

The gateway image must import the Redis backend on the image's own Python (Debian
bookworm's 3.11.2, for which redis needs `async-timeout`): a gateway that crashed there
never gets Ready, and the install fails. The release is its own (a second operator
watching its own functions namespace), so the session's release keeps its SQLite queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import redis

from e2e.harness import Cluster, function_manifest, installed_release, wait_for
from e2e.host_services import bridge_redis

if TYPE_CHECKING:
    from e2e.harness import Release
    from tests.redis_server import RedisServer

__all__ = ["bridge_redis"]

pytestmark = pytest.mark.e2e

EVENTS = 6


def _record(release: Release, invocation_id: str) -> dict[str, Any]:
    response = release.gateway.client.get(f"/invocations/{invocation_id}")
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def test_two_gateways_share_the_async_queue_in_redis(
    cluster: Cluster, bridge_redis: RedisServer
) -> None:
    values = {
        "auth": {"default": "none"},
        "gateway": {"replicas": 2},
        "redis": {"url": bridge_redis.url},
    }
    with installed_release(cluster, "kubefaas-redis", values) as release:
        gateways = release.pods(release.namespace, "app.kubernetes.io/component=gateway")
        assert len(gateways) == 2
        for pod in gateways:
            assert all(s["restartCount"] == 0 for s in pod["status"]["containerStatuses"]), pod

        cluster.kubectl(
            "apply", "-f", "-",
            input=function_manifest("hello", name="hello", namespace=release.functions_namespace),
        )  # fmt: skip
        wait_for(
            "the gateways to know Function hello",
            lambda: release.function_stats("hello") is not None,
            timeout=60,
            explain=release.diagnostics,
        )
        ids = []
        for n in range(EVENTS):
            accepted = release.gateway.invoke_async("hello", {"name": f"r{n}"})
            assert accepted.status_code == 202, accepted.text
            ids.append(accepted.json()["invocationId"])

        # Each record is readable through the Service whichever replica answers: the
        # queue is Redis, not one pod's SQLite.
        for n, invocation_id in enumerate(ids):
            record = wait_for(
                f"async invocation {invocation_id} to succeed",
                lambda i=invocation_id: (r := _record(release, i))["status"] == "succeeded" and r,
                timeout=120,
                interval=1,
                explain=release.diagnostics,
            )
            assert f"hello, r{n}!" in str(record["result"])
        client = redis.Redis.from_url(bridge_redis.url)
        try:
            assert client.dbsize() > 0, "nothing of the queue is in Redis"
        finally:
            client.close()
