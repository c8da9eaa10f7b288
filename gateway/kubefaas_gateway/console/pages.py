"""Shared pieces of the console's pages: templates, forms, the deploy store, charts
(docs/console.md)."""

from __future__ import annotations

import json
import secrets
import weakref
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from kubefaas_gateway.console.auth import Session
from kubefaas_gateway.console.store import ClusterStore, FunctionStore
from kubefaas_gateway.state import GatewayState

HERE = Path(__file__).parent
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
FORM_LIMIT_BYTES = 2 * 1024 * 1024
RECENT_ASYNC = 50


def state_of(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def form_data(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body (the console's forms post nothing else)."""
    body = await request.body()
    if len(body) > FORM_LIMIT_BYTES:
        raise HTTPException(
            status_code=413, detail=f"the form is over {FORM_LIMIT_BYTES // 1024} KiB"
        )
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def render(
    request: Request, template: str, session: Session | None, status: int = 200, **context: Any
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = TEMPLATES.get_template(template).render(
        session=session, path=request.url.path, nonce=nonce, **context
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            # Everything the pages load is served here; no inline script, no framing.
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data:; "
                f"style-src 'self' 'nonce-{nonce}'; "
                "script-src 'self'; frame-ancestors 'none'; form-action 'self'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )


# The cluster store of each running app, connected on first Deploy, closed at shutdown.
_CLUSTER_STORES: weakref.WeakKeyDictionary[GatewayState, ClusterStore] = weakref.WeakKeyDictionary()


async def store_of(request: Request) -> FunctionStore:
    """Local mode sets `app.state.console_store`; on a cluster it is the API server."""
    store: FunctionStore | None = getattr(request.app.state, "console_store", None)
    if store is not None:
        return store
    state = state_of(request)
    cluster = _CLUSTER_STORES.get(state)
    if cluster is None:
        from kubefaas_gateway.kube_async import KubeClient

        cluster = _CLUSTER_STORES[state] = ClusterStore(await KubeClient.connect())
    return cluster


async def close_stores(state: GatewayState) -> None:
    """Close the API connection the console opened for `state`, if it opened one."""
    cluster = _CLUSTER_STORES.pop(state, None)
    if cluster is not None:
        await cluster.close()


def recent_async(request: Request) -> deque[tuple[str, str]]:
    """(invocation id, function key) of the async events sent from the console, newest
    first; bounded, in memory (the queue has no listing of its records)."""
    found: deque[tuple[str, str]] | None = getattr(request.app.state, "console_async", None)
    if found is None:
        found = request.app.state.console_async = deque(maxlen=RECENT_ASYNC)
    return found


def sparkline(values: list[float], *, label: str, width: int = 120, height: int = 24) -> str:
    """A small inline SVG bar chart of per-minute values, with a text alternative."""
    top = max(values) if values and max(values) > 0 else 1.0
    step = width / max(len(values), 1)
    bars = []
    for i, value in enumerate(values):
        if value <= 0:
            continue
        h = max(1.0, value / top * (height - 2))
        bars.append(
            f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{max(step - 0.5, 0.5):.1f}" '
            f'height="{h:.1f}"/>'
        )
    total = sum(values)
    title = f"{label}: {total:g} in the last hour, at most {max(values, default=0):g} a minute"
    return (
        f'<svg class="spark" role="img" aria-label="{title}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" focusable="false">'
        f"<title>{title}</title>{''.join(bars)}</svg>"
    )


def pretty(text: str) -> str:
    """JSON re-indented for reading; anything else as it came."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


TEMPLATES.globals["sparkline"] = sparkline
