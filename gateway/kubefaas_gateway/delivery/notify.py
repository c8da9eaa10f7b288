"""Telling others how an async invocation ended: callbacks and destinations.

On the final outcome (success or dead letter) the caller's `X-Callback-Url` and the
function's `onSuccess`/`onFailure` destination are notified, best-effort and after the
record is stored, so a failed callback never loses the record. A callback gets the
function's own answer on success and a failure report otherwise; a destination gets
Lambda's destination record (`destination_payload`). A URL is tried a few times, then the
failure is logged. A function destination is enqueued as a new async invocation; a crash
between storing the outcome and notifying can lose that notification (not the record):
destinations are at-most-once, the event itself at-least-once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from kubefaas import wire
from kubefaas.api import Destination, Function
from kubefaas_gateway.invoker import InvocationResponse
from kubefaas_gateway.queue import InvocationRecord, Lease
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.ssrf import CallbackGuard, CallbackRefused, callback_session

log = logging.getLogger("kubefaas.gateway.async")

# Callbacks and URL destinations: a few tries, then a log line (the record is already kept).
DELIVERY_BACKOFF_SECONDS = (0.5, 1.0, 2.0)
# How long `drain` lets pending notifications finish before cancelling them.
CALLBACK_DRAIN_SECONDS = 2.0
FUNCTION_STATUS_HEADER = "X-Function-Status"

# Enqueue a new async invocation of a function with a JSON body; returns its id.
Submit = Callable[..., Awaitable[str]]


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
class Final:
    """What the notifications of a finished invocation need to say."""

    fn: Function
    lease: Lease
    record: InvocationRecord
    succeeded: bool
    response: InvocationResponse | None = None
    condition: str = "Success"


def destination_payload(final: Final) -> dict[str, Any]:
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
        "requestPayload": decode_payload(final.lease.body, final.lease.headers.get("content-type")),
        "responseContext": context,
        "responsePayload": response,
    }


def failure_report(record: InvocationRecord) -> dict[str, Any]:
    """The callback body of an invocation that ended without success."""
    data = record.to_json()
    return {
        "invocationId": record.id,
        "status": record.status,
        "error": record.error,
        "deadLetter": data.get("deadLetter"),
        "attempts": data["attempts"],
    }


class Notifier:
    """Sends the notifications of finished invocations in background tasks."""

    def __init__(
        self,
        *,
        registry: FunctionRegistry,
        submit: Submit,
        callback_timeout_seconds: float,
        guard: CallbackGuard | None = None,
    ) -> None:
        self._guard = guard if guard is not None else CallbackGuard()
        self._registry = registry
        self._submit = submit
        self._timeout = callback_timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # In-process observers of every final outcome (the trigger runner acks broker
        # messages on them, docs/architecture.md, "Triggers"); called synchronously.
        self.listeners: list[Callable[[InvocationRecord], None]] = []

    def open(self, session: aiohttp.ClientSession) -> None:
        """Start; callbacks go out on a session of their own whose resolver refuses what
        the SSRF guard refuses (`ssrf.py`), never on `session`, the one to instances."""
        del session
        self._session = callback_session(self._guard)

    def notify(self, final: Final) -> None:
        """Start notifying whoever wants to know about `final` (no-op if nobody does)."""
        for listener in self.listeners:
            listener(final.record)
        config = final.fn.spec.async_
        destination = config.on_success if final.succeeded else config.on_failure
        if final.lease.callback_url is None and destination is None:
            return
        task = asyncio.get_running_loop().create_task(self._notify_all(final, destination))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Let pending notifications finish (bounded), then cancel what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=CALLBACK_DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._session = None

    async def _notify_all(self, final: Final, destination: Destination | None) -> None:
        try:
            await self._deliver(final, destination)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("notifications for async invocation %s failed", final.record.id)

    async def _deliver(self, final: Final, destination: Destination | None) -> None:
        status = "succeeded" if final.succeeded else "failed"
        headers = {wire.INVOCATION_ID_NAME: final.record.id, FUNCTION_STATUS_HEADER: status}
        if final.lease.callback_url:
            if final.succeeded and final.response is not None:
                body = final.response.body
                content_type = final.response.header("content-type") or "application/json"
            else:
                body = json.dumps(failure_report(final.record)).encode()
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
        payload = destination_payload(final)
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
            target = self._registry.get(key)
            if target is None:
                log.error(
                    "destination function %s of %s does not exist; invocation %s not passed on",
                    key,
                    final.fn.key,
                    final.record.id,
                )
                return
            new_id = await self._submit(
                target,
                json.dumps(payload).encode(),
                headers={"content-type": "application/json"},
            )
            log.info("invocation %s passed to %s as %s", final.record.id, key, new_id)

    async def _post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, what: str, invocation_id: str
    ) -> None:
        session = self._session
        if session is None:
            return
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            await self._guard.check_url(url)
        except CallbackRefused as refused:
            log.error("%s for invocation %s not sent: %s", what, invocation_id, refused.message)
            return
        problem = ""
        for attempt, pause in enumerate((*DELIVERY_BACKOFF_SECONDS, None), start=1):
            try:
                async with session.post(
                    url, data=body, headers=dict(headers), timeout=timeout, allow_redirects=False
                ) as reply:
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
