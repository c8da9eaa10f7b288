"""The tracker's counts go up inside `track`/`hold` and always come back down: after
success, error, timeout and cancellation alike, so concurrency and autoscaling figures
can never drift."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubefaas_gateway.tracker import Tracker


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_counts_rise_inside_and_fall_after() -> None:
    tracker = Tracker()
    async with tracker.track("default/hello", "a"):
        assert tracker.inflight("default/hello") == 1
        assert tracker.instance_inflight("a") == 1
        async with tracker.track("default/hello", "b"):
            assert tracker.inflight("default/hello") == 2
            assert tracker.instance_inflight("b") == 1
            assert tracker.concurrency("default/hello") == 2
    assert tracker.inflight("default/hello") == 0
    assert tracker.instance_inflight("a") == 0
    assert tracker.instance_inflight("b") == 0


async def test_pending_and_inflight_are_separate_and_add_up_to_concurrency() -> None:
    tracker = Tracker()
    async with tracker.hold("ns/f"):
        assert tracker.pending("ns/f") == 1
        assert tracker.inflight("ns/f") == 0
        async with tracker.track("ns/f", "i"):
            assert tracker.concurrency("ns/f") == 2
    assert tracker.load("ns/f").concurrency == 0


async def test_an_error_inside_does_not_leak_a_count() -> None:
    tracker = Tracker()
    with pytest.raises(RuntimeError):
        async with tracker.track("ns/f", "i"):
            raise RuntimeError("handler blew up")
    with pytest.raises(RuntimeError):
        async with tracker.hold("ns/f"):
            raise RuntimeError("activation failed")
    assert tracker.concurrency("ns/f") == 0
    assert tracker.instance_inflight("i") == 0


async def test_a_timeout_inside_does_not_leak_a_count() -> None:
    tracker = Tracker()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01), tracker.track("ns/f", "i"):
            await asyncio.sleep(10)
    assert tracker.inflight("ns/f") == 0


async def test_cancelling_a_waiting_request_does_not_leak_a_count() -> None:
    tracker = Tracker()
    inside = asyncio.Event()

    async def request() -> None:
        async with tracker.hold("ns/f"), tracker.track("ns/f", "i"):
            inside.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(request())
    await inside.wait()
    assert tracker.concurrency("ns/f") == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tracker.concurrency("ns/f") == 0
    assert tracker.instance_inflight("i") == 0


async def test_last_active_follows_the_injected_clock() -> None:
    clock = FakeClock()
    tracker = Tracker(clock=clock)
    assert tracker.last_active("ns/f") is None
    async with tracker.track("ns/f", "i"):
        clock.now = 130.0
    assert tracker.last_active("ns/f") == 130.0
    assert tracker.snapshot()["ns/f"].last_active == 130.0


Outcome = st.sampled_from(["ok", "error", "timeout", "cancel"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(
        st.tuples(Outcome, st.sampled_from(["f/a", "f/b"]), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=25,
    )
)
def test_no_mix_of_outcomes_leaks_a_count(plan: list[tuple[str, str, int, bool]]) -> None:
    """Random concurrent requests that succeed, raise, time out or get cancelled, some
    while pending and some while in flight: every count returns to zero, and no count
    ever exceeds the requests actually inside."""

    async def scenario() -> None:
        tracker = Tracker()
        peak = 0

        async def request(outcome: str, key: str, delay_ms: int, stall_pending: bool) -> None:
            nonlocal peak
            async with tracker.hold(key):
                if stall_pending:
                    await asyncio.sleep(delay_ms / 1000)
            async with tracker.track(key, f"{key}#{delay_ms % 2}"):
                peak = max(peak, tracker.concurrency("f/a") + tracker.concurrency("f/b"))
                if outcome == "error":
                    raise ValueError("handler error")
                if outcome == "timeout":
                    async with asyncio.timeout(delay_ms / 1000):
                        await asyncio.sleep(1)
                await asyncio.sleep(delay_ms / 1000 if outcome != "cancel" else 1)

        tasks = [asyncio.create_task(request(*step)) for step in plan]
        await asyncio.sleep(0.002)
        for task, (outcome, *_rest) in zip(tasks, plan, strict=True):
            if outcome == "cancel":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= len(plan)
        for key in ("f/a", "f/b"):
            assert tracker.inflight(key) == 0
            assert tracker.pending(key) == 0
            for slot in (0, 1):
                assert tracker.instance_inflight(f"{key}#{slot}") == 0

    asyncio.run(scenario())
