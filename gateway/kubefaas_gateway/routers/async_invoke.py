"""`POST /async-function/{namespace}/{name}`, `POST /async-function/{name}`,
`GET /invocations/{id}` (docs/architecture.md, "Gateway HTTP API" and "Queue semantics").

An async invocation is answered `202 {"invocationId"}` with `Location: /invocations/{id}`
only after the event is durably stored; anything refused (unknown function, body over the
async limit, a bad `X-Callback-Url`) is refused before anything is stored. The body limit
is checked against `Content-Length` first and again while the body streams in, so a
chunked upload stops at the limit instead of being buffered whole.

Stored with the event: the body, the query string and the request headers the function
would see on a synchronous call, minus the caller's credentials (`Authorization`,
`Cookie`, `X-Api-Key`, ...: `KUBEFAAS_ASYNC_DROPPED_HEADERS`): they were good for the door,
and a queue on disk is no place to keep them.

Errors use the gateway's JSON error body and status mapping (`errors.py`); the router's
`json_errors.GatewayRoute` turns any `InvocationError` raised by a route or a dependency
into that response.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from kubefaas import wire
from kubefaas_gateway.auth import MAX_CREDENTIAL_BYTES, credential
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.dependencies import DeliveryDep, StateDep
from kubefaas_gateway.errors import (
    BadRequest,
    FunctionNotFound,
    InvocationError,
    InvocationNotFound,
    NoCapacity,
)
from kubefaas_gateway.inbound import ClientDisconnected, forward_headers, read_body
from kubefaas_gateway.invoker import new_invocation_id
from kubefaas_gateway.routers.json_errors import GatewayRoute, error_json
from kubefaas_gateway.routers.observe import with_log_tails
from kubefaas_gateway.state import GatewayState
from kubefaas_gateway.tenants import tokens_for

log = logging.getLogger("kubefaas.gateway.async")

CALLBACK_HEADER = "x-callback-url"


router = APIRouter(tags=["async"], route_class=GatewayRoute)


@router.post("/async-function/{namespace}/{name}", status_code=202)
async def invoke_async(
    namespace: str,
    name: str,
    request: Request,
    state: StateDep,
    delivery: DeliveryDep,
) -> Response:
    """Queue an invocation of `namespace/name`; 202 once it is stored."""
    return await _accept(f"{namespace}/{name}", request, state, delivery)


@router.post("/async-function/{name}", status_code=202)
async def invoke_async_default(
    name: str,
    request: Request,
    state: StateDep,
    delivery: DeliveryDep,
) -> Response:
    """Queue an invocation of `name` in the default namespace."""
    return await _accept(f"{state.settings.default_namespace}/{name}", request, state, delivery)


async def _accept(
    key: str, request: Request, state: GatewayState, delivery: AsyncDelivery
) -> Response:
    invocation_id = new_invocation_id()
    fn = state.registry.get(key)
    if fn is None:
        return error_json(FunctionNotFound(f"function {key} not found"), invocation_id)
    limit = state.settings.async_body_limit_bytes
    try:
        await state.auth.check(fn, request.scope["headers"])
        callback_url = _callback_url(request)
        if callback_url is not None:  # the SSRF guard, before anything is stored
            await delivery.callback_guard.check_url(callback_url)
        headers, length = forward_headers(request.scope)
        body = await read_body(request.receive, length=length, limit=limit, kind="async")
    except ClientDisconnected:
        return Response(status_code=499)  # nobody is listening; nothing was stored
    except InvocationError as error:
        if state.invoker is not None:
            state.invoker.record_rejected(fn, error.status, "async")
        return error_json(error, invocation_id)
    # Credentials were checked at the door and are never written to the queue (the list
    # is KUBEFAAS_ASYNC_DROPPED_HEADERS); the callback URL is kept in its own field.
    dropped = state.settings.async_dropped_headers
    stored = {
        name.lower(): value
        for name, value in headers
        if name.lower() not in dropped and name.lower() != CALLBACK_HEADER
    }
    try:
        await delivery.submit(
            fn,
            body,
            headers=stored,
            query=request.scope["query_string"].decode("latin-1"),
            callback_url=callback_url,
            invocation_id=invocation_id,
        )
    except InvocationError as error:  # a queue quota: nothing was stored
        if state.invoker is not None:
            state.invoker.record_rejected(fn, error.status, "async")
        return error_json(error, invocation_id)
    except Exception as exc:
        # No 202 without a stored event: the caller learns to try again.
        log.exception("could not store async invocation %s of %s", invocation_id, fn.key)
        unavailable = NoCapacity(f"the async queue could not store the event ({exc}); retry")
        return error_json(unavailable, invocation_id)
    return JSONResponse(
        {"invocationId": invocation_id},
        status_code=202,
        headers={
            "Location": f"/invocations/{invocation_id}",
            wire.INVOCATION_ID_NAME: invocation_id,
        },
    )


def _callback_url(request: Request) -> str | None:
    value = request.headers.get(CALLBACK_HEADER)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(value) > 2048:
        raise BadRequest(
            f"X-Callback-Url must be an absolute http(s) URL of at most 2048 characters, "
            f"got {value[:100]!r}"
        )
    return value


@router.get("/invocations/{invocation_id}")
async def get_invocation(
    invocation_id: str, request: Request, state: StateDep, delivery: DeliveryDep
) -> dict[str, Any]:
    """Status, attempts and result (or error) of one async invocation; it needs the
    credential its function's invoke needs, the admin token, or a namespace token of the
    function's namespace (docs/security.md; `tenants.py`)."""
    try:
        record = await delivery.queue.get(invocation_id)
    except Exception as exc:  # the queue's store is down (Redis unreachable): retry later
        log.warning("could not read async invocation %s: %s", invocation_id, exc)
        raise NoCapacity(f"the async queue is unavailable ({exc}); retry") from None
    if record is None:
        raise InvocationNotFound(
            f"no async invocation {invocation_id} (unknown, or its record expired)"
        )
    if not await _tenant_may_read(state, record.function, request.scope["headers"]):
        await state.auth.check_record(
            state.registry.get(record.function),
            record.function,
            request.scope["headers"],
            admin_token=state.settings.admin_token,
        )
    return await with_log_tails(record.to_json(), state)


async def _tenant_may_read(state: GatewayState, function_key: str, headers: Any) -> bool:
    """Whether the caller holds a namespace token of the function's namespace (`tenants.py`)."""
    tokens = tokens_for(state.settings, state.secrets)
    presented = credential(headers) if tokens.configured else None
    if not presented or len(presented) > MAX_CREDENTIAL_BYTES:
        return False
    grant = await tokens.grant(presented)
    return grant is not None and grant.allows(function_key.partition("/")[0])
