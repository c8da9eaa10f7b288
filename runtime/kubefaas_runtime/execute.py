"""Running the handler for one invocation, under its deadline.

Sync handlers run in a thread pool so the event loop keeps answering /healthz and other
calls while one computes, and so the deadline can be enforced: the caller is answered
504 when it passes. A Python thread cannot be killed, so a sync call that overruns keeps
its thread until it returns by itself and its result is discarded; such calls are
counted as *abandoned* and, if any is still running at exit, the process exits without
waiting for it (``server.py``). Async handlers run as their own task on the loop and
are cancelled at the deadline; the caller is answered at once even if the handler
ignores the cancellation. An async handler that blocks the loop (``time.sleep``) cannot
be interrupted at all.

Nothing a handler raises escapes: exceptions, ``SystemExit`` and ``KeyboardInterrupt``
all become a 500 reply, because an instance must never be taken down by one call.

How one call is awaited: a single future, the call's *outcome*, is settled by whichever
comes first, the handler finishing (from its thread or task) or the deadline timer.
The request waits on that future alone: this is on the path of every invocation, and
each future or callback chained in between would cost another event-loop iteration.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubefaas_runtime.context import Context
from kubefaas_runtime.events import Reply, exception_reply, timeout_reply
from kubefaas_runtime.handler import Handler, LoadedHandler
from kubefaas_runtime.logs import LOGGER_NAME, REQUEST_ID
from kubefaas_runtime.threads import HandlerThreads

log = logging.getLogger(LOGGER_NAME)

ToReply = Callable[[Any], Reply]

_TIMED_OUT = object()
"""Result of an outcome settled by the deadline timer."""


class _Call:
    """One handler call in flight: settles its outcome once, by result or by deadline."""

    __slots__ = ("abandoned", "executor", "outcome", "task")

    def __init__(self, executor: Executor, outcome: asyncio.Future[Any]) -> None:
        self.executor = executor
        self.outcome = outcome
        self.abandoned = False
        self.task: asyncio.Task[None] | None = None

    def finish(self, result: Any, error: BaseException | None) -> None:
        """The handler returned or raised (called on the loop thread)."""
        if self.abandoned:
            self.executor._forget(self)
        elif not self.outcome.done():
            if error is None:
                self.outcome.set_result(result)
            else:
                self.outcome.set_exception(error)

    def expire(self) -> None:
        """The deadline passed first: answer now, let the handler run on unobserved."""
        if self.outcome.done():
            return
        self.outcome.set_result(_TIMED_OUT)
        self.abandoned = True
        self.executor._abandon(self)


def _call_sync(handler: Handler, event: Any, context: Context, call: _Call) -> Any:
    # Runs in a pool thread. A call that waited for a thread past its deadline was
    # already answered 504: running it now would do work nobody gets the answer of.
    if call.abandoned:
        return None
    # Tag the thread's log records with this call's id.
    token = REQUEST_ID.set(context.request_id)
    try:
        return handler(event, context)
    finally:
        REQUEST_ID.reset(token)


async def _call_async(call: _Call, awaitable: Awaitable[Any]) -> None:
    # Everything is caught: asyncio re-raises SystemExit/KeyboardInterrupt from a task
    # straight into the event loop, which would stop the server.
    try:
        result = await awaitable
    except BaseException as exc:
        call.finish(None, exc)
    else:
        call.finish(result, None)


class Executor:
    """Calls one loaded handler and turns its outcome into a ``Reply``."""

    def __init__(
        self,
        handler: LoadedHandler,
        *,
        threads: HandlerThreads,
        loop: asyncio.AbstractEventLoop,
        to_reply: ToReply,
    ) -> None:
        self._function = handler.function
        self._is_async = handler.is_async
        self._threads = threads
        self._loop = loop
        self._to_reply = to_reply
        self._abandoned: set[_Call] = set()

    @property
    def abandoned(self) -> int:
        """Calls answered 504 whose handler is still running."""
        return len(self._abandoned)

    @property
    def saturated(self) -> bool:
        """Every handler thread is held by a call already answered 504: nothing can run
        until one returns, so the instance must not report healthy."""
        return not self._is_async and len(self._abandoned) >= self._threads.max_threads

    async def execute(self, event: Any, context: Context, budget: float) -> Reply:
        """Run the handler with ``budget`` seconds left before the deadline."""
        if budget <= 0:
            return timeout_reply(0.0)
        call = _Call(self, self._loop.create_future())
        if self._is_async:
            try:
                awaitable = self._function(event, context)
            except BaseException as exc:  # e.g. a wrong signature
                return _failed(exc, context)
            self._start_task(call, awaitable, context)
        else:
            self._threads.submit(
                self._loop, call.finish, _call_sync, self._function, event, context, call
            )
        return await self._settle(call, context, budget)

    async def _settle(self, call: _Call, context: Context, budget: float) -> Reply:
        timer = self._loop.call_later(budget, call.expire)
        try:
            result = await call.outcome
        except BaseException as exc:
            if call.outcome.cancelled():  # this request itself is being cancelled
                raise
            return _failed(exc, context)  # the handler's exception, SystemExit included
        finally:
            timer.cancel()
        if result is _TIMED_OUT:
            return self._timed_out(call, context, budget)
        if inspect.iscoroutine(result):
            # A sync wrapper around an async function: finish it on the loop.
            follow_up = _Call(self, self._loop.create_future())
            self._start_task(follow_up, result, context)
            remaining = context.get_remaining_time_in_millis() / 1000
            return await self._settle(follow_up, context, remaining)
        return self._to_reply(result)

    def _start_task(self, call: _Call, awaitable: Awaitable[Any], context: Context) -> None:
        token = REQUEST_ID.set(context.request_id)  # copied into the task's context
        try:
            call.task = self._loop.create_task(_call_async(call, awaitable))
        finally:
            REQUEST_ID.reset(token)

    def _timed_out(self, call: _Call, context: Context, budget: float) -> Reply:
        if call.task is not None:
            call.task.cancel()
        log.warning(
            "invocation timed out",
            extra={
                "requestId": context.request_id,
                "timeoutSeconds": round(budget, 3),
                "abandoned": self.abandoned,
            },
        )
        return timeout_reply(budget)

    def _abandon(self, call: _Call) -> None:
        # Holding the call holds its task too: asyncio keeps only weak references.
        self._abandoned.add(call)

    def _forget(self, call: _Call) -> None:
        self._abandoned.discard(call)


def _failed(exc: BaseException, context: Context) -> Reply:
    reply = exception_reply(exc)
    log.error(
        "handler raised %s: %s",
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"requestId": context.request_id},
    )
    return reply
