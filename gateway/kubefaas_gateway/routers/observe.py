"""Function logs and usage (docs/logs.md; docs/architecture.md, "Logs and metering").

    GET /system/logs?function=ns/name[&invocation=ID][&since=SECONDS][&after=SEQ][&limit=N]
    GET /system/usage[?from=EPOCH][&to=EPOCH][&namespace=NS]

Both take the admin bearer token or a namespace token (`tenants.py`), which answers for
its own namespaces only: 403 naming the namespace when another is asked for; 401 with
`WWW-Authenticate` without a token (403 saying how to set one when the gateway has
neither an admin token nor namespace tokens). `/system/logs` reads the function log
store (local instances' output; on a cluster, the logs of pods that ended,
`backends.pod_logs`; 404 with a message when the gateway keeps none); `after` is the
`seq` of the last line already seen, which is how `kubefaas logs --follow` polls.
`/system/usage` sums the metered usage per function over [from, to) (minute granularity;
default: the last 30 days).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from kubefaas_gateway.dependencies import SettingsDep, StateDep
from kubefaas_gateway.errors import BadRequest, InvocationNotFound, NoCapacity
from kubefaas_gateway.routers.admin import require_admin
from kubefaas_gateway.routers.json_errors import GatewayRoute
from kubefaas_gateway.state import GatewayState
from kubefaas_gateway.tenants import Grant, require_grant, tokens_for

DEFAULT_USAGE_SECONDS = 30 * 86400
MAX_LINES = 10_000

router = APIRouter(
    prefix="/system",
    tags=["admin"],
    route_class=GatewayRoute,
)


async def _grant(request: Request, state: GatewayState) -> Grant:
    tokens = tokens_for(state.settings, state.secrets)
    if not tokens.configured:
        require_admin(request, state.settings)  # 403 saying how to set one when unset
    return await require_grant(state.settings, tokens, request.scope["headers"])


@router.get("/logs")
async def function_logs(
    request: Request,
    state: StateDep,
    settings: SettingsDep,
    function: Annotated[str, Query(description="ns/name, or name")],
    invocation: str | None = None,
    since: Annotated[float | None, Query(ge=0, description="seconds back from now")] = None,
    after: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LINES)] = 1000,
) -> dict[str, Any]:
    """Lines one function's instances wrote, oldest first."""
    key = function if "/" in function else f"{settings.default_namespace}/{function}"
    (await _grant(request, state)).require(key.partition("/")[0], "read logs")
    store = state.observe.logs if state.observe is not None else None
    if store is None:
        raise InvocationNotFound(
            "this gateway keeps no function logs (KUBEFAAS_FUNCTION_LOGS is off); "
            "`kubefaas logs --cluster` reads live pods' logs through the API server"
        )
    lines = await asyncio.to_thread(
        store.query,
        key,
        invocation=invocation,
        since=None if since is None else time.time() - since,
        after=after,
        limit=limit,
    )
    return {"function": key, "items": [line.to_json() for line in lines]}


@router.get("/usage")
async def usage(
    request: Request,
    state: StateDep,
    start: Annotated[float | None, Query(alias="from", ge=0, description="epoch s")] = None,
    end: Annotated[float | None, Query(alias="to", ge=0, description="epoch s")] = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Requests, GB-seconds and cold starts per function over [from, to)."""
    grant = await _grant(request, state)
    if namespace is not None:
        grant.require(namespace, "read usage")
    meter = state.observe.meter if state.observe is not None else None
    if meter is None:
        raise InvocationNotFound("metering is off on this gateway (KUBEFAAS_METERING)")
    now = time.time()
    end = now + 60 if end is None else end  # the current minute included
    start = end - DEFAULT_USAGE_SECONDS if start is None else start
    if start >= end:
        raise BadRequest(f"`from` ({start:g}) must be before `to` ({end:g})")
    try:
        items = await asyncio.to_thread(meter.usage, start=start, end=end, namespace=namespace)
    except Exception as exc:  # the shared usage store (Redis) is unreachable: retry later
        raise NoCapacity(f"the usage store is unavailable ({exc}); retry") from None
    items = [item for item in items if grant.allows(item["namespace"])]
    return {"from": start, "to": end, "namespace": namespace, "items": items}


async def with_log_tails(document: dict[str, Any], state: GatewayState) -> dict[str, Any]:
    """An async invocation's record with `logs` on each attempt: the last lines (bounded,
    `logstore.TAIL_LINES` and `TAIL_BYTES`) its runtime wrote, attempts matched in order
    to the runtime's REPORT lines. Nothing is added when the gateway keeps no logs."""
    store = state.observe.logs if state.observe is not None else None
    attempts = document.get("attempts")
    if store is None or not isinstance(attempts, list):
        return document
    tails = await asyncio.to_thread(store.attempt_tails, str(document.get("invocationId", "")))
    for index, attempt in enumerate(attempts):
        if isinstance(attempt, dict):
            attempt["logs"] = tails[index] if index < len(tails) else []
    return document
