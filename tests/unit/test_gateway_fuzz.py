"""A hypothesis-driven run over every route of the gateway, in-process (docs/security.md,
"Fuzzing the routes").

The real app (`create_app`) over stand-in runtimes on loopback, as in
test_gateway_invoke.py, with the SQLite queue in the test's folder: random methods, paths
built from the app's own route templates (or random), random headers among those the
gateway reads, random bodies. What a caller must never see is a 500 or an unhandled error:
the only 5xx answers the gateway documents are 502, 503 and 504 for upstream conditions
(docs/architecture.md, "Gateway HTTP API"), and the stand-ins here answer well, so any 5xx
besides those is a bug.
"""

from __future__ import annotations

import json
import string
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # see test_gateway_invoke.py
    from fastapi.testclient import TestClient

from kubefaas_gateway.app import create_app
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.tracker import Tracker
from tests.unit.test_gateway_invoke import Answer, FakeBackend, StandInRuntime, function

ADMIN = "fuzz-admin-token"
DOCUMENTED_5XX = {502, 503, 504}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
HEADERS = [
    "authorization",
    "content-type",
    "accept",
    "x-callback-url",
    "x-invocation-id",
    "idempotency-key",
    "x-deadline-ms",
    "x-api-key",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "traceparent",
    "cookie",
    "if-none-match",
]
INVOKE_TEMPLATES = [
    "/function",
    "/function/{name}",
    "/function/{namespace}/{name}",
    "/function/{namespace}/{name}/{rest:path}",
    "/console",
    "/console/{rest:path}",
]
# Filled by the fixture: ids of real invocations, so the lookup routes find something.
INVOCATION_IDS: list[str] = ["0" * 32, "not-an-id"]
KNOWN = ["default", "echo", "shop", "items"]
SEGMENTS = [*KNOWN, "nope", "..", ".", "%2F", "%00", "a" * 300, ""]
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
VALUES = st.one_of(
    HEADER_TEXT,
    st.sampled_from(
        [
            f"Bearer {ADMIN}",
            "Bearer x",
            "application/json",
            "text/plain; charset=utf-8",
            "http://127.0.0.1:1/cb",
            "https://203.0.113.9/cb",
            "-1",
            "0",
            "99999999999999999999",
            "1e309",
            "nan",
        ]
    ),
)
BODIES = st.one_of(
    st.binary(max_size=512),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    ).map(lambda value: json.dumps(value).encode()),
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    state: Path = tmp_path_factory.mktemp("fuzz-state")
    fns = [function("echo"), function("items", "shop")]
    runtimes = [StandInRuntime(lambda received: Answer()) for _ in fns]
    backend = FakeBackend()
    for fn, runtime in zip(fns, runtimes, strict=True):
        backend.ports[fn.key] = runtime.port
    app = create_app(
        Settings(state_dir=state, admin_token=ADMIN, sync_body_limit_bytes=64 * 1024),
        backend,
        FunctionRegistry(fns),
        tracker=Tracker(),
        background=(),
    )
    with TestClient(app, raise_server_exceptions=True) as test_client:
        submitted = test_client.post("/async-function/echo", content=b"{}")
        assert submitted.status_code == 202, submitted.text
        INVOCATION_IDS.append(submitted.json()["invocationId"])
        # Every route FastAPI knows, plus the raw invoke route and the console.
        test_client.app_routes = [  # type: ignore[attr-defined]
            *((path, [m.upper() for m in ops]) for path, ops in app.openapi()["paths"].items()),
            *((path, METHODS) for path in INVOKE_TEMPLATES),
        ]
        yield test_client
    for runtime in runtimes:
        runtime.close()


@st.composite
def requests(draw: st.DrawFn, routes: list[tuple[str, list[str]]]) -> tuple[str, str]:
    """A method and a path: mostly one a route serves, sometimes anything."""
    template, methods = draw(st.sampled_from(routes))
    method = draw(st.sampled_from(methods if draw(st.integers(0, 5)) else METHODS))
    if draw(st.integers(0, 9)) == 0:
        return method, "/" + draw(st.text(alphabet=string.ascii_letters + "/%._-~", max_size=60))
    parts = []
    for part in template.split("/"):
        if part.startswith("{"):
            if part == "{invocation_id}" and draw(st.booleans()):
                part = draw(st.sampled_from(INVOCATION_IDS))
            elif draw(st.integers(0, 3)):
                part = draw(st.sampled_from(KNOWN))
            else:
                part = draw(
                    st.sampled_from(SEGMENTS) | st.text(string.ascii_lowercase, max_size=12)
                )
            if part.endswith(":path}"):
                part = "/".join(draw(st.lists(st.sampled_from(SEGMENTS), max_size=3)))
        parts.append(part)
    path = "/".join(parts)
    if draw(st.booleans()):
        path += "?" + draw(
            st.sampled_from(
                [
                    "limit=0",
                    "limit=-5",
                    "limit=x",
                    "cursor=%%",
                    "function=nope/x",
                    "function=",
                    "a=b&a=c",
                ]
            )
        )
    return method, path


# The app's own threads (the TestClient's event loop: async dispatchers' poll jitter) use
# the `random` module while examples are drawn; hypothesis would take that for a strategy
# using it.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_route_answers_an_undocumented_5xx(client: TestClient, data: st.DataObject) -> None:
    routes: list[tuple[str, list[str]]] = client.app_routes  # type: ignore[attr-defined]
    method, path = data.draw(requests(routes), label="request")
    headers = data.draw(
        st.dictionaries(st.sampled_from(HEADERS), VALUES, max_size=5), label="headers"
    )
    body = data.draw(BODIES, label="body") if method not in ("GET", "HEAD") else b""
    response = client.request(method, path, headers=headers, content=body)
    assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX, (
        response.status_code,
        response.text[:500],
    )
    json_answer = response.headers.get("content-type", "").startswith("application/json")
    if response.status_code >= 400 and method != "HEAD" and response.content and json_answer:
        # The gateway's error format everywhere; FastAPI's own only on the console's pages.
        console = path.split("?")[0].startswith("/console")
        assert "error" in response.json() or (console and "detail" in response.json()), (
            response.text
        )
