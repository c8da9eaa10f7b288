"""A bounded-concurrency gate with a bounded wait queue (Knative's `Breaker`).

It enforces `containerConcurrency`: an instance never has more than `capacity` requests in
flight; further callers wait in FIFO order for a slot until their deadline
(`InvocationTimeout`, 504), and when `queue_depth` callers are already waiting a new one is
refused at once with the sentinel `QueueFull` (503), rather than piling up unboundedly.

Concurrency model: everything runs on the gateway's one event loop, so the counters need
no lock; what needs care is the hand-off between `release` and a waiter. `release` never
lets a slot go free while someone waits: it passes the slot to the oldest waiter by
resolving its future, so a newcomer cannot overtake the queue. If that waiter is cancelled
(client disconnected, deadline) after its future was resolved but before it resumed, it
owns a slot it will never use; `acquire` detects exactly that case and releases the slot
again, so no cancellation, timeout or error path leaks one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

from kubefaas_gateway.errors import InvocationTimeout, NoCapacity

# Waiters per instance before `QueueFull`: enough that a burst queues rather than fails
# while the autoscaler adds instances, bounded so memory is.
DEFAULT_QUEUE_DEPTH: Final = 10_000


class QueueFull(NoCapacity):
    """The breaker's wait queue is full: no slot, and no room to wait for one (503)."""


class Breaker:
    """At most `capacity` holders at a time; at most `queue_depth` waiters.

    `acquire(deadline=...)` takes a slot, waiting until `deadline` (seconds on `clock`,
    epoch seconds by default, like every invocation deadline in the gateway); `release()`
    gives it back. `slot(deadline)` pairs the two for `async with`.
    """

    __slots__ = ("_capacity", "_clock", "_in_flight", "_queue_depth", "_waiters")

    def __init__(
        self,
        *,
        capacity: int,
        queue_depth: int = DEFAULT_QUEUE_DEPTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if queue_depth < 0:
            raise ValueError(f"queue_depth must not be negative, got {queue_depth}")
        self._capacity = capacity
        self._queue_depth = queue_depth
        self._clock = clock
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_flight(self) -> int:
        """Slots held now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers queued for a slot now."""
        return len(self._waiters)

    async def acquire(self, *, deadline: float) -> None:
        """Take a slot, waiting in FIFO order until `deadline` at the latest.

        Raises `QueueFull` at once when the queue is full and `InvocationTimeout` when the
        deadline passes first; either way the caller holds no slot.
        """
        if self._in_flight < self._capacity and not self._waiters:
            self._in_flight += 1
            return
        if len(self._waiters) >= self._queue_depth:
            raise QueueFull(
                f"{self._in_flight} requests in flight and {len(self._waiters)} waiting: "
                "no room to queue"
            )
        timeout = deadline - self._clock()
        if timeout <= 0:
            raise InvocationTimeout("the deadline passed before a slot became free")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            # The slot arrives through the future, already counted in `_in_flight`.
            async with asyncio.timeout_at(loop.time() + timeout):
                await waiter
        except TimeoutError:
            self._abandon(waiter)
            raise InvocationTimeout(
                f"waited {timeout:.3f} s for a free slot ({self._capacity} per instance)"
            ) from None
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest live waiter if any, else to the free pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; `_in_flight` stays
                return
        if self._in_flight <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self._in_flight -= 1

    @asynccontextmanager
    async def slot(self, *, deadline: float) -> AsyncIterator[None]:
        """`async with breaker.slot(deadline=...)`: hold a slot for the block."""
        await self.acquire(deadline=deadline)
        try:
            yield
        finally:
            self.release()

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        """The caller stops waiting (deadline or cancellation); it must end with no slot."""
        if waiter.done() and not waiter.cancelled():
            # `release` handed this waiter a slot in the same loop iteration that it gave
            # up: pass the slot on rather than lose it.
            self.release()
            return
        waiter.cancel()
        # Not yet popped by `release` (it only pops futures it resolves or finds done).
        # `remove` is linear, but in C: ~50 µs even with a full 10 000-deep queue.
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)


class InstanceBreakers:
    """One `Breaker` per instance, for functions with `containerConcurrency > 0`.

    Breakers are created on first use and dropped as soon as they are idle (nothing held,
    nobody waiting), so instances that come and go leave nothing behind. `load` is what a
    balancer should compare: requests holding a slot plus requests queued for one, so a
    queue builds evenly across instances instead of behind the first one.
    """

    __slots__ = ("_breakers", "_clock", "_queue_depth")

    def __init__(
        self, *, queue_depth: int = DEFAULT_QUEUE_DEPTH, clock: Callable[[], float] = time.time
    ) -> None:
        if queue_depth < 0:
            raise ValueError(f"queue_depth must not be negative, got {queue_depth}")
        self._queue_depth = queue_depth
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}

    def load(self, instance_id: str) -> int:
        """Slots held plus callers waiting at `instance_id`."""
        breaker = self._breakers.get(instance_id)
        return 0 if breaker is None else breaker.in_flight + breaker.waiting

    def __len__(self) -> int:
        return len(self._breakers)

    @asynccontextmanager
    async def slot(
        self,
        instance_id: str,
        *,
        capacity: int,
        deadline: float,
        waiting: AbstractAsyncContextManager[None] | None = None,
    ) -> AsyncIterator[None]:
        """Hold one of `capacity` slots of `instance_id` for the block.

        `waiting` is entered only around the wait itself (the gateway counts the caller
        as pending there, which the autoscaler reads as "needs capacity now").
        """
        breaker = self._breakers.get(instance_id)
        if breaker is None:
            breaker = self._breakers[instance_id] = Breaker(
                capacity=capacity, queue_depth=self._queue_depth, clock=self._clock
            )
        try:
            if waiting is None:
                await breaker.acquire(deadline=deadline)
            else:
                async with waiting:
                    await breaker.acquire(deadline=deadline)
        except BaseException:
            self._forget_if_idle(instance_id, breaker)
            raise
        try:
            yield
        finally:
            breaker.release()
            self._forget_if_idle(instance_id, breaker)

    def _forget_if_idle(self, instance_id: str, breaker: Breaker) -> None:
        # Idle: no coroutine holds or awaits this breaker, so a fresh one later is the same.
        idle = breaker.in_flight == 0 and breaker.waiting == 0
        if idle and self._breakers.get(instance_id) is breaker:
            del self._breakers[instance_id]
