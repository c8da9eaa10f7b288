"""`GET /metrics`: Prometheus text exposition of the gateway's metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from kubefaas_gateway.dependencies import MetricsDep
from kubefaas_gateway.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics")
async def metrics(metrics: MetricsDep) -> Response:
    return Response(content=metrics.exposition(), media_type=CONTENT_TYPE)
