"""The invoke core: one invocation of one function, sync or async.

`Invoker.invoke(fn, request)` is shared by the sync route and the async delivery, so
activation from zero, concurrency tracking, throttling, error mapping and metrics behave
the same for both. The function's `reservedConcurrency` is enforced here and only here:
over it a sync caller gets 429 and an async attempt is throttled (and retried). It raises
the sentinel errors of `errors.py` and returns the runtime's answer otherwise:

- runtime `X-Function-Error` (handler raised) or a 5xx from a JSON-event function
  -> `FunctionFailed` (502) carrying the runtime's errorType/errorMessage/stackTrace;
- runtime 504 / `X-Function-Error: Timeout`, or no answer by the deadline -> 504;
- connection refused -> the instance is evicted and the call tried once more; connection
  lost after sending (the instance died) -> 502;
- any other status passes through: an `eventFormat: http` handler chooses its own 4xx/5xx.

One deadline bounds the whole invocation, cold start included (docs/architecture.md, "Autoscaling":
the request is
held until an instance is ready, bounded by the function timeout); the runtime receives it
as `X-Deadline-Ms` and the gateway waits `deadline_grace_seconds` past it for the
runtime's own 504 before giving up itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal

import aiohttp
from yarl import URL

from kubefaas import limits, wire
from kubefaas.api import Function
from kubefaas_gateway import proxy
from kubefaas_gateway.backends.base import Backend, Instance, least_inflight
from kubefaas_gateway.breaker import InstanceBreakers
from kubefaas_gateway.errors import (
    FunctionFailed,
    FunctionTimedOut,
    InvocationError,
    InvocationTimeout,
    ResponseTooLarge,
    Throttled,
)
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.refusals import refusal_counter
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.tracker import Tracker

log = logging.getLogger("kubefaas.gateway")

InvocationType = Literal["sync", "async"]

# Connection refused on a pooled instance means it just went away: one more try finds
# another instance (or starts one) before the caller sees an error.
MAX_CONNECT_ATTEMPTS = 2
# How much of a non-JSON error body a 502 repeats to the caller.
ERROR_BODY_EXCERPT = 1000
# A throttled caller may retry after the first step of the async throttle backoff.
THROTTLE_RETRY_AFTER_SECONDS = math.ceil(limits.THROTTLE_BACKOFF_INITIAL_SECONDS)


_FUNCTION_ERROR_LENGTH = len(wire.FUNCTION_ERROR)

_id_lock = threading.Lock()
_id_pool = b""
_id_next = 0


def new_invocation_id() -> str:
    """A random (version 4) UUID string, as unguessable as `uuid.uuid4()`: the one source
    of invocation ids (sync and async routes, destination events).

    Random bytes come from `os.urandom` 4 KiB at a time rather than 16 bytes per call:
    the same source, a syscall per 256 ids instead of one per request. The lock makes it
    safe from worker threads too.
    """
    global _id_pool, _id_next
    with _id_lock:
        if _id_next >= len(_id_pool):
            _id_pool = os.urandom(4096)
            _id_next = 0
        raw = _id_pool[_id_next : _id_next + 16]
        _id_next += 16
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[raw[8] & 3]}{h[17:20]}-{h[20:]}"


@dataclass(slots=True)
class InvocationRequest:
    """What to send to the function. `path` and `query` stay percent-encoded as received."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    invocation_id: str
    deadline: float  # epoch seconds; the runtime gets it as X-Deadline-Ms
    invocation_type: InvocationType = "sync"
    attempt: int = 1
    # Async: when the event was queued or last attempted (epoch s), for the queue wait span.
    queued_at: float | None = None

    @classmethod
    def event(
        cls,
        fn: Function,
        body: bytes,
        *,
        invocation_id: str,
        attempt: int,
        headers: list[tuple[str, str]],
        query: str,
        now: float,
    ) -> InvocationRequest:
        """An async event's attempt: a `POST /` with `body`, deadline one function timeout
        from `now`; `attempt` counts from 1 in the event's current attempt series."""
        return cls(
            method="POST",
            path="/",
            query=query,
            headers=headers,
            body=body,
            invocation_id=invocation_id,
            deadline=now + fn.spec.timeout_seconds,
            invocation_type="async",
            attempt=attempt,
        )


@dataclass(slots=True)
class InvocationResponse:
    """The function's answer as the caller should see it."""

    status: int
    headers: list[tuple[bytes, bytes]]  # the runtime's, minus hop-by-hop and length
    body: bytes
    cold_start: bool
    duration: float  # seconds from invoke() to the answer, cold start included
    instance_id: str

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None


@dataclass(slots=True)
class _Progress:
    """What one invocation went through so far, for its error answers."""

    cold_start: bool = False


class Invoker:
    """Runs invocations against a backend; one per gateway, created in the lifespan."""

    def __init__(
        self,
        *,
        backend: Backend,
        tracker: Tracker,
        metrics: Metrics,
        session: aiohttp.ClientSession,
        settings: Settings,
    ) -> None:
        self._backend = backend
        self._tracker = tracker
        self._metrics = metrics
        self._session = session
        self._grace = settings.deadline_grace_seconds
        self._response_limit = settings.response_limit_bytes
        # containerConcurrency: one breaker per instance of functions that set it.
        self._breakers = InstanceBreakers()
        self._turns = itertools.count()

    async def invoke(self, fn: Function, request: InvocationRequest) -> InvocationResponse:
        """Invoke `fn` once; raises an `InvocationError` subclass on every failure."""
        started = time.perf_counter()
        try:
            response = await self._invoke(fn, request, started)
        except InvocationError as error:
            self._metrics.record(fn, error.status, request.invocation_type, _since(started))
            if isinstance(error, ResponseTooLarge):
                refusal_counter(self._metrics.registry).labels("response_size").inc()
            raise
        self._metrics.record(fn, response.status, request.invocation_type, response.duration)
        return response

    def record_rejected(self, fn: Function, status: int, invocation_type: InvocationType) -> None:
        """Count a request refused before invoke() (e.g. 413), so metrics see every answer."""
        self._metrics.record(fn, status, invocation_type, 0.0)

    async def _invoke(
        self, fn: Function, request: InvocationRequest, started: float
    ) -> InvocationResponse:
        key = fn.key
        tracker = self._tracker
        reserved = fn.spec.scaling.reserved_concurrency
        if reserved is not None and tracker.concurrency(key) >= reserved:
            # Answered before touching any instance; the check and the count taken below
            # happen with no suspension in between, so concurrent callers cannot overshoot.
            self._metrics.record_throttled(fn)
            raise Throttled(
                f"function {key} is at its reserved concurrency ({reserved})",
                retry_after_seconds=THROTTLE_RETRY_AFTER_SECONDS,
            )
        per_instance = fn.spec.scaling.container_concurrency

        progress = _Progress()
        try:
            return await self._attempts(fn, request, started, per_instance, progress)
        except InvocationError as error:
            # The caller's X-Cold-Start says whether it waited for a start, failed or not.
            error.cold_start = progress.cold_start
            raise

    async def _attempts(
        self,
        fn: Function,
        request: InvocationRequest,
        started: float,
        per_instance: int,
        progress: _Progress,
    ) -> InvocationResponse:
        """Acquire an instance and forward, again on another instance if one is gone."""
        key = fn.key
        tracker = self._tracker
        for attempt in range(1, MAX_CONNECT_ATTEMPTS + 1):
            if self._backend.ready_count(fn):
                # Warm: acquire returns without waiting, so nothing is pending; skipping
                # the pending count saves two updates of the concurrency window.
                acquired = await self._backend.acquire(fn, request.deadline)
            else:
                async with tracker.hold(key):
                    acquired = await self._backend.acquire(fn, request.deadline)
            if acquired.cold_start:
                progress.cold_start = True
                self._metrics.record_cold_start(fn, _since(started))
            instance = acquired.instance
            if per_instance:
                instance = self._least_queued(fn, instance)
            timeout = request.deadline - time.time()
            if timeout <= 0:
                raise InvocationTimeout(
                    f"function {key} had no time left after waiting "
                    f"{_since(started):.1f}s for an instance (timeout {fn.spec.timeout_seconds}s)"
                )
            headers = [
                *request.headers,
                (wire.INVOCATION_ID_NAME, request.invocation_id),
                (wire.DEADLINE_MS_NAME, str(int(request.deadline * 1000))),
                (wire.INVOCATION_TYPE_NAME, request.invocation_type),
                (wire.ATTEMPT_NAME, str(request.attempt)),
            ]
            url = proxy.instance_url(instance.host, instance.port, request.path, request.query)
            try:
                if per_instance:
                    async with (
                        self._slot(instance, per_instance, key, request.deadline),
                        tracker.track(key, instance.id),
                    ):
                        upstream = await self._forward(request, url, headers)
                else:
                    async with tracker.track(key, instance.id):
                        upstream = await self._forward(request, url, headers)
            except proxy.InstanceUnreachable as exc:
                log.warning("instance %s of %s unreachable (%s); evicting", instance.id, key, exc)
                self._backend.evict(instance)
                if attempt < MAX_CONNECT_ATTEMPTS and time.time() < request.deadline:
                    continue
                raise FunctionFailed(
                    f"function {key}: no instance could be reached ({exc})"
                ) from None
            except proxy.InstanceLost as exc:
                if instance.lost is not None:  # ended by the backend: say why
                    error_type, why = instance.lost
                    raise FunctionFailed(f"function {key}: {why}", error_type=error_type) from None
                raise FunctionFailed(
                    f"function {key}: the instance closed the connection before answering "
                    f"(it crashed or exited): {exc}",
                    error_type="InstanceLost",
                ) from None
            except TimeoutError:
                raise FunctionTimedOut(
                    f"function {key} did not answer within its timeout ({fn.spec.timeout_seconds}s)"
                ) from None
            return self._answer(fn, upstream, progress.cold_start, instance.id, started)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _forward(
        self, request: InvocationRequest, url: URL, headers: list[tuple[str, str]]
    ) -> Awaitable[proxy.UpstreamResponse]:
        return proxy.forward(
            self._session,
            method=request.method,
            url=url,
            headers=headers,
            body=request.body,
            # From now: a wait for a containerConcurrency slot used some of it.
            within=request.deadline - time.time() + self._grace,
            limit=self._response_limit,
        )

    def _least_queued(self, fn: Function, chosen: Instance) -> Instance:
        """With containerConcurrency, the ready instance with the fewest requests holding
        or waiting for a slot (the backend's pick does not see the waiting ones)."""
        ready = [i for i in self._backend.instances(fn) if i.ready]
        if not ready:
            return chosen
        return least_inflight(ready, self._breakers.load, next(self._turns))

    def _slot(
        self, instance: Instance, per_instance: int, key: str, deadline: float
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """A containerConcurrency slot on `instance` (no-op when the function sets none);
        while waiting for it the request counts as pending: it needs capacity now."""
        if not per_instance:
            return contextlib.nullcontext()
        return self._breakers.slot(
            instance.id,
            capacity=per_instance,
            deadline=deadline,
            waiting=self._tracker.hold(key),
        )

    def _answer(
        self,
        fn: Function,
        upstream: proxy.UpstreamResponse,
        cold_start: bool,
        instance_id: str,
        started: float,
    ) -> InvocationResponse:
        self._metrics.bill(fn, upstream.raw_headers, cold_start)  # docs/logs.md, "Metering"
        status = upstream.status
        function_error = _function_error(upstream.headers)
        if function_error is not None:
            if status == 504 or function_error.lower() == "timeout":
                raise FunctionTimedOut(
                    f"function {fn.key} timed out after {fn.spec.timeout_seconds}s"
                )
            raise _failed(fn, upstream)
        if status >= 500 and fn.spec.event_format == "json":
            # A JSON-event runtime answers 200 or reports the error itself; anything else
            # is a runtime fault. HTTP-event handlers choose their own statuses.
            raise _failed(fn, upstream)
        return InvocationResponse(
            status=status,
            headers=upstream.headers,
            body=upstream.body,
            cold_start=cold_start,
            duration=_since(started),
            instance_id=instance_id,
        )


def _since(started: float) -> float:
    return time.perf_counter() - started


def _function_error(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if len(name) == _FUNCTION_ERROR_LENGTH and name.lower() == wire.FUNCTION_ERROR:
            return value.decode("latin-1")
    return None


def _failed(fn: Function, upstream: proxy.UpstreamResponse) -> FunctionFailed:
    """A FunctionFailed that repeats the runtime's own error report when it sent one."""
    report: object = None
    with contextlib.suppress(ValueError):
        report = json.loads(upstream.body)
    if isinstance(report, dict) and "errorType" in report:
        error_type = str(report["errorType"])
        error_message = str(report.get("errorMessage", ""))
        trace = report.get("stackTrace")
        stack = [str(line) for line in trace] if isinstance(trace, list) else None
        return FunctionFailed(
            f"function {fn.key} failed: {error_type}: {error_message}",
            error_type=error_type,
            error_message=error_message,
            stack_trace=stack,
        )
    excerpt = upstream.body[:ERROR_BODY_EXCERPT].decode("utf-8", "replace")
    return FunctionFailed(
        f"function {fn.key} answered with status {upstream.status}",
        error_message=excerpt or None,
    )
