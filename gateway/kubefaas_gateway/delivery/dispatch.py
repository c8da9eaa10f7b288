"""Async delivery: accept events into the durable queue and run them (docs/architecture.md,
"Asynchronous invocation").

`AsyncDelivery` is built by `create_app` and started in its lifespan. It owns the queue and
one dispatcher per function. A dispatcher leases an event only when one of the function's
async slots is free, so a flood of async events occupies at most
`min(maxScale * targetConcurrency, reservedConcurrency, async_concurrency_cap)` concurrent
executions of that function and cannot starve its synchronous callers.

The lease is `timeoutSeconds` + the deadline grace + a margin, so a live attempt always
ends before its lease does; a gateway that dies mid-way leaves the lease to expire and the
event runs again elsewhere (at-least-once). What one attempt does is `attempt.Attempts`;
who hears of the outcome is `notify.Notifier`.

Waking: an idle dispatcher costs nothing per function. It sleeps until this gateway
enqueues (or redrives) an event of its function, until a retry this gateway scheduled
becomes due, or at the latest for `async_poll_interval_seconds` (with jitter, so many
functions do not poll together): that slow poll is what finds events enqueued by other
gateway replicas into a shared Redis, retries they scheduled, and leases that ran out.

Events of a function that leaves the registry stay queued (they show in the queue
gauges) and run if it comes back, until they are older than any function's maximum event
age: then `orphans.dead_letter_deleted` dead-letters them (reason `function_deleted`).
The queue depths of each stats refresh go on the scaling-signals board.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping

import aiohttp

from kubefaas.api import Function
from kubefaas_gateway.delivery.attempt import Attempts
from kubefaas_gateway.delivery.notify import Notifier
from kubefaas_gateway.delivery.orphans import dead_letter_deleted
from kubefaas_gateway.delivery.quota import QueueQuota
from kubefaas_gateway.delivery.retention import DeadLetterRetention
from kubefaas_gateway.invoker import Invoker, new_invocation_id
from kubefaas_gateway.queue import (
    InvocationQueue,
    InvocationRecord,
    Lease,
    NewInvocation,
    QueueStats,
)
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.signals import ScalingSignals
from kubefaas_gateway.ssrf import CallbackGuard, parse_networks

log = logging.getLogger("kubefaas.gateway.async")

# Up to this share of the idle poll interval is shaved off at random per wait, so the
# dispatchers of many functions spread their polls instead of reading the queue together.
IDLE_POLL_JITTER = 0.2


class AsyncDelivery:
    """The queue plus its dispatchers, for one gateway process."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: FunctionRegistry,
        metrics: AsyncMetrics,
        queue: InvocationQueue,
        signals: ScalingSignals,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.queue = queue
        self.metrics = metrics
        self.quota = QueueQuota(
            per_function=settings.async_queue_max_per_function,
            total=settings.async_queue_max_total,
            registry=metrics.registry,
        )
        self.retention = DeadLetterRetention(
            queue=queue,
            registry=metrics.registry,
            max_age_seconds=settings.async_dead_letter_retention_seconds,
            max_per_function=settings.async_dead_letter_max_per_function,
        )
        self._signals = signals
        self._clock = clock
        self._rand = rand
        self.callback_guard = CallbackGuard(
            allowed=parse_networks(settings.callback_allowed_cidrs),
            blocked=parse_networks(settings.callback_blocked_cidrs),
        )
        self._notifier = Notifier(
            registry=registry,
            submit=self.submit,
            callback_timeout_seconds=settings.callback_timeout_seconds,
            guard=self.callback_guard,
        )
        self.attempts = Attempts(
            settings=settings,
            queue=queue,
            metrics=metrics,
            notifier=self._notifier,
            retry_scheduled=self._retry_scheduled,
            clock=clock,
            rand=rand,
        )
        self._dispatchers: dict[str, _Dispatcher] = {}
        # Dispatchers of functions that left the registry, until their attempts finish.
        self._retired: list[_Dispatcher] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_all = asyncio.Event()
        self.stats: tuple[QueueStats, ...] = ()
        # Why the last periodic read of the queue failed (None: it worked); /readyz says it.
        self.queue_error: str | None = None
        self.started = False
        self._opened = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, *, invoker: Invoker, session: aiohttp.ClientSession) -> None:
        """Open the store and start the dispatchers (called from the app's lifespan)."""
        await self.queue.open()
        self._opened = True
        self.attempts.invoker = invoker
        self._notifier.open(session)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._supervise(), name="async-supervisor"),
            loop.create_task(self._refresh_stats(), name="async-stats"),
            loop.create_task(self._sweep_records(), name="async-record-sweep"),
        ]
        self.started = True

    async def stop(self) -> None:
        """Stop leasing, let attempts under way finish (bounded), then close the store.

        An attempt cut off here is not lost: its lease expires and it runs again.
        """
        self.started = False
        if not self._opened:
            return
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        dispatchers = [*self._dispatchers.values(), *self._retired]
        self._dispatchers.clear()
        self._retired = []
        for dispatcher in dispatchers:
            dispatcher.stop_leasing()
        await asyncio.gather(
            *(d.drain(self.settings.shutdown_timeout_seconds) for d in dispatchers),
            return_exceptions=True,
        )
        await self._notifier.drain()
        self.attempts.invoker = None
        self._opened = False
        await self.queue.close()

    # -- accepting events -------------------------------------------------------------

    async def submit(
        self,
        fn: Function,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        query: str = "",
        callback_url: str | None = None,
        invocation_id: str | None = None,
    ) -> str:
        """Store an event durably and wake the function's dispatcher; returns its id.
        Over a queue quota it raises `QueueFull`/`QueueStorageFull`, storing nothing."""
        self.quota.check(fn.key)
        invocation = NewInvocation(
            id=invocation_id or new_invocation_id(),
            function=fn.key,
            body=body,
            headers=dict(headers or {}),
            query=query,
            callback_url=callback_url,
        )
        await self.queue.enqueue(invocation, now=self._clock())
        self.quota.added(fn.key)
        self.metrics.enqueue(fn.key)
        self.wake(fn.key)
        return invocation.id

    async def submit_once(
        self, fn: Function, body: bytes, *, invocation_id: str, headers: Mapping[str, str]
    ) -> bool:
        """Store an event under an idempotency key (`invocation_id`) unless it was stored
        before, here or by another replica; True when this call stored it."""
        invocation = NewInvocation(
            id=invocation_id, function=fn.key, body=body, headers=dict(headers)
        )
        stored = await self.queue.enqueue_once(invocation, now=self._clock())
        if stored:
            self.metrics.enqueue(fn.key)
            self.wake(fn.key)
        return stored

    def on_outcome(self, listener: Callable[[InvocationRecord], None]) -> None:
        """Call `listener` with the record of each invocation this gateway finishes
        (succeeded or dead-lettered)."""
        self._notifier.listeners.append(listener)

    def wake(self, key: str) -> None:
        """Something of `key` became due (enqueued or redriven): lease it now, not at the
        next poll."""
        dispatcher = self._dispatchers.get(key)
        if dispatcher is not None:
            dispatcher.wake.set()
        else:
            self._wake_all.set()

    def _retry_scheduled(self, key: str, at: float) -> None:
        dispatcher = self._dispatchers.get(key)
        if dispatcher is not None:
            dispatcher.due(at)

    # -- what a dispatcher asks ---------------------------------------------------------

    def concurrency(self, fn: Function) -> int:
        """Async slots of `fn` in this gateway."""
        scaling = fn.spec.scaling
        slots = min(
            scaling.max_scale * scaling.target_concurrency,
            self.settings.async_concurrency_cap,
        )
        if scaling.reserved_concurrency is not None:
            slots = min(slots, scaling.reserved_concurrency)
        return max(1, slots)  # reserved 0 still needs a slot to throttle and age events out

    def lease_seconds(self, fn: Function) -> float:
        return (
            fn.spec.timeout_seconds
            + self.settings.deadline_grace_seconds
            + self.settings.async_lease_margin_seconds
        )

    def idle_wait(self, next_due: float) -> float:
        """How long an idle dispatcher sleeps unless woken: the poll interval (jittered),
        or less when a retry it knows of is due sooner."""
        poll = self.settings.async_poll_interval_seconds
        poll *= 1 - IDLE_POLL_JITTER * self._rand()
        return max(0.0, min(poll, next_due - self._clock()))

    def now(self) -> float:
        return self._clock()

    # -- background loops -------------------------------------------------------------

    async def _supervise(self) -> None:
        """Keep one dispatcher per known function; functions come and go with the registry."""
        interval = self.settings.async_poll_interval_seconds
        while True:
            known = {fn.key for fn in self.registry}
            for key in known - self._dispatchers.keys():
                self._dispatchers[key] = _Dispatcher(self, key)
            for key in self._dispatchers.keys() - known:
                gone = self._dispatchers.pop(key)
                gone.stop_leasing()  # its queued events wait for the function to return
                self._retired.append(gone)
            self._retired = [d for d in self._retired if d.busy]
            self._wake_all.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_all.wait(), interval)

    async def _refresh_stats(self) -> None:
        while True:
            try:
                self.stats = tuple(await self.queue.stats(now=self._clock()))
                self.metrics.update_queue(self.stats)
                self.quota.update(self.stats)
                self.queue_error = None
                self._signals.publish_queue_depths({s.function: s.depth for s in self.stats})
                await dead_letter_deleted(
                    queue=self.queue,
                    stats=self.stats,
                    known={fn.key for fn in self.registry},
                    now=self._clock(),
                    metrics=self.metrics,
                )
            except Exception as exc:
                if self.queue_error is None:
                    log.exception("could not read async queue stats")
                self.queue_error = str(exc) or type(exc).__name__
            await asyncio.sleep(self.settings.async_stats_interval_seconds)

    async def _sweep_records(self) -> None:
        """Finished records past their TTL (SQLite; Redis expires them itself), then dead
        letters past their retention (`retention.py`)."""
        while True:
            try:
                purged = await self.queue.purge_expired(now=self._clock())
                if purged:
                    log.info("purged %d finished async invocation records past their TTL", purged)
                await self.retention.sweep(now=self._clock())
            except Exception:
                log.exception("could not purge expired async invocation records")
            await asyncio.sleep(self.settings.async_sweep_interval_seconds)


class _Dispatcher:
    """Leases events of one function while it has a free async slot."""

    def __init__(self, delivery: AsyncDelivery, key: str) -> None:
        self.delivery = delivery
        self.key = key
        self.wake = asyncio.Event()
        self.wake.set()
        self._next_due = math.inf  # earliest retry this gateway scheduled (epoch seconds)
        self._running: set[asyncio.Task[None]] = set()
        self._slots_free = asyncio.Event()
        self._slots_free.set()
        self._loop_task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"async-dispatch:{key}"
        )

    def due(self, at: float) -> None:
        """A retry of this function becomes due at `at`: be awake then."""
        if at < self._next_due:
            self._next_due = at
            self.wake.set()  # recompute the sleep with the earlier time

    def stop_leasing(self) -> None:
        self._loop_task.cancel()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    async def drain(self, grace_seconds: float) -> None:
        await asyncio.gather(self._loop_task, return_exceptions=True)
        if not self._running:
            return
        _, pending = await asyncio.wait(self._running, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _loop(self) -> None:
        delivery = self.delivery
        while True:
            fn = delivery.registry.get(self.key)
            if fn is None:
                return
            if len(self._running) >= delivery.concurrency(fn):
                self._slots_free.clear()
                await self._slots_free.wait()
                continue
            self.wake.clear()
            now = delivery.now()
            if self._next_due <= now:
                self._next_due = math.inf  # the lease below finds it
            try:
                lease = await delivery.queue.lease(
                    self.key, now=now, lease_seconds=delivery.lease_seconds(fn)
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not lease async events of %s; trying again", self.key)
                await asyncio.sleep(delivery.settings.async_poll_interval_seconds)
                continue
            if lease is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delivery.idle_wait(self._next_due))
                continue
            task = asyncio.get_running_loop().create_task(self._attempt(fn, lease))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots_free.set()

    async def _attempt(self, fn: Function, lease: Lease) -> None:
        try:
            await self.delivery.attempts.run(fn, lease)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The record stays running; its lease expires and the event is tried again.
            log.exception("async invocation %s could not be recorded", lease.id)
