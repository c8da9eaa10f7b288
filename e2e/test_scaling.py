"""Scaling on real pods: to zero when idle, throttling at the reserved concurrency, and out
under load. The numbers are small: the node has two cores.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import httpx
import pytest

from e2e.harness import wait_for

if TYPE_CHECKING:
    from e2e.conftest import Deploy
    from e2e.harness import Release

pytestmark = pytest.mark.e2e

IDLE_SECONDS = 10  # the smallest scaleToZeroAfterSeconds the API allows


def test_scales_to_zero_when_idle_and_cold_starts_again(release: Release, deploy: Deploy) -> None:
    name = deploy("counter", spec={"scaling": {"scaleToZeroAfterSeconds": IDLE_SECONDS}})
    first = release.gateway.invoke(name, {})
    assert first.status_code == 200, first.text
    assert first.headers["x-cold-start"] == "true"
    assert release.gateway.invoke(name, {}).json()["count"] == 2
    before = first.json()["instance"]

    started = time.monotonic()
    wait_for(
        f"{name} to scale to zero after {IDLE_SECONDS}s idle",
        lambda: release.function_replicas(name) == 0 and not release.function_pods(name),
        timeout=IDLE_SECONDS + 120,
        interval=1,
        explain=release.diagnostics,
    )
    assert time.monotonic() - started >= IDLE_SECONDS - 1, "scaled down before the idle time"

    again = release.gateway.invoke(name, {})
    assert again.status_code == 200, again.text
    assert again.headers["x-cold-start"] == "true"
    assert again.json()["count"] == 1, "a new instance starts with fresh module state"
    assert again.json()["instance"] != before


def _parallel(
    release: Release, name: str, payload: dict[str, float], calls: int
) -> list[httpx.Response | str]:
    """`calls` simultaneous invocations: each response, or the name of the transport error."""
    barrier = threading.Barrier(calls)

    def one(_: int) -> httpx.Response | str:
        barrier.wait()
        try:
            return release.gateway.invoke(name, payload)
        except httpx.HTTPError as exc:  # a broken connection is a finding, not a crash
            return type(exc).__name__

    with ThreadPoolExecutor(max_workers=calls) as pool:
        return list(pool.map(one, range(calls)))


def _codes(results: list[httpx.Response | str]) -> list[int | str]:
    return [r.status_code if isinstance(r, httpx.Response) else r for r in results]


def test_reserved_concurrency_answers_429_with_retry_after_over_the_limit(
    release: Release, deploy: Deploy
) -> None:
    name = deploy("slow", spec={"timeoutSeconds": 30, "scaling": {"reservedConcurrency": 1}})
    warm = release.gateway.invoke(name, {"seconds": 0})
    assert warm.status_code == 200, warm.text

    results = _parallel(release, name, {"seconds": 3}, calls=3)

    assert sorted(_codes(results), key=str) == [200, 429, 429], _codes(results)
    for response in results:
        assert isinstance(response, httpx.Response)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1, response.headers
            assert response.json()["error"]["type"], response.text
    # The limit is on calls in flight: once they are done the next one is admitted.
    assert release.gateway.invoke(name, {"seconds": 0}).status_code == 200


def test_target_concurrency_one_scales_out_under_parallel_load(
    release: Release, deploy: Deploy
) -> None:
    name = deploy(
        "slow",
        spec={
            "timeoutSeconds": 60,
            "scaling": {"targetConcurrency": 1, "maxScale": 4, "scaleToZeroAfterSeconds": 0},
        },
    )
    assert release.gateway.invoke(name, {"seconds": 0}).status_code == 200
    peak = 0
    done = threading.Event()

    def watch_replicas() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, release.function_replicas(name))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch_replicas)
    watcher.start()
    try:
        codes = _codes(_parallel(release, name, {"seconds": 20}, calls=4))
    finally:
        done.set()
        watcher.join()

    assert codes == [200, 200, 200, 200], codes
    assert peak > 1, f"4 calls in flight at targetConcurrency 1 kept {peak} replica(s)"
