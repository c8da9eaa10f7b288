"""The pool that runs sync handlers: bounded concurrency, every outcome reported."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from kubefaas_runtime.threads import HandlerThreads


async def test_runs_up_to_max_threads_at_once_and_queues_the_rest() -> None:
    pool = HandlerThreads(max_threads=2)
    loop = asyncio.get_running_loop()
    release = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()
    done: list[asyncio.Future[Any]] = []

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1
        return n * 10

    for n in range(4):
        future: asyncio.Future[Any] = loop.create_future()
        done.append(future)

        def report(
            result: Any, error: BaseException | None, f: asyncio.Future[Any] = future
        ) -> None:
            f.set_result((result, error))

        pool.submit(loop, report, work, n)

    await asyncio.sleep(0.1)
    assert pool.size == 2
    assert peak == 2
    release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*done), 5)
    assert outcomes == [(0, None), (10, None), (20, None), (30, None)]
    assert pool.size == 2
    pool.close()


@pytest.mark.parametrize("exc", [ValueError("bad"), SystemExit(1), KeyboardInterrupt()])
async def test_every_exception_is_reported_and_the_worker_survives(exc: BaseException) -> None:
    pool = HandlerThreads(max_threads=1)
    loop = asyncio.get_running_loop()
    outcomes: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()

    def report(result: Any, error: BaseException | None) -> None:
        outcomes.put_nowait((result, error))

    def fail() -> None:
        raise exc

    pool.submit(loop, report, fail)
    assert (await asyncio.wait_for(outcomes.get(), 5))[1] is exc
    pool.submit(loop, report, lambda: "still here")
    assert await asyncio.wait_for(outcomes.get(), 5) == ("still here", None)
    assert pool.size == 1
    pool.close()


def test_a_pool_needs_at_least_one_thread() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HandlerThreads(max_threads=0)
