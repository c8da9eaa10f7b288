"""Probes: `/healthz` (the process serves) and `/readyz` (it can route invocations).

With the async queue's store unreachable (Redis down) `/readyz` stays `200` by default
and says so in its body, naming the store: sync invocations need no queue, and a
readiness probe failing on every replica at once would take the whole gateway out of its
Service for a Redis blip. `KUBEFAAS_READYZ_REQUIRES_QUEUE` makes it `503` instead
(docs/architecture.md, "Readiness with the queue down").
"""

from __future__ import annotations

from typing import Any

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
    if queue_error is None:
        return JSONResponse({"status": "ready", "functions": len(registry)})
    store = "redis" if state.settings.redis_url else "sqlite"
    what = "Redis" if store == "redis" else "the SQLite queue file"
    body: dict[str, Any] = {
        "status": "degraded",
        "functions": len(registry),
        "queue": f"unavailable: {queue_error}",
        "down": [store],
        "message": (
            f"{what} (the async queue) is unreachable: {queue_error}; async submits and "
            "invocation lookups answer 503, sync invocations are served"
        ),
    }
    required = state.settings.readyz_requires_queue
    return JSONResponse(body, status_code=503 if required else 200)
