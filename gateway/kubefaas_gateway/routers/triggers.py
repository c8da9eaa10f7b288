"""`GET /internal/triggers`: what each trigger of this gateway last did (docs/triggers.md).

    {"functions": {"ns/name": [{"name", "type", "fires"|"messages", "lastFireTime"|
                                "lastMessageTime", "lag", "lastInvocationId",
                                "lastError", "lastErrorTime", ...}]}}

This gateway's own view: with several replicas each reports the ticks it stored and the
messages it received.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["internal"])


@router.get("/internal/triggers")
async def trigger_status(request: Request) -> dict[str, Any]:
    state = request.app.state.gateway
    return {"functions": state.triggers.to_json()}
