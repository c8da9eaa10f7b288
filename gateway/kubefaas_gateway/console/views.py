"""Login, the functions list and the static assets of the console (docs/console.md)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from kubefaas.api import Function
from kubefaas_gateway.console import auth, history
from kubefaas_gateway.console.pages import HERE, form_data, render, state_of
from kubefaas_gateway.state import GatewayState
from kubefaas_gateway.tenants import ADMIN, Grant

router = APIRouter(prefix="/console", include_in_schema=False)
SessionDep = Annotated[auth.Session, Depends(auth.require_session)]

STATIC = {
    "console.css": "text/css",
    "console.js": "text/javascript",
    "vendor/codemirror.js": "text/javascript",
    "vendor/codemirror.LICENSE.txt": "text/plain",
}


@router.get("")
async def home(request: Request) -> Response:
    target = "functions" if await auth.session_of(request, state_of(request)) else "login"
    return RedirectResponse(f"/console/{target}", status_code=303)


@router.get("/static/{name:path}")
async def static(name: str) -> Response:
    media = STATIC.get(name)
    if media is None:
        raise HTTPException(status_code=404)
    return FileResponse(
        HERE / "static" / name,
        media_type=media,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/login")
async def login_form(request: Request) -> Response:
    state = state_of(request)
    if await auth.session_of(request, state) is not None:
        return RedirectResponse("/console/functions", status_code=303)
    return render(request, "login.html", None, error=None, **_login_context(state))


def _login_context(state: GatewayState) -> dict[str, Any]:
    return {
        "disabled": not auth.login_possible(state),
        "namespace_tokens": auth.tokens_of(state).configured,
    }


@router.post("/login")
async def login(request: Request) -> Response:
    state = state_of(request)
    form = await form_data(request)
    if not auth.same_origin(request):
        return render(
            request,
            "login.html",
            None,
            403,
            error="this form was sent from another site",
            **_login_context(state),
        )
    found = await auth.authenticate(state, form.get("token", ""))
    if found is None:
        context = _login_context(state)
        expected = "the gateway's KUBEFAAS_ADMIN_TOKEN" + (
            " or a namespace token" if context["namespace_tokens"] else ""
        )
        return render(
            request, "login.html", None, 401, error=f"wrong token: use {expected}", **context
        )
    session = auth.new_session(*found)
    response = RedirectResponse("/console/functions", status_code=303)
    response.set_cookie(
        auth.COOKIE,
        session.value,
        max_age=auth.SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep) -> Response:
    auth.check_csrf(session, (await form_data(request)).get("csrf"))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/console")
    return response


def invoke_path(fn: Function, default_namespace: str) -> str:
    if fn.namespace == default_namespace:
        return f"/function/{fn.name}"
    return f"/function/{fn.namespace}/{fn.name}"


def ready_of(fn: Function) -> str:
    """The Ready condition (cluster), or "loaded" for a local manifest without status."""
    if fn.status is None:
        return "loaded"
    for condition in fn.status.conditions:
        if condition.type == "Ready":
            return "yes" if condition.status == "True" else (condition.reason or "no")
    return "unknown"


def function_rows(
    state: GatewayState,
    base_url: str,
    live: dict[str, history.Sample],
    grant: Grant = ADMIN,
) -> dict[str, list[dict[str, Any]]]:
    """Per namespace, one row of figures per function (`live` counts, last hour), of the
    namespaces `grant` covers."""
    past = history.history_of(state.metrics)
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for fn in sorted(state.registry, key=lambda f: (f.namespace, f.name)):
        if not grant.allows(fn.namespace):
            continue
        window = past.window(fn.key, live.get(fn.key, history.Sample()))
        instances = state.backend.instances(fn)
        p50 = window.total.quantile(0.5)
        p99 = window.total.quantile(0.99)
        by_namespace.setdefault(fn.namespace, []).append(
            {
                "fn": fn,
                "ready": ready_of(fn),
                "replicas": sum(1 for i in instances if i.ready),
                "starting": sum(1 for i in instances if not i.ready),
                "inflight": state.tracker.concurrency(fn.key),
                "window": window,
                "p50": None if p50 is None else p50 * 1000,
                "p99": None if p99 is None else p99 * 1000,
                "url": base_url + invoke_path(fn, state.settings.default_namespace),
            }
        )
    return by_namespace


@router.get("/functions")
async def functions(request: Request, session: SessionDep, notice: str | None = None) -> Response:
    state = state_of(request)
    base = str(request.base_url).rstrip("/")
    # Off the event loop, as the sampler does (history.sample_forever).
    live = await asyncio.to_thread(history.read, state.metrics)
    rows = function_rows(state, base, live, session.grant)
    return render(request, "functions.html", session, namespaces=rows, notice=notice)
