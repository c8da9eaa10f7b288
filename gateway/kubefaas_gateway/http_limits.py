"""Limits the HTTP server itself enforces, before any route runs (docs/security.md;
docs/architecture.md, "Auth and limits").

`limited_protocol(settings)` is uvicorn's httptools protocol with:

- the request line and header section bounded: a URL longer than `max_url_bytes` is
  answered `414 UriTooLong`, a header section over `max_header_bytes` or with more than
  `max_header_count` fields `431 HeadersTooLarge`, as soon as the limit is crossed, so a
  64 MB header costs at most one read buffer beyond the limit, never 64 MB;
- a lingering close: when the gateway answers before the request body is in (a 413 on
  `Content-Length`, a 401) on a connection that is to be closed, uvicorn would close at
  once and the caller, still writing, gets `Connection reset` instead of the answer. The
  connection instead half-closes (FIN after the answer) and reads and discards the rest of
  the body, at most `LINGER_MAX_BYTES` or `LINGER_SECONDS`, then closes;
- read timeouts against slow or idle clients: the request line and headers must be in
  within `header_read_timeout_seconds` (from the connection's start, or from the first
  byte of a later request on a kept-alive one: between requests uvicorn's keep-alive
  timeout applies), the whole body within `body_read_timeout_seconds` after the headers;
  past either the caller gets `408 RequestTimeout` (when no answer was started) and the
  connection is closed; the route still waiting for the body sees a disconnect.

Each refusal is a JSON error in the gateway's format and counts in
`kubefaas_gateway_refused_requests_total{reason}`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from prometheus_client import CollectorRegistry, Counter
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from kubefaas_gateway.errors import InvocationError, error_response
from kubefaas_gateway.invoker import new_invocation_id
from kubefaas_gateway.refusals import refusal_counter
from kubefaas_gateway.settings import Settings

# After an early answer: read and discard this much more of the body at most, for this long.
LINGER_MAX_BYTES = 16 * 1024 * 1024
LINGER_SECONDS = 5.0


class UriTooLong(InvocationError):
    """The request's URL is longer than the gateway accepts."""

    status = 414


class HeadersTooLarge(InvocationError):
    """The request's header section is too large or has too many fields."""

    status = 431


class RequestTimeout(InvocationError):
    """The request's head or body did not arrive in time."""

    status = 408


class _Refused(Exception):
    def __init__(self, error: InvocationError, reason: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.reason = reason


class _LingeringTransport:
    """The protocol's transport as the response cycle sees it: `close()` lingers while
    the request body is still arriving (see the module docstring)."""

    def __init__(self, transport: Any, protocol: LimitedProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        # The calls of every response, bound once (no __getattr__ on the hot path).
        self.write = transport.write
        self.is_closing = transport.is_closing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        cycle = self._protocol.cycle
        if cycle is not None and cycle.more_body and not self._transport.is_closing():
            self._protocol.linger()
            return
        self._transport.close()


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    max_url_bytes = 8192
    max_header_bytes = 32 * 1024
    max_header_count = 100
    header_read_timeout = 10.0
    body_read_timeout = 60.0
    counter: Counter | None = None
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None

    _head_bytes = 0
    _header_count = 0
    _header_bytes = 0
    _in_head = False
    _lingering: asyncio.TimerHandle | None = None
    _drained = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(
            self.header_read_timeout, self._timed_out, "header_timeout"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timers()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._head_timer = self.loop.call_later(
                self.header_read_timeout, self._timed_out, "header_timeout"
            )
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.max_url_bytes:
            raise _Refused(
                UriTooLong(f"the URL is longer than {self.max_url_bytes} bytes"), "url_length"
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_header_count:
            raise _Refused(
                HeadersTooLarge(f"the request has more than {self.max_header_count} headers"),
                "header_count",
            )
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            raise _Refused(self._too_large(), "header_bytes")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_read_timers()
        self._body_timer = self.loop.call_later(
            self.body_read_timeout, self._timed_out, "body_timeout"
        )
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = _LingeringTransport(self.transport, self)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if self._lingering is not None:
            self._drained += len(body)
            if self._drained > LINGER_MAX_BYTES:
                self._close_now()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_read_timers()
        if self._lingering is not None:
            self._close_now()  # the whole body is in: the caller reads the answer
            return
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if isinstance(self.parser, _Discard):
            self._drained += len(data)
            if self._drained > LINGER_MAX_BYTES:
                self._close_now()
            return
        try:
            self._unset_keepalive_if_required()
            self.parser.feed_data(data)
            if self._in_head:
                # Bytes of a head still incomplete (httptools buffers a partial header):
                # bounded to the limit plus one read.
                self._head_bytes += len(data)
            if self._in_head and self._head_bytes > self.max_header_bytes + self.max_url_bytes:
                raise _Refused(self._too_large(), "header_bytes")
        except _Refused as refused:
            self._refuse(refused)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refused):
                self._refuse(exc.__context__)
                return
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            self.send_400_response("Unsupported upgrade request.")

    def _cancel_read_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _timed_out(self, reason: str) -> None:
        """A read timeout ran out: answer 408 unless an answer was started, then close."""
        self._head_timer = self._body_timer = None
        if self.transport.is_closing() or self._lingering is not None:
            return
        if self.counter is not None:
            self.counter.labels(reason).inc()
        cycle = self.cycle if reason == "body_timeout" else None
        if cycle is None or not cycle.response_started:
            part = "headers" if reason == "header_timeout" else "body"
            limit = self.header_read_timeout if cycle is None else self.body_read_timeout
            error = RequestTimeout(f"the request's {part} did not arrive within {limit:g} s")
            self.transport.write(self._error_bytes(error))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the route waiting for the body sees a disconnect
            cycle.message_event.set()
        self.transport.close()

    def _error_bytes(self, error: InvocationError) -> bytes:
        status, headers, body = error_response(error, new_invocation_id())
        content = [STATUS_LINE[status]]
        for name, value in headers:
            content += [name, b": ", value, b"\r\n"]
        content += [b"connection: close\r\n\r\n", body]
        return b"".join(content)

    def _too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(
            f"the request's header section is larger than {self.max_header_bytes} bytes"
        )

    def _refuse(self, refused: _Refused) -> None:
        if self.transport.is_closing():
            return
        if self.counter is not None:
            self.counter.labels(refused.reason).inc()
        self._cancel_read_timers()
        self.transport.write(self._error_bytes(refused.error))
        self._in_head = False
        self.linger_after_head()

    def linger_after_head(self) -> None:
        """Half-close and discard what else arrives, bounded, then close."""
        self._lingering = self.loop.call_later(LINGER_SECONDS, self._close_now)
        self.parser = _Discard()  # type: ignore[assignment]
        self._half_close()

    def linger(self) -> None:
        """The answer is sent but the body is still coming: drain it, bounded."""
        if self._lingering is None:
            self._lingering = self.loop.call_later(LINGER_SECONDS, self._close_now)
            self._half_close()

    def _half_close(self) -> None:
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            self._close_now()

    def _close_now(self) -> None:
        self._cancel_read_timers()
        if self._lingering is not None:
            self._lingering.cancel()
        if not self.transport.is_closing():
            self.transport.close()


class _Discard:
    """The parser after a refused request head: `data_received` drops what arrives."""


def limited_protocol(
    settings: Settings, registry: CollectorRegistry | None
) -> type[LimitedProtocol]:
    """`LimitedProtocol` with the limits of `settings` (and its counter in `registry`)."""
    return type(
        "GatewayHttpProtocol",
        (LimitedProtocol,),
        {
            "max_url_bytes": settings.max_url_bytes,
            "max_header_bytes": settings.max_header_bytes,
            "max_header_count": settings.max_header_count,
            "header_read_timeout": settings.header_read_timeout_seconds,
            "body_read_timeout": settings.body_read_timeout_seconds,
            "counter": refusal_counter(registry) if registry is not None else None,
        },
    )
