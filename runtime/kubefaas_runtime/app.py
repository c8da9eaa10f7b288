"""The runtime's ASGI application: health, invocations, init state and drain state.

A raw ASGI callable, no framework: this is on the path of every invocation and a
framework costs about 0.2 ms of CPU per request (docs/architecture.md, "Raw ASGI on
the hot paths"), which is more than the rest of the runtime. Routing is one comparison:
``/healthz`` (any method) is the probe, every other method and path is an invocation
(the gateway forwards the path that follows ``/function/{ns}/{name}``, so ``/healthz`` is
the one path a function cannot serve).

Invocation request headers: ``X-Invocation-Id`` (a uuid4 hex is made up if missing),
``X-Deadline-Ms`` (epoch ms; else now + ``KUBEFAAS_TIMEOUT_SECONDS``),
``X-Invocation-Type`` (``sync``|``async``, else ``sync``), ``X-Attempt`` (int, else 1).
Every invocation response carries ``X-Invocation-Id`` and ``X-Duration-Ms`` (handler
time, ms with three decimals); failures carry ``X-Function-Error: Unhandled|Timeout``.

Health (``GET /healthz``): 503 ``{"status":"starting"}`` until the handler module is
imported, then 200 ``{"status":"ok"}``; 200 ``{"status":"init-failed","error":{...}}``
when the import failed (the instance is up and answers every call with that error);
503 ``{"status":"draining"}`` from SIGTERM on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kubefaas.wire import (
    ATTEMPT,
    DEADLINE_MS,
    DURATION_MS,
    FUNCTION_ERROR,
    INVOCATION_ID,
    INVOCATION_TYPE,
    TRACEPARENT,
)
from kubefaas_runtime.config import EventFormat, Settings
from kubefaas_runtime.context import Context
from kubefaas_runtime.events import (
    CONTENT_JSON,
    FUNCTION_ERROR_UNHANDLED,
    Reply,
    error_reply,
    http_event,
    http_reply,
    json_event,
    json_reply,
    timeout_reply,
)
from kubefaas_runtime.execute import Executor
from kubefaas_runtime.handler import HandlerInitError, LoadedHandler, load_handler
from kubefaas_runtime.logs import LOGGER_NAME, install_record_factory, report_line, write_report
from kubefaas_runtime.threads import HandlerThreads

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(LOGGER_NAME)

_STATUSES_WITHOUT_LENGTH = frozenset({204, 304})


def _health(status: int, document: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(document).encode("ascii")
    headers = [
        (b"content-type", CONTENT_JSON),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    return status, headers, body


_HEALTH_STARTING = _health(503, {"status": "starting"})
_HEALTH_OK = _health(200, {"status": "ok"})
_HEALTH_DRAINING = _health(503, {"status": "draining"})
_HEALTH_SATURATED = _health(503, {"status": "saturated"})


class RuntimeApp:
    """The ASGI app of one function instance.

    Lifecycle: construct, ``await initialize()`` (imports the handler; the app already
    answers /healthz meanwhile), serve, ``begin_drain()`` on SIGTERM, ``wait_idle()``,
    ``close()``.
    """

    def __init__(self, settings: Settings) -> None:
        install_record_factory()
        self.settings = settings
        self._threads = HandlerThreads(max_threads=settings.max_threads)
        self._http_format = settings.event_format is EventFormat.HTTP
        self._to_reply = http_reply if self._http_format else json_reply
        self._timeout_ms = int(settings.timeout_seconds * 1000)
        self._max_body = settings.max_body_bytes
        self._executor: Executor | None = None
        self._init_failure: Reply | None = None
        self._health = _HEALTH_STARTING
        self._initialized = asyncio.Event()
        self._draining = False
        self.inflight = 0
        """Invocations received and not yet answered."""
        self.init_error: HandlerInitError | None = None
        self.init_seconds: float | None = None
        self._init_reported = False
        """Whether a REPORT line already carried the init duration (the cold start)."""
        self.reports = settings.reports
        """Whether each invocation ends with a REPORT line (docs/logs.md)."""

    # --- lifecycle ----------------------------------------------------------------

    async def initialize(self) -> None:
        """Import the handler module once, then report ready (or init-failed).

        The import runs in a thread of its own so that /healthz keeps answering
        ``starting`` during a long init (a model load, a warm-up query) instead of
        timing out; the loop is made that thread's current event loop so module-level
        code that asks for it gets the loop its async handler will run on.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[LoadedHandler | HandlerInitError] = loop.create_future()
        started = time.perf_counter()

        def load() -> None:
            asyncio.set_event_loop(loop)
            outcome: LoadedHandler | HandlerInitError
            try:
                outcome = load_handler(
                    code_dir=self.settings.code_dir,
                    spec=self.settings.handler,
                    deps_dir=self.settings.deps_dir or None,
                )
            except HandlerInitError as exc:
                outcome = exc
            except BaseException as exc:  # never leave the app "starting"
                outcome = HandlerInitError(type(exc).__name__, str(exc))
            # RuntimeError: the server stopped (and closed the loop) during init.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, done, outcome)

        threading.Thread(target=load, name="kubefaas-init", daemon=True).start()
        outcome = await done
        self.init_seconds = time.perf_counter() - started
        init_ms = round(self.init_seconds * 1000, 1)
        if isinstance(outcome, HandlerInitError):
            self._fail_init(outcome, init_ms)
        else:
            self._executor = Executor(
                outcome, threads=self._threads, loop=loop, to_reply=self._to_reply
            )
            self._health = _HEALTH_OK
            log.info(
                "ready",
                extra={
                    "handler": self.settings.handler,
                    "async": outcome.is_async,
                    "eventFormat": self.settings.event_format.value,
                    "initMs": init_ms,
                    # The node's monotonic clock, which containers share: a benchmark on
                    # the node places readiness on its own timeline (bench/cluster_coldstart.py).
                    "readyMonotonic": round(time.monotonic(), 4),
                },
            )
        self._initialized.set()

    def _fail_init(self, error: HandlerInitError, init_ms: float) -> None:
        self.init_error = error
        self._init_failure = Reply(
            500, error.body(), CONTENT_JSON, function_error=FUNCTION_ERROR_UNHANDLED
        )
        document = {"errorType": error.error_type, "errorMessage": error.message}
        self._health = _health(200, {"status": "init-failed", "error": document})
        log.error(
            "init failed: %s: %s",
            error.error_type,
            error.message,
            extra={
                "handler": self.settings.handler,
                "initMs": init_ms,
                "stackTrace": "".join(error.stack),
            },
        )

    def begin_drain(self) -> None:
        """Answer /healthz 503 from now on; invocations are still served."""
        self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def abandoned(self) -> int:
        """Calls answered 504 whose handler has not returned yet."""
        return self._executor.abandoned if self._executor is not None else 0

    async def wait_idle(self, *, seconds: float, stop: Callable[[], bool] = lambda: False) -> int:
        """Wait until no invocation is in flight (or ``seconds`` passed, or ``stop()``).

        Returns how many were still in flight. Polls, because ``stop`` watches a flag a
        signal handler sets; this runs once per process lifetime.
        """
        deadline = time.monotonic() + seconds
        while self.inflight and time.monotonic() < deadline and not stop():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return self.inflight

    def close(self) -> None:
        """Release the handler threads (without waiting for abandoned calls)."""
        self._threads.close()

    # --- ASGI ---------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await _lifespan(receive, send)
            return
        if scope["path"] == "/healthz":
            status, headers, body = _HEALTH_DRAINING if self._draining else self._health
            executor = self._executor
            if executor is not None and executor.saturated and not self._draining:
                # docs/security.md: every thread is held past its deadline.
                status, headers, body = _HEALTH_SATURATED
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        self.inflight += 1
        try:
            await self._invoke(scope, receive, send)
        finally:
            self.inflight -= 1

    async def _invoke(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = deadline_header = invocation_type = attempt_header = traceparent = None
        content_length = -1
        for name, value in scope["headers"]:
            # Every wire header starts with x-: one slice skips the others cheaply.
            if name[:2] == b"x-":
                if name == INVOCATION_ID:
                    request_id = value
                elif name == DEADLINE_MS:
                    deadline_header = value
                elif name == INVOCATION_TYPE:
                    invocation_type = value
                elif name == ATTEMPT:
                    attempt_header = value
            elif name == b"content-length":
                content_length = _to_int(value, -1)
            elif name == TRACEPARENT:
                traceparent = value
        raw_id: bytes = request_id or _new_request_id()
        attempt = _to_int(attempt_header, 1) if attempt_header else 1

        if self._init_failure is not None:
            await self._answer(send, attempt, self._init_failure, raw_id, 0.0)
            return
        if content_length > self._max_body:
            await self._answer(send, attempt, self._too_large(), raw_id, 0.0, close=True)
            return
        try:
            body = await self._read_body(receive)
        except _BodyTooLarge:
            await self._answer(send, attempt, self._too_large(), raw_id, 0.0, close=True)
            return
        if body is None:  # the client went away
            return

        now = time.time()
        now_ms = int(now * 1000)
        deadline_ms = _to_int(deadline_header, 0) if deadline_header else 0
        if deadline_ms <= 0 or deadline_ms > now_ms + self._timeout_ms:
            # A caller's X-Deadline-Ms never extends the function's own timeout (whoever
            # reaches the pod cannot buy a longer run; docs/security.md).
            deadline_ms = now_ms + self._timeout_ms
        budget = deadline_ms / 1000 - now

        executor = self._executor
        if executor is None:  # a call that beat the init phase waits for it
            if not await _wait_event(self._initialized, budget):
                await self._answer(send, attempt, timeout_reply(budget), raw_id, 0.0)
                return
            if self._init_failure is not None:
                await self._answer(send, attempt, self._init_failure, raw_id, 0.0)
                return
            executor = self._executor
            assert executor is not None
            budget = deadline_ms / 1000 - time.time()

        settings = self.settings
        request_id_text = raw_id.decode("latin-1")
        context = Context(
            request_id=request_id_text,
            function_name=settings.function_name,
            function_namespace=settings.function_namespace,
            function_version=settings.function_version,
            memory_limit_in_mb=settings.memory_mb,
            invocation_type="async"
            if invocation_type in (b"async", b"Async", b"ASYNC")
            else "sync",
            attempt=attempt,
            tmp_dir=settings.tmp_dir,
            deadline_ms=deadline_ms,
            traceparent=_traceparent(traceparent) if traceparent else None,
        )
        if self._http_format:
            client = scope.get("client")
            event = http_event(
                method=scope["method"],
                path=scope["path"],
                query_string=scope.get("query_string", b""),
                headers=scope["headers"],
                body=body,
                request_id=request_id_text,
                request_time_ms=now_ms,
                source_ip=client[0] if client else None,
            )
        else:
            event = json_event(body)

        started = time.perf_counter()
        reply = await executor.execute(event, context, budget)
        await self._answer(send, attempt, reply, raw_id, time.perf_counter() - started)

    async def _answer(
        self,
        send: Send,
        attempt: int,
        reply: Reply,
        raw_id: bytes,
        seconds: float,
        *,
        close: bool = False,
    ) -> None:
        """Send the reply, then end the invocation with its REPORT line."""
        duration_text = b"%.3f" % (seconds * 1000)
        await _send(send, reply, raw_id, duration_text, close=close)
        if self.reports:
            init_ms = None
            if not self._init_reported and self.init_seconds is not None:
                self._init_reported = True
                init_ms = round(self.init_seconds * 1000, 1)
            write_report(
                report_line(
                    request_id=raw_id.decode("latin-1"),
                    duration_ms_text=duration_text,
                    memory_mb=self.settings.memory_mb,
                    status=reply.status,
                    attempt=attempt,
                    init_ms=init_ms,
                )
            )

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The request body, or None if the client disconnected.

        Raises ``_BodyTooLarge`` as soon as the body passes the limit, so no more than
        the limit (plus the chunk that crossed it) is ever held.
        """
        message = await receive()
        if message["type"] != "http.request":
            return None
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self._max_body:
                raise _BodyTooLarge
            return body
        if len(body) > self._max_body:
            raise _BodyTooLarge
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> Reply:
        return error_reply(
            413,
            "Runtime.RequestTooLarge",
            f"Request body exceeds {self._max_body} bytes (KUBEFAAS_MAX_BODY_BYTES)",
        )


class _BodyTooLarge(Exception):
    """The request body passed KUBEFAAS_MAX_BODY_BYTES while it was being read."""


def _new_request_id() -> bytes:
    # uuid.uuid4().hex, at a fifth of the cost: 16 random bytes with the version (4) and
    # variant (RFC 4122) bits set.
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex().encode("ascii")


_HEX = frozenset(b"0123456789abcdef")


def _traceparent(raw: bytes) -> str | None:
    """A valid W3C ``traceparent`` (version 00 layout) as text, else None."""
    value = raw.strip().lower()
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version, trace_id, span_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if version == b"ff" or (len(value) > 55 and (version == b"00" or value[55:56] != b"-")):
        return None
    if not _HEX.issuperset(version + trace_id + span_id + flags):
        return None
    if trace_id == b"0" * 32 or span_id == b"0" * 16:
        return None
    return value.decode("ascii")


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


async def _wait_event(event: asyncio.Event, seconds: float) -> bool:
    if seconds <= 0:
        return event.is_set()
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _to_int(raw: bytes | None, default: int) -> int:
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        return default


async def _send(
    send: Send, reply: Reply, request_id: bytes, duration_ms: bytes, *, close: bool = False
) -> None:
    status = reply.status
    headers = [
        (INVOCATION_ID, request_id),
        (DURATION_MS, duration_ms),
    ]
    if reply.content_type is not None:
        headers.append((b"content-type", reply.content_type))
    if status not in _STATUSES_WITHOUT_LENGTH:
        headers.append((b"content-length", b"%d" % len(reply.body)))
    if reply.function_error is not None:
        headers.append((FUNCTION_ERROR, reply.function_error))
    if reply.headers:
        headers.extend(reply.headers)
    if close:
        # The rest of an oversized upload is not worth reading: end the connection.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Only for servers that insist on lifespan; the runtime itself runs with it off and
    # initializes outside it, so /healthz can answer "starting" during init.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
