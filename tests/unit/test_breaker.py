"""The containerConcurrency breaker: callers wait their turn, a full queue fails fast, and
no path (deadline, cancellation, error) leaks a slot."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubefaas_gateway.breaker import Breaker, InstanceBreakers, QueueFull
from kubefaas_gateway.errors import InvocationTimeout, error_response
from kubefaas_gateway.tracker import Tracker


def soon(seconds: float) -> float:
    return time.time() + seconds


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"capacity": 0}, "capacity"), ({"capacity": 1, "queue_depth": -1}, "queue_depth")],
)
def test_bad_parameters_are_refused_naming_the_parameter(
    kwargs: dict[str, int], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        Breaker(**kwargs)


async def test_free_slots_are_taken_without_waiting() -> None:
    breaker = Breaker(capacity=2)
    await breaker.acquire(deadline=soon(1))
    await breaker.acquire(deadline=soon(1))
    assert breaker.in_flight == 2
    assert breaker.waiting == 0


async def test_waiter_gives_up_at_its_deadline_with_a_504_holding_nothing() -> None:
    breaker = Breaker(capacity=1)
    await breaker.acquire(deadline=soon(1))
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as caught:
        await breaker.acquire(deadline=soon(0.1))
    waited = time.monotonic() - started
    assert 0.09 <= waited < 1.0
    assert error_response(caught.value, "id")[0] == 504
    assert breaker.waiting == 0
    breaker.release()
    assert breaker.in_flight == 0


async def test_release_wakes_the_oldest_waiter_first() -> None:
    breaker = Breaker(capacity=1)
    await breaker.acquire(deadline=soon(5))
    order: list[int] = []

    async def caller(n: int) -> None:
        await breaker.acquire(deadline=soon(5))
        order.append(n)
        await asyncio.sleep(0)
        breaker.release()

    tasks = [asyncio.create_task(caller(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    assert breaker.waiting == 3
    assert order == []
    breaker.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert breaker.in_flight == 0


async def test_newcomer_cannot_overtake_the_queue() -> None:
    breaker = Breaker(capacity=1)
    await breaker.acquire(deadline=soon(5))
    queued = asyncio.create_task(breaker.acquire(deadline=soon(5)))
    await asyncio.sleep(0)
    breaker.release()  # the slot goes to `queued`, not to whoever asks next
    with pytest.raises(InvocationTimeout):
        await breaker.acquire(deadline=soon(0.05))
    await queued
    assert breaker.in_flight == 1


async def test_full_queue_is_refused_at_once_with_a_503() -> None:
    breaker = Breaker(capacity=1, queue_depth=1)
    await breaker.acquire(deadline=soon(5))
    waiting = asyncio.create_task(breaker.acquire(deadline=soon(5)))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(QueueFull) as caught:
        await breaker.acquire(deadline=soon(5))
    assert time.monotonic() - started < 0.05
    assert error_response(caught.value, "id")[0] == 503
    breaker.release()
    await waiting


async def test_cancelled_waiter_leaves_the_queue() -> None:
    breaker = Breaker(capacity=1)
    await breaker.acquire(deadline=soon(5))
    waiter = asyncio.create_task(breaker.acquire(deadline=soon(5)))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert breaker.waiting == 0
    breaker.release()
    assert breaker.in_flight == 0


async def test_slot_handed_to_a_waiter_cancelled_in_the_same_instant_is_not_lost() -> None:
    breaker = Breaker(capacity=1)
    await breaker.acquire(deadline=soon(5))
    waiter = asyncio.create_task(breaker.acquire(deadline=soon(5)))
    await asyncio.sleep(0)
    breaker.release()  # resolves the waiter's future ...
    waiter.cancel()  # ... and the client disconnects before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert breaker.in_flight == 0
    await breaker.acquire(deadline=soon(0.05))  # the slot is still usable


async def test_slot_context_releases_on_error() -> None:
    breaker = Breaker(capacity=1)
    with pytest.raises(RuntimeError, match="handler"):
        async with breaker.slot(deadline=soon(1)):
            raise RuntimeError("handler blew up")
    assert breaker.in_flight == 0


def test_release_without_acquire_is_a_bug_caught_loudly() -> None:
    with pytest.raises(RuntimeError, match="without a matching"):
        Breaker(capacity=1).release()


# One caller: (delay before arriving, seconds it holds the slot, its wait budget,
# whether it is cancelled and when, whether its work raises).
_caller = st.tuples(
    st.sampled_from([0.0, 0.001, 0.003]),
    st.sampled_from([0.0, 0.002, 0.005]),
    st.sampled_from([0.0, 0.002, 0.01, 1.0]),
    st.one_of(st.none(), st.sampled_from([0.0, 0.001, 0.004])),
    st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.integers(min_value=1, max_value=3),
    queue_depth=st.integers(min_value=0, max_value=4),
    callers=st.lists(_caller, min_size=1, max_size=12),
)
def test_no_slot_leaks_and_capacity_holds_whatever_happens(
    capacity: int,
    queue_depth: int,
    callers: list[tuple[float, float, float, float | None, bool]],
) -> None:
    async def scenario() -> None:
        breaker = Breaker(capacity=capacity, queue_depth=queue_depth)
        holding = 0
        peak = 0

        async def call(hold: float, budget: float, fails: bool) -> None:
            nonlocal holding, peak
            async with breaker.slot(deadline=time.time() + budget):
                holding += 1
                peak = max(peak, holding)
                try:
                    await asyncio.sleep(hold)
                    if fails:
                        raise ValueError("handler error")
                finally:
                    holding -= 1

        async def arrive(delay: float, hold: float, budget: float, fails: bool) -> None:
            await asyncio.sleep(delay)
            await call(hold, budget, fails)

        tasks = []
        for delay, hold, budget, cancel_after, fails in callers:
            task = asyncio.create_task(arrive(delay, hold, budget, fails))
            tasks.append(task)
            if cancel_after is not None:
                asyncio.get_running_loop().call_later(cancel_after, task.cancel)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            assert result is None or isinstance(
                result, ValueError | InvocationTimeout | QueueFull | asyncio.CancelledError
            )
        assert peak <= capacity
        assert breaker.in_flight == 0
        assert breaker.waiting == 0

    asyncio.run(scenario())


async def test_instance_breakers_count_waiters_in_the_load_and_forget_idle_instances() -> None:
    breakers = InstanceBreakers()
    entered = asyncio.Event()
    finish = asyncio.Event()
    pending = 0

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[None]:
        nonlocal pending
        pending += 1
        try:
            yield
        finally:
            pending -= 1

    async def call() -> None:
        async with breakers.slot("i-1", capacity=1, deadline=soon(5), waiting=counted()):
            entered.set()
            await finish.wait()

    first = asyncio.create_task(call())
    await entered.wait()
    second = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    assert breakers.load("i-1") == 2  # one holding, one queued behind it
    assert breakers.load("i-2") == 0
    assert pending == 1  # only the caller actually waiting counts as pending
    finish.set()
    await asyncio.gather(first, second)
    assert pending == 0
    assert breakers.load("i-1") == 0
    assert len(breakers) == 0


async def test_instance_breakers_forget_a_breaker_whose_only_waiter_gave_up() -> None:
    breakers = InstanceBreakers()
    hold = asyncio.Event()

    async def holder() -> None:
        async with breakers.slot("i-1", capacity=1, deadline=soon(5)):
            await hold.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0)
    with pytest.raises(InvocationTimeout):
        async with breakers.slot("i-1", capacity=1, deadline=soon(0.02)):
            pytest.fail("must not get the slot")
    hold.set()
    await task
    assert len(breakers) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(callers=st.lists(_caller, min_size=1, max_size=10))
def test_invoke_path_slot_and_tracker_counts_never_leak(
    callers: list[tuple[float, float, float, float | None, bool]],
) -> None:
    """The composition the invoker uses: wait for a slot counted as pending, then run
    counted as in flight; whatever ends each call, every count returns to zero."""

    async def scenario() -> None:
        tracker = Tracker()
        breakers = InstanceBreakers(queue_depth=3)
        key = "default/fn"

        async def call(delay: float, hold: float, budget: float, fails: bool) -> None:
            await asyncio.sleep(delay)
            async with (
                breakers.slot(
                    "i-1",
                    capacity=1,
                    deadline=time.time() + budget,
                    waiting=tracker.hold(key),
                ),
                tracker.track(key, "i-1"),
            ):
                assert tracker.inflight(key) <= 1
                await asyncio.sleep(hold)
                if fails:
                    raise ValueError("handler error")

        tasks = []
        for delay, hold, budget, cancel_after, fails in callers:
            task = asyncio.create_task(call(delay, hold, budget, fails))
            tasks.append(task)
            if cancel_after is not None:
                asyncio.get_running_loop().call_later(cancel_after, task.cancel)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert tracker.inflight(key) == 0
        assert tracker.pending(key) == 0
        assert tracker.instance_inflight("i-1") == 0
        assert len(breakers) == 0

    asyncio.run(scenario())
