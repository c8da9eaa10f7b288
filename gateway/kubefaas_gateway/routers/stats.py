"""`GET /internal/stats`: the per-function load the autoscaler reads from every gateway.

    {"gateway": "<pod name or host>", "time": <epoch seconds>,
     "functions": {"ns/name": {"inFlight", "pending", "stableConcurrency",
                               "panicConcurrency", "queued", "idleSeconds",
                               "replicas", "readyInstances", "startingInstances",
                               ["desiredReplicas", "reason", "panic"],
                               ["triggers": [{"name", "lastFireTime", ...}]]}}}

Counts and averages are this gateway's own share; the operator's autoscaler sums them over
the gateway replicas (the operator's autoscaler, `combine`). `idleSeconds` is a duration,
not a timestamp, so the reader's clock need not agree with ours; null means no request was
seen since this gateway started. `replicas` and the instance counts are what this gateway's
backend runs; `desiredReplicas`, `reason` and `panic` appear where this gateway runs the
decider itself (local mode).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from kubefaas_gateway.dependencies import BackendDep, RegistryDep, SignalsDep, TrackerDep
from kubefaas_gateway.routers.json_errors import GatewayRoute
from kubefaas_gateway.routers.scrape import require_scrape_token
from kubefaas_gateway.signals import read_signals

router = APIRouter(
    tags=["internal"], route_class=GatewayRoute, dependencies=[Depends(require_scrape_token)]
)

# In a pod, HOSTNAME is the pod's name: what an operator log line should name.
GATEWAY_ID = os.environ.get("HOSTNAME") or socket.gethostname()


@router.get("/internal/stats")
async def stats(
    request: Request,
    registry: RegistryDep,
    tracker: TrackerDep,
    backend: BackendDep,
    signals: SignalsDep,
) -> dict[str, Any]:
    now = tracker.now()
    queued = signals.queue_depths
    functions: dict[str, Any] = {}
    triggers = request.app.state.gateway.triggers.to_json()
    for fn in registry:
        entry = read_signals(tracker, fn.key, queued=queued.get(fn.key, 0), now=now).to_json()
        known = backend.instances(fn)
        ready = sum(1 for instance in known if instance.ready)
        entry["replicas"] = len(known)
        entry["readyInstances"] = ready
        entry["startingInstances"] = len(known) - ready
        decision = signals.decision(fn.key)
        if decision is not None:
            entry["desiredReplicas"] = decision.replicas
            entry["reason"] = str(decision.reason)
            entry["panic"] = decision.in_panic
        if fn.key in triggers:
            # What this gateway saw of the triggers, for status.triggers (docs/triggers.md).
            entry["triggers"] = triggers[fn.key]
        functions[fn.key] = entry
    return {"gateway": GATEWAY_ID, "time": time.time(), "functions": functions}
