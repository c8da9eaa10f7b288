"""`ANY /function/{namespace}/{name}[/{path}]` and `ANY /function/{name}[/{path}]`.

The synchronous invoke route is raw ASGI, dispatched by `app.GatewayApp` before FastAPI's
own middleware and routing: on this path FastAPI's request parsing and routing would cost
more than the proxy hop itself (docs/architecture.md, "Measured facts": ~2,600 req/s for a FastAPI
proxy route vs
5,400-7,400 raw). Everything else goes on to FastAPI untouched.

Path resolution: `/function/a/b/...` names function `b` of namespace `a` when that exists;
otherwise `a` of the default namespace, with `/b/...` as the sub-path passed to it. So
`/function/http/items/42` reaches `default/http` with path `/items/42` unless a namespace
`http` holds a function `items`.

Every answer, errors included, carries `X-Invocation-Id`, `X-Cold-Start` and
`X-Duration-Ms` (docs/architecture.md, "Gateway HTTP API"). The body is read up to the sync limit
and no further
(`inbound.read_body`; the server discards the rest without buffering it).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from starlette.types import Receive, Scope, Send

from kubefaas import wire
from kubefaas.api import Function
from kubefaas_gateway.errors import (
    FunctionNotFound,
    InternalError,
    InvocationError,
    NoCapacity,
    PayloadTooLarge,
    Unauthorized,
    error_response,
)
from kubefaas_gateway.inbound import ClientDisconnected, forward_headers, read_body
from kubefaas_gateway.invoker import InvocationRequest, new_invocation_id
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.state import GatewayState

log = logging.getLogger("kubefaas.gateway")

PREFIX = "/function"
_PREFIX_SLASH = PREFIX + "/"
_TRUE = b"true"
_FALSE = b"false"


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
            if not state.auth.open(fn):  # before the body is read (docs/security.md)
                await state.auth.check(fn, scope["headers"])
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
            if isinstance(error, PayloadTooLarge | Unauthorized) and fn and state.invoker:
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
            (wire.INVOCATION_ID, invocation_id.encode()),
            (wire.COLD_START, _TRUE if response.cold_start else _FALSE),
            (wire.DURATION_MS, f"{response.duration * 1000:.2f}".encode()),
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
        (wire.COLD_START, _TRUE if error.cold_start else _FALSE),
        (wire.DURATION_MS, f"{(time.perf_counter() - started) * 1000:.2f}".encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
