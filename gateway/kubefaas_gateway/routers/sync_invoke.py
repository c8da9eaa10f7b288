"""`ANY /function/{namespace}/{name}[/{path}]` and `ANY /function/{name}[/{path}]`.

The synchronous invoke route is raw ASGI, dispatched by `app.GatewayApp` before FastAPI's
own middleware and routing: on this path FastAPI's request parsing and routing would cost
more than the proxy hop itself (DESIGN §11: ~2,600 req/s for a FastAPI proxy route vs
5,400-7,400 raw). Everything else goes on to FastAPI untouched.

Path resolution: `/function/a/b/...` names function `b` of namespace `a` when that exists;
otherwise `a` of the default namespace, with `/b/...` as the sub-path passed to it. So
`/function/http/items/42` reaches `default/http` with path `/items/42` unless a namespace
`http` holds a function `items`.

Every answer, errors included, carries `X-Invocation-Id`, `X-Cold-Start` and
`X-Duration-Ms` (DESIGN §4). The body is read up to the sync limit and no further: a
`Content-Length` over it is refused before reading, a chunked body as soon as it crosses it
(the server discards the rest without buffering it).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from starlette.types import Receive, Scope, Send

from kubefaas.api import Function
from kubefaas_gateway.errors import (
    FunctionNotFound,
    InternalError,
    InvocationError,
    NoCapacity,
    PayloadTooLarge,
    error_response,
)
from kubefaas_gateway.invoker import InvocationRequest, InvocationType, new_invocation_id
from kubefaas_gateway.proxy import HOP_BY_HOP
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.state import GatewayState

log = logging.getLogger("kubefaas.gateway")

PREFIX = "/function"
_PREFIX_SLASH = PREFIX + "/"
# Request headers not forwarded: hop-by-hop, the length (re-computed), and the ones the
# gateway sets itself, so a caller cannot forge its own deadline or invocation id.
_DROP = frozenset(
    name.encode()
    for name in (
        *HOP_BY_HOP,
        "content-length",
        "x-forwarded-for",
        "x-invocation-id",
        "x-deadline-ms",
        "x-invocation-type",
        "x-attempt",
    )
)
_STANDARD_CONNECTION_TOKENS = frozenset({"keep-alive", "close"})
_TRUE = b"true"
_FALSE = b"false"


class ClientDisconnected(Exception):
    """The caller went away while sending its body: there is nobody to answer."""


def resolve(registry: FunctionRegistry, path: str, default_namespace: str) -> tuple[Function, str]:
    """The function a `/function/...` path names and the sub-path (from "/") it passes on."""
    rest = path[len(_PREFIX_SLASH) :] if path.startswith(_PREFIX_SLASH) else ""
    first, _, tail = rest.partition("/")
    if not first:
        raise FunctionNotFound(
            "no function named in the path: call /function/{namespace}/{name} "
            "or /function/{name} (default namespace)"
        )
    second, _, remainder = tail.partition("/")
    if second:
        fn = registry.get(f"{first}/{second}")
        if fn is not None:
            return fn, "/" + remainder
    fn = registry.get(f"{default_namespace}/{first}")
    if fn is not None:
        return fn, "/" + tail
    if second:
        raise FunctionNotFound(
            f"function {first}/{second} not found (nor {default_namespace}/{first})"
        )
    raise FunctionNotFound(f"function {default_namespace}/{first} not found")


def forward_headers(scope: Scope) -> tuple[list[tuple[str, str]], int]:
    """Headers to pass to the instance, and the request's Content-Length (-1 if none)."""
    headers: list[tuple[str, str]] = []
    length = -1
    connection: bytes | None = None
    forwarded_for: str | None = None
    for name, value in scope["headers"]:
        if name in _DROP:
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                connection = value
            elif name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
            continue
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    if connection is not None:
        # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        named = {t.strip().lower() for t in connection.decode("latin-1").split(",")}
        named -= _STANDARD_CONNECTION_TOKENS
        if named:
            headers = [(k, v) for k, v in headers if k not in named]
    client = scope.get("client")
    if client:
        address = client[0]
        headers.append(
            ("X-Forwarded-For", f"{forwarded_for}, {address}" if forwarded_for else address)
        )
    headers.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
    return headers, length


async def read_body(
    receive: Receive, *, length: int, limit: int, kind: InvocationType = "sync"
) -> bytes:
    """The whole request body, refused (PayloadTooLarge) when its `length` (Content-Length,
    -1 if none) is over `limit`, or as soon as the streamed body passes it; `kind` names
    the limit in the message. Shared by the sync route and the async one."""
    if length > limit:
        raise PayloadTooLarge(_too_large(limit, kind))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(_too_large(limit, kind))
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


def _too_large(limit: int, kind: InvocationType) -> str:
    which = "synchronous" if kind == "sync" else "asynchronous"
    return f"request body is larger than the {which} limit of {limit} bytes"


def is_invoke_path(path: str) -> bool:
    """`/function` or `/function/...` (not `/functions`)."""
    return path.startswith(PREFIX) and (len(path) == len(PREFIX) or path[len(PREFIX)] == "/")


class InvokeRoute:
    """The raw ASGI endpoint for one sync invocation; `app.GatewayApp` sends it every
    request whose path `is_invoke_path`, before FastAPI sees it."""

    def __init__(self, *, state: GatewayState) -> None:
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._invoke(scope, receive, send)

    async def _invoke(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self._state
        started = time.perf_counter()
        invocation_id = new_invocation_id()
        fn: Function | None = None
        try:
            invoker = state.invoker
            if invoker is None:
                raise NoCapacity("the gateway is not started")
            raw = scope.get("raw_path")
            path = raw.decode("latin-1") if raw else quote(scope["path"])
            fn, sub_path = resolve(state.registry, path, state.settings.default_namespace)
            headers, length = forward_headers(scope)
            body = await read_body(
                receive, length=length, limit=state.settings.sync_body_limit_bytes
            )
            request = InvocationRequest(
                method=scope["method"],
                path=sub_path,
                query=scope["query_string"].decode("latin-1"),
                headers=headers,
                body=body,
                invocation_id=invocation_id,
                deadline=time.time() + fn.spec.timeout_seconds,
            )
            response = await invoker.invoke(fn, request)
        except ClientDisconnected:
            return
        except InvocationError as error:
            if isinstance(error, PayloadTooLarge) and fn is not None and state.invoker:
                state.invoker.record_rejected(fn, error.status, "sync")
            await _send_error(send, error, invocation_id, started)
            return
        except Exception:
            log.exception("invocation %s failed inside the gateway", invocation_id)
            internal = InternalError("internal gateway error")
            await _send_error(send, internal, invocation_id, started)
            return
        body = response.body
        headers_out = [
            (b"x-invocation-id", invocation_id.encode()),
            (b"x-cold-start", _TRUE if response.cold_start else _FALSE),
            (b"x-duration-ms", f"{response.duration * 1000:.2f}".encode()),
            (b"content-length", str(len(body)).encode()),
            *response.headers,
        ]
        await send(
            {"type": "http.response.start", "status": response.status, "headers": headers_out}
        )
        await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, error: InvocationError, invocation_id: str, started: float
) -> None:
    status, headers, body = error_response(error, invocation_id)
    headers += [
        (b"x-cold-start", _TRUE if error.cold_start else _FALSE),
        (b"x-duration-ms", f"{(time.perf_counter() - started) * 1000:.2f}".encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
