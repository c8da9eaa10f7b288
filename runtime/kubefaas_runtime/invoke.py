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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from kubefaas_runtime.context import Context
from kubefaas_runtime.events import Reply, exception_reply, timeout_reply
from kubefaas_runtime.handler import Handler, LoadedHandler
from kubefaas_runtime.logs import LOGGER_NAME, REQUEST_ID
from kubefaas_runtime.threads import HandlerThreads

log = logging.getLogger(LOGGER_NAME)

ToReply = Callable[[Any], Reply]


class _Escaped(Exception):
    """Carries a SystemExit/KeyboardInterrupt out of a handler task.

    asyncio re-raises those two from a task straight into the event loop, which would
    stop the server; wrapped in an ordinary exception they stay inside the task.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(original)
        self.original = original


def _call_sync(handler: Handler, event: Any, context: Context) -> Any:
    # Runs in a pool thread: tag the thread's log records with this call's id.
    token = REQUEST_ID.set(context.request_id)
    try:
        return handler(event, context)
    finally:
        REQUEST_ID.reset(token)


async def _call_async(awaitable: Awaitable[Any]) -> Any:
    try:
        return await awaitable
    except (SystemExit, KeyboardInterrupt) as exc:
        raise _Escaped(exc) from exc


def _wake(waiter: asyncio.Future[None], *_: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _finished_within(
    future: asyncio.Future[Any], seconds: float, loop: asyncio.AbstractEventLoop
) -> bool:
    """Wait for ``future`` at most ``seconds`` without cancelling it.

    A leaner ``asyncio.wait({future}, timeout=...)``: one waiter future and one timer,
    no sets; this sits on the path of every invocation.
    """
    if future.done():
        return True
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_later(seconds, _wake, waiter)
    wake = partial(_wake, waiter)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    return future.done()


class Invoker:
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
        self.abandoned = 0
        """Calls answered 504 whose handler is still running."""

    async def invoke(self, event: Any, context: Context, budget: float) -> Reply:
        """Run the handler with ``budget`` seconds left before the deadline."""
        if budget <= 0:
            return timeout_reply(0.0)
        if self._is_async:
            try:
                awaitable = self._function(event, context)
            except BaseException as exc:  # e.g. a wrong signature
                return _failed(exc, context)
            return await self._run_async(awaitable, context, budget)
        future = self._threads.submit(self._loop, _call_sync, self._function, event, context)
        if not await _finished_within(future, budget, self._loop):
            self._abandon(future, context, budget)
            return timeout_reply(budget)
        try:
            result = future.result()
        except BaseException as exc:  # SystemExit from a handler included
            return _failed(exc, context)
        if inspect.iscoroutine(result):
            # A sync wrapper around an async function: finish it on the loop.
            remaining = context.get_remaining_time_in_millis() / 1000
            return await self._run_async(result, context, remaining)
        return self._to_reply(result)

    async def _run_async(self, awaitable: Awaitable[Any], context: Context, budget: float) -> Reply:
        token = REQUEST_ID.set(context.request_id)  # copied into the task's context
        try:
            task = self._loop.create_task(_call_async(awaitable))
        finally:
            REQUEST_ID.reset(token)
        if not await _finished_within(task, budget, self._loop):
            task.cancel()
            self._abandon(task, context, budget)
            return timeout_reply(budget)
        try:
            result = task.result()
        except _Escaped as exc:
            return _failed(exc.original, context)
        except BaseException as exc:  # a handler may even raise CancelledError
            return _failed(exc, context)
        return self._to_reply(result)

    def _abandon(self, future: asyncio.Future[Any], context: Context, budget: float) -> None:
        self.abandoned += 1
        future.add_done_callback(self._abandoned_done)
        log.warning(
            "invocation timed out",
            extra={
                "requestId": context.request_id,
                "timeoutSeconds": round(budget, 3),
                "abandoned": self.abandoned,
            },
        )

    def _abandoned_done(self, future: asyncio.Future[Any]) -> None:
        self.abandoned -= 1
        # Retrieve the outcome so asyncio does not report it as never retrieved.
        if not future.cancelled():
            future.exception()


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
