"""Dead-letter admin: list, redrive, purge (docs/architecture.md, "Gateway HTTP API" and "Queue
semantics" and "Security defaults").

    GET    /system/dead-letters[?function=ns/name][&limit=N][&cursor=C]
    POST   /system/dead-letters/{id}/redrive
    DELETE /system/dead-letters/{id}
    DELETE /system/dead-letters[?function=ns/name]      every dead letter (of one function)

Every route needs `Authorization: Bearer <admin token>`; the token is compared with
`hmac.compare_digest` so its bytes cannot be guessed from response times. A missing or
wrong token is 401. With no token configured at all, the routes are refused with 403 and a
message saying how to set one (`KUBEFAAS_ADMIN_TOKEN` in the gateway's environment, local
mode included): an unset token must never mean "open to everyone".
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from kubefaas_gateway.dependencies import DeliveryDep, SettingsDep
from kubefaas_gateway.errors import AdminDisabled, BadRequest, InvocationNotFound, Unauthorized
from kubefaas_gateway.routers.json_errors import GatewayRoute
from kubefaas_gateway.settings import Settings

MAX_PAGE = 1000
DEFAULT_PAGE = 100


def require_admin(request: Request, settings: SettingsDep) -> None:
    """Let the request through only with the configured admin bearer token."""
    token = settings.admin_token
    if token is None or not token.get_secret_value():
        raise AdminDisabled(
            "admin routes are disabled because no admin token is configured: start the "
            "gateway (or `kubefaas local`) with KUBEFAAS_ADMIN_TOKEN=<token> in its "
            "environment and send `Authorization: Bearer <token>`"
        )
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), token.get_secret_value().encode()
    ):
        raise Unauthorized(
            "admin routes need `Authorization: Bearer <admin token>` "
            "(the gateway's KUBEFAAS_ADMIN_TOKEN)"
        )


router = APIRouter(
    prefix="/system/dead-letters",
    tags=["admin"],
    route_class=GatewayRoute,
    dependencies=[Depends(require_admin)],
)


def _function_key(function: str | None, settings: Settings) -> str | None:
    """`ns/name`, or `name` of the default namespace."""
    if not function:
        return None
    if "/" in function:
        return function
    return f"{settings.default_namespace}/{function}"


@router.get("")
async def list_dead_letters(
    delivery: DeliveryDep,
    settings: SettingsDep,
    function: Annotated[str | None, Query(description="ns/name, or name")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Dead letters oldest first, with every attempt's error; `nextCursor` pages on."""
    try:
        page = await delivery.queue.list_dead_letters(
            function=_function_key(function, settings), limit=limit, cursor=cursor
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return {"items": [r.to_json() for r in page.items], "nextCursor": page.next_cursor}


@router.post("/{invocation_id}/redrive")
async def redrive(invocation_id: str, delivery: DeliveryDep) -> dict[str, Any]:
    """Queue a dead letter again as a fresh attempt series; its history is kept."""
    record = await delivery.queue.redrive(invocation_id, now=time.time())
    if record is None:
        raise InvocationNotFound(f"no dead letter {invocation_id}")
    delivery.wake(record.function)
    return record.to_json()


@router.delete("/{invocation_id}")
async def purge_one(invocation_id: str, delivery: DeliveryDep) -> dict[str, Any]:
    """Drop one dead letter's payload; its record stays (status failed) for the TTL."""
    if not await delivery.queue.purge(invocation_id, now=time.time()):
        raise InvocationNotFound(f"no dead letter {invocation_id}")
    return {"purged": 1}


@router.delete("")
async def purge_all(
    delivery: DeliveryDep,
    settings: SettingsDep,
    function: Annotated[str | None, Query(description="ns/name, or name")] = None,
) -> dict[str, Any]:
    """Purge every dead letter, or every one of `function`."""
    key = _function_key(function, settings)
    return {"purged": await delivery.queue.purge_all(now=time.time(), function=key)}
