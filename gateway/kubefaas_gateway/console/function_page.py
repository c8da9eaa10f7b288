"""One function's page: edit and deploy, and test with a sample event (docs/console.md)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from kubefaas import wire
from kubefaas.api import Function
from kubefaas_gateway.console import auth, forms, test_logs
from kubefaas_gateway.console.pages import (
    form_data,
    pretty,
    recent_async,
    render,
    state_of,
    store_of,
)
from kubefaas_gateway.console.store import DeployError, DeployForbidden, function_document
from kubefaas_gateway.console.views import SessionDep, invoke_path

router = APIRouter(prefix="/console/functions", include_in_schema=False)

SHOWN_HEADERS = (
    wire.COLD_START_NAME,
    wire.DURATION_MS_NAME,
    wire.INVOCATION_ID_NAME,
    wire.FUNCTION_ERROR_NAME,
    "Content-Type",
    "Location",
    "Retry-After",
)
TEST_DEFAULTS = {
    "mode": "sync",
    "event": '{"name": "console"}',
    "method": "POST",
    "subpath": "/",
    "headers": "Content-Type: application/json",
    "body": "",
}


def _function(
    request: Request, session: auth.Session, namespace: str, name: str, what: str
) -> Function:
    auth.require_namespace(session, namespace, what)
    fn = state_of(request).registry.get(f"{namespace}/{name}")
    if fn is None:
        raise HTTPException(status_code=404, detail=f"no function {namespace}/{name}")
    return fn


def _page(
    request: Request,
    session: auth.Session,
    fn: Function,
    *,
    form: forms.EditForm | None = None,
    test: dict[str, str] | None = None,
    result: dict[str, Any] | None = None,
    deployed: str | None = None,
    deploy_error: str | None = None,
    forbidden: bool = False,
    status: int = 200,
    store_where: str = "",
) -> Response:
    state = state_of(request)
    return render(
        request,
        "function.html",
        session,
        status,
        fn=fn,
        form=form or forms.form_of(function_document(fn), fn),
        fields=forms.FORM_FIELDS,
        runtimes=forms.RUNTIMES,
        event_formats=forms.EVENT_FORMATS,
        test={**TEST_DEFAULTS, **(test or {})},
        result=result,
        deployed=deployed,
        deploy_error=deploy_error,
        forbidden=forbidden,
        url=str(request.base_url).rstrip("/") + invoke_path(fn, state.settings.default_namespace),
        store_where=store_where,
    )


@router.get("/{namespace}/{name}")
async def show(request: Request, namespace: str, name: str, session: SessionDep) -> Response:
    fn = _function(request, session, namespace, name, "see functions")
    store = getattr(request.app.state, "console_store", None)
    where = store.where if store is not None else "the Kubernetes API server"
    return _page(request, session, fn, store_where=where)


@router.post("/{namespace}/{name}/deploy")
async def deploy(request: Request, namespace: str, name: str, session: SessionDep) -> Response:
    submitted = await form_data(request)
    auth.check_csrf(session, submitted.get("csrf"))
    fn = _function(request, session, namespace, name, "deploy functions")
    document, form, valid = forms.apply_form(function_document(fn), submitted)
    if valid is None:
        return _page(
            request,
            session,
            fn,
            form=form,
            status=422,
            deploy_error="not deployed: the Function API refused these fields",
        )
    store = await store_of(request)
    try:
        message = await store.deploy(document)
    except DeployError as exc:
        return _page(
            request,
            session,
            fn,
            form=form,
            deploy_error=exc.message,
            forbidden=isinstance(exc, DeployForbidden),
            status=403 if isinstance(exc, DeployForbidden) else 502,
        )
    # Local mode reloads at once; on a cluster the watch brings the new spec shortly.
    current = state_of(request).registry.get(fn.key) or valid
    return _page(request, session, current, deployed=message, store_where=store.where)


@router.post("/{namespace}/{name}/delete")
async def delete(request: Request, namespace: str, name: str, session: SessionDep) -> Response:
    """Delete the function (the page's Delete, confirmed in the browser first)."""
    submitted = await form_data(request)
    auth.check_csrf(session, submitted.get("csrf"))
    fn = _function(request, session, namespace, name, "delete functions")
    if submitted.get("confirm") != fn.name:
        return _page(
            request,
            session,
            fn,
            status=422,
            deploy_error=f"not deleted: type the function's name ({fn.name}) to confirm",
        )
    store = await store_of(request)
    try:
        message = await store.delete(fn.namespace, fn.name)
    except DeployError as exc:
        return _page(
            request,
            session,
            fn,
            deploy_error=exc.message,
            forbidden=isinstance(exc, DeployForbidden),
            status=403 if isinstance(exc, DeployForbidden) else 502,
        )
    return RedirectResponse(f"/console/functions?notice={quote(message)}", status_code=303)


new_router = APIRouter(prefix="/console/new", include_in_schema=False)


@new_router.get("")
async def new_form(request: Request, session: SessionDep) -> Response:
    namespaces = session.grant.namespaces
    default = state_of(request).settings.default_namespace
    if namespaces is not None and default not in namespaces:
        default = sorted(namespaces)[0]
    document = forms.new_document("", default)
    return render(request, "new.html", session, form=forms.form_of(document, None), error=None)


@new_router.post("")
async def create(request: Request, session: SessionDep) -> Response:
    """Deploy a new function from a name, a namespace and the starter code."""
    submitted = await form_data(request)
    auth.check_csrf(session, submitted.get("csrf"))
    name = submitted.get("name", "").strip()
    namespace = submitted.get("namespace", "").strip() or "default"
    base = forms.new_document(name, namespace)
    if not session.grant.allows(namespace):
        form = forms.form_of(base, None)
        form.name, form.namespace = name, namespace
        assert session.grant.namespaces is not None
        form.errors["namespace"] = [
            f"metadata.namespace: you are logged in with a namespace token for "
            f"{', '.join(sorted(session.grant.namespaces))}; it may not deploy functions in "
            f"namespace {namespace!r}"
        ]
        return render(request, "new.html", session, 403, form=form, error=None)
    if state_of(request).registry.get(f"{namespace}/{name}") is not None:
        form = forms.form_of(base, None)
        form.errors["name"] = [f"metadata.name: function {namespace}/{name} exists already"]
        return render(request, "new.html", session, 409, form=form, error=None)
    document, form, valid = forms.apply_form(base, submitted)
    form.name, form.namespace = name, namespace
    if valid is None:
        return render(request, "new.html", session, 422, form=form, error=None)
    store = await store_of(request)
    try:
        await store.deploy(document)
    except DeployError as exc:
        status = 403 if isinstance(exc, DeployForbidden) else 502
        return render(request, "new.html", session, status, form=form, error=exc.message)
    return RedirectResponse(
        f"/console/functions/{quote(namespace, safe='')}/{quote(name, safe='')}", status_code=303
    )


def _headers(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            pairs.append((key.strip(), value.strip()))
    return pairs


@router.post("/{namespace}/{name}/test")
async def test(request: Request, namespace: str, name: str, session: SessionDep) -> Response:
    submitted = await form_data(request)
    auth.check_csrf(session, submitted.get("csrf"))
    fn = _function(request, session, namespace, name, "test functions")
    test_form = {key: submitted.get(key, value) for key, value in TEST_DEFAULTS.items()}
    is_async = test_form["mode"] == "async"
    if fn.spec.event_format == "http" and not is_async:
        method = test_form["method"].upper() or "POST"
        subpath = "/" + test_form["subpath"].lstrip("/")
        headers = _headers(test_form["headers"])
        body = test_form["body"].encode()
    else:
        method, subpath = "POST", ""
        headers = [("Content-Type", "application/json")]
        body = test_form["event"].encode()
        try:
            json.loads(body or b"null")
        except ValueError as exc:
            result: dict[str, Any] = {"error": f"the sample event is not JSON: {exc}"}
            return _page(request, session, fn, test=test_form, result=result, status=422)
    server = request.scope.get("server") or ("127.0.0.1", state_of(request).settings.port)
    host = server[0] if server[0] not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    ns, nm = quote(fn.namespace, safe=""), quote(fn.name, safe="")
    suffix = "" if subpath == "/" else subpath
    path = f"/async-function/{ns}/{nm}" if is_async else f"/function/{ns}/{nm}{suffix}"
    timeout = aiohttp.ClientTimeout(total=fn.spec.timeout_seconds + 10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.request(
                method, f"http://{host}:{server[1]}{path}", data=body, headers=headers
            ) as answer,
        ):
            text = (await answer.read()).decode("utf-8", "replace")
            result = {
                "status": answer.status,
                "reason": answer.reason,
                "headers": [(h, answer.headers[h]) for h in SHOWN_HEADERS if h in answer.headers],
                "all_headers": list(answer.headers.items()),
                "body": pretty(text),
                "async": is_async,
                "method": method,
                "path": path,
            }
    except (aiohttp.ClientError, TimeoutError) as exc:
        result = {"error": f"could not reach the gateway at {path}: {exc!r}"}
    state = state_of(request)
    if is_async and result.get("status") == 202:
        try:
            invocation_id = json.loads(text)["invocationId"]
        except (ValueError, KeyError, TypeError):
            invocation_id = None
        if invocation_id:
            recent_async(request).appendleft((str(invocation_id), fn.key))
            result["invocation_id"] = invocation_id
            result["record"] = await test_logs.async_outcome(state, str(invocation_id))
    elif "status" in result:
        answered_id = dict(result["headers"]).get(wire.INVOCATION_ID_NAME)
        if answered_id:
            result["invocation_id_sync"] = answered_id
            result["logs"] = await test_logs.sync_logs(state, answered_id)
    result["keeps_logs"] = state.observe is not None and state.observe.logs is not None
    return _page(request, session, fn, test=test_form, result=result)
