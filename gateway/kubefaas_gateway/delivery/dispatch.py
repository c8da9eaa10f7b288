"""Async delivery: accept events into the durable queue and run them (DESIGN §7).

`AsyncDelivery` is built by `create_app` and started in its lifespan. It owns the queue and
one dispatcher per function. A dispatcher leases an event only when one of the function's
async slots is free, so a flood of async events occupies at most
`min(maxScale * targetConcurrency, reservedConcurrency, async_concurrency_cap)` concurrent
executions of that function and cannot starve its synchronous callers.

Each event runs through the gateway's `Invoker` (the same code as a sync call: activation
from zero, concurrency tracking, error mapping, metrics) with `X-Invocation-Type: async`,
`X-Attempt` counting from 1 in the current attempt series, and a deadline of the
function's `timeoutSeconds`. The lease is `timeoutSeconds` + the deadline grace + a
margin, so a live attempt always ends before its lease does; a gateway that dies mid-way
leaves the lease to expire and the event runs again elsewhere (at-least-once).

The outcome is recorded, then: success -> complete; failure -> `kubefaas.retry.decide`
says retry at T or dead-letter. On the final outcome (success or dead letter) the caller's
`X-Callback-Url` and the function's `onSuccess`/`onFailure` destination are notified,
best-effort and after the record is stored, so a failed callback never loses the record.
A function destination is enqueued as a new async invocation; a crash between storing the
outcome and notifying can lose that notification (not the record): destinations are
at-most-once, the event itself at-least-once.

Events of a function that leaves the registry stay queued (they show in the queue
gauges) and run if it comes back; they are not dead-lettered behind the user's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from kubefaas.api import Destination, Function
from kubefaas.retry import DeadLetter, DeadReason, FailureKind, RetryPolicy, decide, is_expired
from kubefaas_gateway.errors import (
    FunctionFailed,
    FunctionTimedOut,
    InvocationError,
    InvocationTimeout,
    NoCapacity,
    Throttled,
)
from kubefaas_gateway.invoker import InvocationRequest, InvocationResponse, Invoker
from kubefaas_gateway.queue import (
    AttemptError,
    InvocationQueue,
    InvocationRecord,
    Lease,
    NewInvocation,
    QueueStats,
)
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.tracker import Tracker

log = logging.getLogger("kubefaas.gateway.async")

# Callbacks and URL destinations: a few tries, then a log line (the record is already kept).
DELIVERY_BACKOFF_SECONDS = (0.5, 1.0, 2.0)
# Longest stack trace kept per attempt: records hold every attempt's error.
STACK_TRACE_MAX_LINES = 50
# Finished records are swept this often (SQLite; Redis expires them itself).
RECORD_SWEEP_INTERVAL_SECONDS = 60.0
# How long stop() lets pending callbacks finish before cancelling them.
CALLBACK_DRAIN_SECONDS = 2.0


def classify(error: BaseException) -> FailureKind:
    """Which retry schedule a failed attempt follows.

    A 502 carrying the function's own error report (it raised, or its instance crashed) and
    a handler running past its timeout are function errors. Throttling and the platform's
    own failures (a 5xx without the function's report, no capacity, no instance before the
    deadline, connection failures) are not the event's fault, so they back off until the
    event's maximum age.
    """
    if isinstance(error, Throttled):
        return FailureKind.THROTTLED
    if isinstance(error, FunctionTimedOut):
        # The handler had the event and ran out of time: the event's (or code's) fault.
        return FailureKind.FUNCTION_ERROR
    if isinstance(error, FunctionFailed):
        return FailureKind.FUNCTION_ERROR if error.error_type else FailureKind.SERVER_ERROR
    if isinstance(error, NoCapacity | InvocationTimeout):
        return FailureKind.UNAVAILABLE
    return FailureKind.SERVER_ERROR


def attempt_error(error: BaseException) -> AttemptError:
    kind = classify(error).value
    if isinstance(error, InvocationError):
        details = dict(error.details())
        trace = details.get("stackTrace")
        if isinstance(trace, list) and len(trace) > STACK_TRACE_MAX_LINES:
            details["stackTrace"] = trace[-STACK_TRACE_MAX_LINES:]
        return AttemptError(
            kind=kind,
            type=error.type,
            message=error.message,
            status_code=error.status,
            details=details,
        )
    return AttemptError(kind=kind, type="InternalError", message="internal gateway error")


def decode_payload(body: bytes, content_type: str | None = None) -> Any:
    """A body as the record and destinations show it: JSON when it parses, else text."""
    if not body:
        return None
    if content_type is None or "json" in content_type.lower():
        try:
            return json.loads(body)
        except ValueError:
            pass
    return body.decode("utf-8", "replace")


@dataclass(frozen=True)
class _Final:
    """What the notifications of a finished invocation need to say."""

    fn: Function
    lease: Lease
    record: InvocationRecord
    succeeded: bool
    response: InvocationResponse | None = None
    condition: str = "Success"


class AsyncDelivery:
    """The queue plus its workers, for one gateway process."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: FunctionRegistry,
        tracker: Tracker,
        metrics: AsyncMetrics,
        queue: InvocationQueue,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.queue = queue
        self.metrics = metrics
        self._tracker = tracker
        self._clock = clock
        self._rand = rand
        self._invoker: Invoker | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dispatchers: dict[str, _Dispatcher] = {}
        # Dispatchers of functions that left the registry, until their attempts finish.
        self._retired: list[_Dispatcher] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._notifications: set[asyncio.Task[None]] = set()
        self._wake_all = asyncio.Event()
        self.stats: tuple[QueueStats, ...] = ()
        self.started = False
        self._opened = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, *, invoker: Invoker, session: aiohttp.ClientSession) -> None:
        """Open the store and start the workers (called from the app's lifespan)."""
        await self.queue.open()
        self._opened = True
        self._invoker = invoker
        self._session = session
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
        if self._notifications:
            _, pending = await asyncio.wait(self._notifications, timeout=CALLBACK_DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._invoker = None
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
        """Store an event durably and wake the function's dispatcher; returns its id."""
        invocation = NewInvocation(
            id=invocation_id or str(uuid.uuid4()),
            function=fn.key,
            body=body,
            headers=dict(headers or {}),
            query=query,
            callback_url=callback_url,
        )
        await self.queue.enqueue(invocation, now=self._clock())
        self.metrics.enqueue(fn.key)
        self.wake(fn.key)
        return invocation.id

    def queue_depths(self) -> dict[str, int]:
        """Events waiting per function, from the last stats refresh: a scaling signal that
        costs no I/O to read (`Metrics.queue_depths`, `/internal/stats`, the autoscaler)."""
        return {stats.function: stats.depth for stats in self.stats}

    def wake(self, key: str) -> None:
        """Something of `key` became due (enqueued or redriven): lease it now, not at the
        next poll."""
        dispatcher = self._dispatchers.get(key)
        if dispatcher is not None:
            dispatcher.wake.set()
        else:
            self._wake_all.set()

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
            except Exception:
                log.exception("could not read async queue stats")
            await asyncio.sleep(self.settings.async_stats_interval_seconds)

    async def _sweep_records(self) -> None:
        while True:
            try:
                purged = await self.queue.purge_expired(now=self._clock())
                if purged:
                    log.info("purged %d finished async invocation records past their TTL", purged)
            except Exception:
                log.exception("could not purge expired async invocation records")
            await asyncio.sleep(RECORD_SWEEP_INTERVAL_SECONDS)

    # -- one attempt ------------------------------------------------------------------

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

    def policy(self, fn: Function) -> RetryPolicy:
        return RetryPolicy.for_function(
            fn.spec.async_,
            function_error_base_seconds=self.settings.async_retry_base_seconds,
            backoff_initial_seconds=self.settings.async_backoff_initial_seconds,
            backoff_max_seconds=self.settings.async_backoff_max_seconds,
            jitter=self.settings.async_retry_jitter,
        )

    async def run(self, fn: Function, lease: Lease) -> None:
        """Attempt one leased event and record what happened."""
        policy = self.policy(fn)
        now = self._clock()
        if is_expired(enqueued_at=lease.series_started_at, now=now, policy=policy):
            decision = DeadLetter(
                DeadReason.EVENT_AGE_EXCEEDED,
                f"event is {now - lease.series_started_at:.0f} s old, past "
                f"maxEventAgeSeconds={policy.max_event_age_seconds:g}; not attempted",
            )
            error = AttemptError(kind="expired", type="EventAgeExceeded", message=decision.message)
            await self._dead_letter(fn, lease, error, decision, expired=True)
            return

        invoker = self._invoker
        if invoker is None:
            return  # stopping: the lease expires and the event runs again
        request = InvocationRequest(
            method="POST",
            path="/",
            query=lease.query,
            headers=list(lease.headers.items()),
            body=lease.body,
            invocation_id=lease.id,
            deadline=now + fn.spec.timeout_seconds,
            invocation_type="async",
            attempt=lease.attempt_in_series,
        )
        try:
            reserved = fn.spec.scaling.reserved_concurrency
            if reserved is not None and self._tracker.concurrency(fn.key) >= reserved:
                raise Throttled(f"function {fn.key} is at its reserved concurrency ({reserved})")
            response = await invoker.invoke(fn, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, InvocationError):
                log.exception("async invocation %s failed inside the gateway", lease.id)
            await self._failed(fn, lease, attempt_error(exc), policy)
            return

        result = decode_payload(response.body, response.header("content-type"))
        record = await self.queue.complete(lease, now=self._clock(), result=result)
        self.metrics.attempt(fn.key, "succeeded")
        if record is None:
            log.warning("async invocation %s finished after its lease was taken over", lease.id)
            return
        self._notify(_Final(fn, lease, record, succeeded=True, response=response))

    async def _failed(
        self, fn: Function, lease: Lease, error: AttemptError, policy: RetryPolicy
    ) -> None:
        self.metrics.attempt(fn.key, error.kind)
        kinds = {kind.value for kind in FailureKind}
        failures = [
            FailureKind(a.error["kind"])
            for a in lease.previous
            if a.status == "failed" and a.error and a.error.get("kind") in kinds
        ]
        failures.append(FailureKind(error.kind))
        now = self._clock()
        decision = decide(
            failures=failures,
            enqueued_at=lease.series_started_at,
            now=now,
            policy=policy,
            random=self._rand,
        )
        if isinstance(decision, DeadLetter):
            await self._dead_letter(fn, lease, error, decision)
            return
        if await self.queue.retry(lease, now=now, error=error, at=decision.at):
            self.metrics.retry(fn.key)
            log.info(
                "async invocation %s of %s failed (%s: %s); retry in %.1f s",
                lease.id,
                fn.key,
                error.kind,
                error.message,
                decision.delay,
            )

    async def _dead_letter(
        self,
        fn: Function,
        lease: Lease,
        error: AttemptError,
        decision: DeadLetter,
        *,
        expired: bool = False,
    ) -> None:
        record = await self.queue.dead_letter(
            lease,
            now=self._clock(),
            error=error,
            reason=decision.reason.value,
            message=decision.message,
            expired=expired,
        )
        if record is None:
            return
        self.metrics.dead_letter(fn.key, decision.reason.value)
        log.warning(
            "async invocation %s of %s dead-lettered: %s", lease.id, fn.key, decision.message
        )
        condition = (
            "EventAgeExceeded"
            if decision.reason is DeadReason.EVENT_AGE_EXCEEDED
            else "RetriesExhausted"
        )
        self._notify(_Final(fn, lease, record, succeeded=False, condition=condition))

    # -- notifications ----------------------------------------------------------------

    def _notify(self, final: _Final) -> None:
        config = final.fn.spec.async_
        destination = config.on_success if final.succeeded else config.on_failure
        if final.lease.callback_url is None and destination is None:
            return
        task = asyncio.get_running_loop().create_task(self._notify_all(final, destination))
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def _notify_all(self, final: _Final, destination: Destination | None) -> None:
        try:
            await self._deliver(final, destination)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("notifications for async invocation %s failed", final.record.id)

    async def _deliver(self, final: _Final, destination: Destination | None) -> None:
        status = "succeeded" if final.succeeded else "failed"
        headers = {"X-Invocation-Id": final.record.id, "X-Function-Status": status}
        if final.lease.callback_url:
            if final.succeeded and final.response is not None:
                body = final.response.body
                content_type = final.response.header("content-type") or "application/json"
            else:
                body = json.dumps(_failure_report(final.record)).encode()
                content_type = "application/json"
            await self._post(
                final.lease.callback_url,
                body,
                {**headers, "Content-Type": content_type},
                what="callback",
                invocation_id=final.record.id,
            )
        if destination is None:
            return
        payload = self._destination_payload(final)
        if destination.url is not None:
            await self._post(
                destination.url,
                json.dumps(payload).encode(),
                {**headers, "Content-Type": "application/json"},
                what="destination",
                invocation_id=final.record.id,
            )
        elif destination.function is not None:
            key = f"{final.fn.namespace}/{destination.function}"
            target = self.registry.get(key)
            if target is None:
                log.error(
                    "destination function %s of %s does not exist; invocation %s not passed on",
                    key,
                    final.fn.key,
                    final.record.id,
                )
                return
            new_id = await self.submit(
                target,
                json.dumps(payload).encode(),
                headers={"content-type": "application/json"},
            )
            log.info("invocation %s passed to %s as %s", final.record.id, key, new_id)

    def _destination_payload(self, final: _Final) -> dict[str, Any]:
        """Lambda's destination record: what was asked, what came back, and how it ended."""
        record = final.record
        response: Any
        if final.succeeded and final.response is not None:
            response = decode_payload(final.response.body, final.response.header("content-type"))
            context: dict[str, Any] = {"statusCode": final.response.status}
        else:
            response = record.error
            context = {"functionError": (record.error or {}).get("type")}
        return {
            "version": "1.0",
            "timestamp": record.updated_at,
            "requestContext": {
                "requestId": record.id,
                "function": record.function,
                "condition": final.condition,
                "approximateInvokeCount": len(record.attempts),
            },
            "requestPayload": decode_payload(
                final.lease.body, final.lease.headers.get("content-type")
            ),
            "responseContext": context,
            "responsePayload": response,
        }

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], *, what: str, invocation_id: str
    ) -> None:
        session = self._session
        if session is None:
            return
        timeout = aiohttp.ClientTimeout(total=self.settings.callback_timeout_seconds)
        problem = ""
        for attempt, pause in enumerate((*DELIVERY_BACKOFF_SECONDS, None), start=1):
            try:
                async with session.post(url, data=body, headers=headers, timeout=timeout) as reply:
                    await reply.read()
                    if reply.status < 400:
                        return
                    problem = f"status {reply.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            if pause is None:
                break
            log.info("%s for %s to %s failed (attempt %d: %s)", what, invocation_id, url,
                     attempt, problem)  # fmt: skip
            await asyncio.sleep(pause)
        log.error(
            "%s for invocation %s to %s not delivered after %d tries: %s (the record is kept)",
            what,
            invocation_id,
            url,
            len(DELIVERY_BACKOFF_SECONDS) + 1,
            problem,
        )


def _failure_report(record: InvocationRecord) -> dict[str, Any]:
    data = record.to_json()
    return {
        "invocationId": record.id,
        "status": record.status,
        "error": record.error,
        "deadLetter": data.get("deadLetter"),
        "attempts": data["attempts"],
    }


class _Dispatcher:
    """Leases events of one function while it has a free async slot."""

    def __init__(self, delivery: AsyncDelivery, key: str) -> None:
        self.delivery = delivery
        self.key = key
        self.wake = asyncio.Event()
        self.wake.set()
        self._running: set[asyncio.Task[None]] = set()
        self._slots_free = asyncio.Event()
        self._slots_free.set()
        self._loop_task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"async-dispatch:{key}"
        )

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
        interval = delivery.settings.async_poll_interval_seconds
        while True:
            fn = delivery.registry.get(self.key)
            if fn is None:
                return
            if len(self._running) >= delivery.concurrency(fn):
                self._slots_free.clear()
                await self._slots_free.wait()
                continue
            self.wake.clear()
            try:
                lease = await delivery.queue.lease(
                    self.key, now=delivery._clock(), lease_seconds=delivery.lease_seconds(fn)
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not lease async events of %s; trying again", self.key)
                await asyncio.sleep(interval)
                continue
            if lease is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), interval)
                continue
            task = asyncio.get_running_loop().create_task(self._attempt(fn, lease))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots_free.set()

    async def _attempt(self, fn: Function, lease: Lease) -> None:
        try:
            await self.delivery.run(fn, lease)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The record stays running; its lease expires and the event is tried again.
            log.exception("async invocation %s could not be recorded", lease.id)
