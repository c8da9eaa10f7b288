"""Probes: `/healthz` (the process serves) and `/readyz` (it can route invocations)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from kubefaas_gateway.dependencies import RegistryDep, StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: answering at all is the signal."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep, registry: RegistryDep) -> JSONResponse:
    """Readiness: started (backend up, invoker ready) and not shutting down."""
    if not state.ready:
        return JSONResponse({"status": "not ready"}, status_code=503)
    queue_error = state.delivery.queue_error
    if queue_error is not None:
        # Still ready: sync invocations need no queue. Async submits and lookups answer
        # 503 meanwhile (docs/security.md, failure modes).
        return JSONResponse(
            {
                "status": "degraded",
                "functions": len(registry),
                "queue": f"unavailable: {queue_error}",
            }
        )
    return JSONResponse({"status": "ready", "functions": len(registry)})
