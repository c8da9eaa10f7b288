"""Concurrency limits as a caller sees them: `reservedConcurrency` answers 429 at once,
`containerConcurrency` makes callers wait their turn instead of failing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

# Reports when it ran, on the gateway host's clock, so overlaps can be checked.
TIMED_SOURCE = """\
import asyncio
import time

async def handler(event, context):
    began = time.time()
    await asyncio.sleep(float(event.get("seconds", 1)))
    return {"began": began, "ended": time.time()}
"""


async def parallel_calls(
    gateway: RunningGateway, name: str, count: int, seconds: float
) -> list[tuple[httpx.Response, float]]:
    """`count` simultaneous calls; each answer with the time it came back."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(
        base_url=gateway.url, timeout=60, limits=limits, trust_env=False
    ) as client:

        async def one() -> tuple[httpx.Response, float]:
            response = await client.post(f"/function/{name}", json={"seconds": seconds})
            return response, time.monotonic()

        return await asyncio.gather(*(one() for _ in range(count)))


def test_over_reserved_concurrency_callers_get_429_with_retry_after_at_once(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("capped", TIMED_SOURCE, scaling={"reservedConcurrency": 2})
    gateway = start_gateway(manifest_dir.path)
    assert gateway.invoke("capped", {"seconds": 0}).status_code == 200  # warm

    answers = asyncio.run(parallel_calls(gateway, "capped", 10, 1.0))

    ok = [(r, t) for r, t in answers if r.status_code == 200]
    throttled = [(r, t) for r, t in answers if r.status_code == 429]
    assert len(ok) == 2
    assert len(throttled) == 8
    for response, _ in throttled:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] == "Throttled"
        assert response.headers["x-invocation-id"]
    # Refused at once: every 429 is back before the admitted 1-second calls finish.
    assert max(t for _, t in throttled) < min(t for _, t in ok)
    # Counted, and no instance ran the refused calls (1 warm-up + 2 admitted).
    assert gateway.sample("kubefaas_throttled_total", function="capped") == 8
    assert gateway.sample("kubefaas_invocations_total", function="capped", code="200") == 3
    assert gateway.sample("kubefaas_invocations_total", function="capped", code="429") == 8
    # The budget frees as calls finish.
    assert gateway.invoke("capped", {"seconds": 0}).status_code == 200


def test_container_concurrency_one_serializes_calls_instead_of_failing(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function(
        "single",
        TIMED_SOURCE,
        timeoutSeconds=20,
        scaling={"containerConcurrency": 1, "maxScale": 1, "targetConcurrency": 1},
    )
    gateway = start_gateway(manifest_dir.path)
    assert gateway.invoke("single", {"seconds": 0}).status_code == 200  # warm

    answers = asyncio.run(parallel_calls(gateway, "single", 4, 0.5))

    assert [r.status_code for r, _ in answers] == [200] * 4
    runs = sorted((r.json()["began"], r.json()["ended"]) for r, _ in answers)
    # One at a time on the single instance: each call starts after the previous ended.
    for (_, previous_end), (began, _) in itertools.pairwise(runs):
        assert began >= previous_end - 0.005
    assert gateway.sample("kubefaas_instances", function="single", state="ready") == 1


def test_container_concurrency_call_waiting_past_its_timeout_is_504(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function(
        "single",
        TIMED_SOURCE,
        timeoutSeconds=2,
        scaling={"containerConcurrency": 1, "maxScale": 1},
    )
    gateway = start_gateway(manifest_dir.path)
    assert gateway.invoke("single", {"seconds": 0}).status_code == 200  # warm

    # Three 1.5 s calls, one slot, 2 s timeout each: the first runs, the second gets the
    # slot too late to finish, the third never gets it. Nobody waits past the timeout.
    started = time.monotonic()
    answers = asyncio.run(parallel_calls(gateway, "single", 3, 1.5))

    assert sorted(r.status_code for r, _ in answers) == [200, 504, 504]
    # The second ran out of time in the handler; the third never got the slot.
    timed_out = sorted(r.json()["error"]["type"] for r, _ in answers if r.status_code == 504)
    assert timed_out == ["FunctionTimedOut", "InvocationTimeout"]
    assert max(t for _, t in answers) - started < 2 + 1.5  # timeout + deadline grace
    after = gateway.client.get("/internal/stats").json()["functions"]["default/single"]
    assert after["inFlight"] == 0
    assert after["pending"] == 0
