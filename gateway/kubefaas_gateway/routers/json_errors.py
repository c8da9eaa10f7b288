"""The gateway's JSON error answers for its FastAPI routes (async invoke, admin).

`GatewayRoute` is the route class of those routers: an `InvocationError` raised by a route
or one of its dependencies becomes the gateway's JSON error body with the status
`errors.error_response` maps it to, and an unexpected exception becomes a logged 500 in the
same shape, so callers see one error format on every route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from kubefaas_gateway.errors import InternalError, InvocationError, error_response

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
