"""`GET /internal/stats`: the per-function load the cluster autoscaler reads from every
gateway (`kubefaas_operator.autoscaler.FunctionStats.from_json` parses it).

Counts are this gateway's own; the autoscaler sums them over gateway replicas. Time goes
out as a duration (`idleSeconds`), never a timestamp, so clock skew between pods cannot
make a function look idle. The window averages (`stableConcurrency`,
`panicConcurrency`) and the queue depth (`queued`) join this body when the tracker's
rolling windows and the async queue land.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from kubefaas_gateway.dependencies import BackendDep, RegistryDep, TrackerDep

router = APIRouter(tags=["internal"])


@router.get("/internal/stats")
async def stats(registry: RegistryDep, tracker: TrackerDep, backend: BackendDep) -> dict[str, Any]:
    now = tracker.now()
    functions: dict[str, dict[str, Any]] = {}
    for fn in registry:
        load = tracker.load(fn.key)
        idle: float | None = None
        if load.last_active is not None:
            idle = 0.0 if load.concurrency else max(0.0, now - load.last_active)
        functions[fn.key] = {
            "inFlight": load.inflight,
            "pending": load.pending,
            "idleSeconds": idle,
            "readyInstances": backend.ready_count(fn),
        }
    return {"functions": functions}
