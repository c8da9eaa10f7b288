"""The web console at `/console` (docs/console.md; docs/architecture.md, "Console").

Mounted by `app.create_app` only when `Settings.console_enabled`; `record_history` is the
background task keeping the per-minute history its charts draw.
"""

from __future__ import annotations

from fastapi import APIRouter

from kubefaas_gateway.console import async_page, function_page, history, pages, views
from kubefaas_gateway.state import GatewayState

router = APIRouter()
router.include_router(views.router)
router.include_router(function_page.router)
router.include_router(function_page.new_router)
router.include_router(async_page.router)


async def record_history(state: GatewayState) -> None:
    """Sample the gateway's counters into the console's per-minute history; at shutdown
    (cancelled with the app's other tasks) close what the console opened."""
    try:
        await history.sample_forever(state.metrics)
    finally:
        await pages.close_stores(state)


__all__ = ["record_history", "router"]
