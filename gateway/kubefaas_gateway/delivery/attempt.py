"""One attempt of one leased async event, and what its outcome means for the event.

Each event runs through the gateway's `Invoker` (the same code as a sync call: activation
from zero, concurrency tracking, reserved-concurrency throttling, error mapping, metrics)
as `InvocationRequest.event`: `X-Invocation-Type: async`, `X-Attempt` counting from 1 in
the current attempt series, and a deadline of the function's `timeoutSeconds`.

The outcome is recorded, then: success -> complete; failure -> `classify` says which
retry schedule applies and `kubefaas.retry.decide` says retry at T or dead-letter; an
event already past its maximum age is dead-lettered without an attempt
(`kubefaas.retry.age_exceeded`). Final outcomes go to the `Notifier`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final as Constant

from kubefaas.api import Function
from kubefaas.retry import (
    DeadLetter,
    DeadReason,
    FailureKind,
    RetryPolicy,
    age_exceeded,
    decide,
    is_expired,
)
from kubefaas_gateway.delivery.notify import Final, Notifier, decode_payload
from kubefaas_gateway.errors import (
    FunctionFailed,
    FunctionTimedOut,
    InvocationError,
    InvocationTimeout,
    NoCapacity,
    Throttled,
)
from kubefaas_gateway.invoker import InvocationRequest, Invoker
from kubefaas_gateway.queue import AttemptError, InvocationQueue, Lease
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics
from kubefaas_gateway.settings import Settings

log = logging.getLogger("kubefaas.gateway.async")

# Longest stack trace kept per attempt: records hold every attempt's error.
STACK_TRACE_MAX_LINES: Constant = 50

# When a retry scheduled by this gateway becomes due: (function key, epoch seconds).
RetryScheduled = Callable[[str, float], None]


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
    """What the record keeps of a failed attempt (stack traces cut to their last lines)."""
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


def retry_policy(fn: Function, settings: Settings) -> RetryPolicy:
    return RetryPolicy.for_function(
        fn.spec.async_,
        function_error_base_seconds=settings.async_retry_base_seconds,
        backoff_initial_seconds=settings.async_backoff_initial_seconds,
        backoff_max_seconds=settings.async_backoff_max_seconds,
        jitter=settings.async_retry_jitter,
    )


class Attempts:
    """Runs leased events and records their outcomes (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        queue: InvocationQueue,
        metrics: AsyncMetrics,
        notifier: Notifier,
        retry_scheduled: RetryScheduled,
        clock: Callable[[], float],
        rand: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._metrics = metrics
        self._notifier = notifier
        self._retry_scheduled = retry_scheduled
        self._clock = clock
        self._rand = rand
        self.invoker: Invoker | None = None  # set while the delivery runs

    async def run(self, fn: Function, lease: Lease) -> None:
        """Attempt one leased event and record what happened."""
        policy = retry_policy(fn, self._settings)
        now = self._clock()
        if is_expired(enqueued_at=lease.series_started_at, now=now, policy=policy):
            aged = age_exceeded(enqueued_at=lease.series_started_at, now=now, policy=policy)
            decision = DeadLetter(aged.reason, f"{aged.message}; not attempted")
            error = AttemptError(kind="expired", type="EventAgeExceeded", message=decision.message)
            await self._dead_letter(fn, lease, error, decision, expired=True)
            return

        invoker = self.invoker
        if invoker is None:
            return  # stopping: the lease expires and the event runs again
        request = InvocationRequest.event(
            fn,
            lease.body,
            invocation_id=lease.id,
            attempt=lease.attempt_in_series,
            headers=list(lease.headers.items()),
            query=lease.query,
            now=now,
        )
        previous = lease.previous[-1].finished_at if lease.previous else None
        request.queued_at = previous if previous is not None else lease.created_at
        try:
            response = await invoker.invoke(fn, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, InvocationError):
                log.exception("async invocation %s failed inside the gateway", lease.id)
            await self._failed(fn, lease, attempt_error(exc), policy)
            return

        result = decode_payload(response.body, response.header("content-type"))
        record = await self._queue.complete(lease, now=self._clock(), result=result)
        self._metrics.attempt(fn.key, "succeeded")
        if record is None:
            log.warning("async invocation %s finished after its lease was taken over", lease.id)
            return
        self._notifier.notify(Final(fn, lease, record, succeeded=True, response=response))

    async def _failed(
        self, fn: Function, lease: Lease, error: AttemptError, policy: RetryPolicy
    ) -> None:
        self._metrics.attempt(fn.key, error.kind)
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
        if await self._queue.retry(lease, now=now, error=error, at=decision.at):
            self._metrics.retry(fn.key)
            self._retry_scheduled(fn.key, decision.at)
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
        record = await self._queue.dead_letter(
            lease,
            now=self._clock(),
            error=error,
            reason=decision.reason.value,
            message=decision.message,
            expired=expired,
        )
        if record is None:
            return
        self._metrics.dead_letter(fn.key, decision.reason.value)
        log.warning(
            "async invocation %s of %s dead-lettered: %s", lease.id, fn.key, decision.message
        )
        condition = (
            "EventAgeExceeded"
            if decision.reason is DeadReason.EVENT_AGE_EXCEEDED
            else "RetriesExhausted"
        )
        self._notifier.notify(Final(fn, lease, record, succeeded=False, condition=condition))
