"""`GET /metrics`: Prometheus text exposition of the gateway's metrics.

With `KUBEFAAS_METRICS_TOKEN` set (the chart sets it), `/metrics` and `/internal/stats`
need `Authorization: Bearer <that token>` or the admin token (docs/security.md): load
figures per function are not for every caller of the gateway.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from kubefaas_gateway.auth import bearer_matches
from kubefaas_gateway.dependencies import MetricsDep, SettingsDep
from kubefaas_gateway.errors import Unauthorized
from kubefaas_gateway.metrics import CONTENT_TYPE
from kubefaas_gateway.routers.json_errors import GatewayRoute


def require_scrape_token(request: Request, settings: SettingsDep) -> None:
    """Let a scrape through when no metrics token is set, or with it (or the admin one)."""
    wanted = settings.metrics_token
    if wanted is None or not wanted.get_secret_value():
        return
    headers = request.scope["headers"]
    admin = settings.admin_token
    if bearer_matches(headers, wanted.get_secret_value()) or (
        admin is not None
        and admin.get_secret_value()
        and bearer_matches(headers, admin.get_secret_value())
    ):
        return
    raise Unauthorized(
        f"{request.url.path} needs `Authorization: Bearer <token>` (the gateway's "
        "KUBEFAAS_METRICS_TOKEN)"
    )


router = APIRouter(
    tags=["metrics"], route_class=GatewayRoute, dependencies=[Depends(require_scrape_token)]
)


@router.get("/metrics")
async def metrics(metrics: MetricsDep) -> Response:
    return Response(content=metrics.exposition(), media_type=CONTENT_TYPE)
