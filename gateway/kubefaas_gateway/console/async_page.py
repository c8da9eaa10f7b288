"""Async invocations sent from the console and dead letters with redrive and purge
(docs/console.md). Dead letters go through the admin routes' own functions
(`routers/admin.py`), so the console and `/system/dead-letters` cannot disagree. A session
of a namespace token sees and changes only its namespaces' records and dead letters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from kubefaas_gateway.console import auth
from kubefaas_gateway.console.pages import form_data, recent_async, render, state_of
from kubefaas_gateway.console.views import SessionDep
from kubefaas_gateway.dependencies import get_delivery
from kubefaas_gateway.errors import InvocationError
from kubefaas_gateway.routers import admin

router = APIRouter(prefix="/console/async", include_in_schema=False)


@router.get("")
async def page(request: Request, session: SessionDep, notice: str | None = None) -> Response:
    state = state_of(request)
    records: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    error = None
    try:
        delivery = get_delivery(state)
        for invocation_id, key in list(recent_async(request)):
            if not _mine(session, key):
                continue
            record = await delivery.queue.get(invocation_id)
            records.append(
                record.to_json()
                if record is not None
                else {"invocationId": invocation_id, "function": key, "status": "expired"}
            )
        listed = await admin.list_dead_letters(
            delivery, state.settings, function=None, limit=admin.DEFAULT_PAGE, cursor=None
        )
        dead = [item for item in listed["items"] if _mine(session, str(item.get("function")))]
    except InvocationError as exc:
        error = exc.message
    return render(
        request, "async.html", session, records=records, dead=dead, error=error, notice=notice
    )


def _mine(session: auth.Session, function_key: str) -> bool:
    return session.grant.allows(function_key.partition("/")[0])


async def _check_dead_letter(session: auth.Session, delivery: Any, invocation_id: str) -> None:
    """403 unless the dead letter's function is in the session's namespaces."""
    if session.grant.admin:
        return
    record = await delivery.queue.get(invocation_id)
    if record is not None:
        auth.require_namespace(session, record.function.partition("/")[0], "change dead letters")


@router.post("/dead-letters/{invocation_id}/redrive")
async def redrive(request: Request, invocation_id: str, session: SessionDep) -> Response:
    auth.check_csrf(session, (await form_data(request)).get("csrf"))
    delivery = get_delivery(state_of(request))
    await _check_dead_letter(session, delivery, invocation_id)
    try:
        await admin.redrive(invocation_id, delivery)
        notice = f"redriven: {invocation_id}"
    except InvocationError as exc:
        notice = exc.message
    return await page(request, session, notice=notice)


@router.post("/dead-letters/{invocation_id}/purge")
async def purge(request: Request, invocation_id: str, session: SessionDep) -> Response:
    auth.check_csrf(session, (await form_data(request)).get("csrf"))
    delivery = get_delivery(state_of(request))
    await _check_dead_letter(session, delivery, invocation_id)
    try:
        await admin.purge_one(invocation_id, delivery)
        notice = f"purged: {invocation_id}"
    except InvocationError as exc:
        notice = exc.message
    return await page(request, session, notice=notice)


@router.post("/dead-letters/purge-all")
async def purge_all(request: Request, session: SessionDep) -> Response:
    auth.check_csrf(session, (await form_data(request)).get("csrf"))
    state = state_of(request)
    delivery = get_delivery(state)
    if session.grant.admin:
        purged = (await admin.purge_all(delivery, state.settings, function=None))["purged"]
    else:
        # A tenant purges its own functions' dead letters only, function by function.
        listed = await admin.list_dead_letters(
            delivery, state.settings, function=None, limit=admin.MAX_PAGE, cursor=None
        )
        keys = {str(i["function"]) for i in listed["items"] if _mine(session, str(i["function"]))}
        purged = 0
        for key in sorted(keys):
            purged += (await admin.purge_all(delivery, state.settings, function=key))["purged"]
    return RedirectResponse(f"/console/async?notice=purged+{purged}", status_code=303)
