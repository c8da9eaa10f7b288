"""The gateway's JSON error answers for its FastAPI routes (async invoke, admin).

`GatewayRoute` is the route class of those routers: an `InvocationError` raised by a route
or one of its dependencies becomes the gateway's JSON error body with the status
`errors.error_response` maps it to, and an unexpected exception becomes a logged 500 in the
same shape, so callers see one error format on every route.

`EXCEPTION_HANDLERS` (installed by `create_app`) does the same for what FastAPI and
Starlette answer themselves: an unknown path (404 `RouteNotFound`), a wrong method (405
`MethodNotAllowed` with `Allow`) and a request that fails validation (422 `InvalidRequest`
naming each field). The console's HTML pages keep FastAPI's own answers (their redirects
and form errors), docs/architecture.md, "Gateway HTTP API".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any

from fastapi import Request, Response
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from kubefaas_gateway.errors import (
    JSON_CONTENT_TYPE,
    InternalError,
    InvalidRequest,
    InvocationError,
    MethodNotAllowed,
    RouteNotFound,
    error_response,
)

log = logging.getLogger("kubefaas.gateway")


class GatewayRoute(APIRoute):
    """An APIRoute whose `InvocationError`s become the gateway's JSON error responses."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            invocation_id = str(request.path_params.get("invocation_id", ""))
            try:
                return await handler(request)
            except InvocationError as error:
                return error_json(error, invocation_id)
            except (HTTPException, RequestValidationError):
                raise  # FastAPI answers these itself (e.g. a bad query parameter: 422)
            except Exception:
                log.exception("%s %s failed inside the gateway", request.method, request.url.path)
                return error_json(InternalError("internal gateway error"), invocation_id)

        return handle


def error_json(error: InvocationError, invocation_id: str = "") -> Response:
    status, headers, body = error_response(error, invocation_id)
    return Response(
        content=body,
        status_code=status,
        headers={k.decode(): v.decode() for k, v in headers if k != b"content-length"},
    )


# The console answers its browser pages itself (redirects to the login form, form errors).
CONSOLE_PREFIX = "/console"


def _is_console(request: Request) -> bool:
    """A path the console serves (only while it is enabled)."""
    path = request.url.path
    if not (path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")):
        return False
    state = getattr(request.app.state, "gateway", None)
    return bool(state is not None and state.settings.console_enabled)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI/Starlette's own HTTP errors (unknown path, wrong method) as gateway JSON."""
    assert isinstance(exc, HTTPException)
    if _is_console(request) or exc.status_code < 400:
        return await http_exception_handler(request, exc)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404 and exc.detail == HTTPStatus.NOT_FOUND.phrase:
        return error_json(RouteNotFound(f"{where}: the gateway has no such route"))
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return error_json(
            MethodNotAllowed(f"{where}: method not allowed here; allowed: {allow}", allow=allow)
        )
    return _status_json(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def validation_error(request: Request, exc: Exception) -> Response:
    """A request FastAPI refused while parsing it: 422 `InvalidRequest` naming the fields."""
    assert isinstance(exc, RequestValidationError)
    if _is_console(request):
        return await request_validation_exception_handler(request, exc)
    fields = [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "invalid")),
        }
        for error in exc.errors()
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
    return error_json(InvalidRequest(f"invalid request: {summary}", fields=fields))


def _status_json(status: int, message: str, headers: dict[str, str]) -> Response:
    """Any other framework status, in the gateway's shape (type from the status phrase)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = {"type": phrase.title().replace(" ", "").replace("-", ""), "message": message}
    return Response(
        content=json.dumps({"error": {**body, "invocationId": ""}}).encode(),
        status_code=status,
        headers={**headers, "content-type": JSON_CONTENT_TYPE.decode()},
    )


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    HTTPException: http_error,
    RequestValidationError: validation_error,
}
