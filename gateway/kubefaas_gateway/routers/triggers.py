"""`GET /internal/triggers`: what each trigger of this gateway last did (docs/triggers.md).

    {"functions": {"ns/name": [{"name", "type", "fires"|"messages", "lastFireTime"|
                                "lastMessageTime", "lag", "lastInvocationId",
                                "lastError", "lastErrorTime", ...}]}}

This gateway's own view: with several replicas each reports the ticks it stored and the
messages it received. Behind the scrape token like `/internal/stats` (docs/security.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from kubefaas_gateway.routers.json_errors import GatewayRoute
from kubefaas_gateway.routers.scrape import require_scrape_token

router = APIRouter(
    tags=["internal"], route_class=GatewayRoute, dependencies=[Depends(require_scrape_token)]
)


@router.get("/internal/triggers")
async def trigger_status(request: Request) -> dict[str, Any]:
    state = request.app.state.gateway
    return {"functions": state.triggers.to_json()}
