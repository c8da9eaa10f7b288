"""The sync invoke route and the invoke core, through the real app with a fake backend.

Instances are stand-in runtimes: a stdlib HTTP server per function on loopback, answering
with a scripted response and recording what the gateway sent. The backend is a fake that
hands those out (cold the first time), so these tests cover routing, forwarding, error
mapping, limits, throttling and metrics without starting processes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

with warnings.catch_warnings():
    # Starlette's TestClient prefers the `httpx2` package and warns (an error under our
    # test settings) when it falls back to httpx, which works the same for these tests.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from kubefaas.api import Function, parse_function
from kubefaas_gateway.app import create_app
from kubefaas_gateway.backends.base import Acquired, Instance
from kubefaas_gateway.dependencies import get_registry
from kubefaas_gateway.errors import InvocationError, InvocationTimeout, NoCapacity
from kubefaas_gateway.invoker import new_invocation_id
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.routers.sync_invoke import resolve
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.tracker import Tracker

BODY_LIMIT = 64 * 1024


# -- stand-ins -----------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    body: bytes = b'{"ok": true}'
    delay: float = 0.0
    hang_up: bool = False  # close the connection without answering (the instance died)


Responder = Callable[[Received], Answer]


class StandInRuntime:
    """A loopback HTTP server that answers like a runtime would (scripted)."""

    def __init__(self, respond: Responder) -> None:
        self.received: list[Received] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                got = Received(
                    method=self.command,
                    target=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                outer.received.append(got)
                answer = respond(got)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.hang_up:
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeBackend:
    """Hands out the stand-in runtime of each function; the first acquire is a cold start."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.warm: set[str] = set()
        self.evicted: list[str] = []
        self.refuse_first: set[str] = set()  # first acquire returns a dead port
        self.fail_start: dict[str, InvocationError] = {}
        self.started = False
        self.stopped = False
        self._instances: dict[str, Instance] = {}

    async def start(self, *, tracker: Tracker) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def acquire(self, fn: Function, deadline: float) -> Acquired:
        if fn.key in self.fail_start:
            raise self.fail_start[fn.key]
        if fn.key in self.refuse_first:
            self.refuse_first.discard(fn.key)
            return Acquired(Instance("dead", fn.key, "127.0.0.1", _closed_port()), False)
        cold = fn.key not in self.warm
        self.warm.add(fn.key)
        instance = Instance(f"{fn.name}-1", fn.key, "127.0.0.1", self.ports[fn.key], ready=True)
        self._instances[fn.key] = instance
        return Acquired(instance, cold)

    def evict(self, instance: Instance) -> None:
        self.evicted.append(instance.id)

    def instances(self, fn: Function) -> list[Instance]:
        return [self._instances[fn.key]] if fn.key in self._instances else []

    def ready_count(self, fn: Function) -> int:
        return len(self.instances(fn))

    async def scale(self, fn: Function, replicas: int) -> None:
        if replicas == 0:
            self.warm.discard(fn.key)
            self._instances.pop(fn.key, None)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def function(name: str, namespace: str = "default", **spec: Any) -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(event, context): pass"}},
                **spec,
            },
        }
    )


@dataclass
class Harness:
    app: FastAPI
    backend: FakeBackend
    registry: FunctionRegistry
    tracker: Tracker
    runtimes: dict[str, StandInRuntime]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Build an app over stand-in runtimes: harness((fn, responder), ..., **settings).

    The async queue's SQLite file goes to the test's own folder, never the working tree.
    """
    runtimes: list[StandInRuntime] = []

    def build(*functions: tuple[Function, Responder], **overrides: Any) -> Harness:
        backend = FakeBackend()
        by_key = {}
        for fn, respond in functions:
            runtime = StandInRuntime(respond)
            runtimes.append(runtime)
            backend.ports[fn.key] = runtime.port
            by_key[fn.key] = runtime
        registry = FunctionRegistry(fn for fn, _ in functions)
        tracker = Tracker()
        settings = Settings(
            sync_body_limit_bytes=BODY_LIMIT, state_dir=tmp_path / "state", **overrides
        )
        app = create_app(settings, backend, registry, tracker=tracker, background=())
        return Harness(app, backend, registry, tracker, by_key)

    yield build
    for runtime in runtimes:
        runtime.close()


def ok(received: Received) -> Answer:
    return Answer(body=json.dumps({"echo": received.body.decode()}).encode())


# -- path resolution -------------------------------------------------------------------------


@pytest.fixture
def registry() -> FunctionRegistry:
    return FunctionRegistry([function("hello"), function("http"), function("items", "shop")])


@pytest.mark.parametrize(
    ("path", "key", "sub_path"),
    [
        ("/function/hello", "default/hello", "/"),
        ("/function/hello/", "default/hello", "/"),
        ("/function/default/hello", "default/hello", "/"),
        ("/function/default/hello/a/b", "default/hello", "/a/b"),
        ("/function/http/items/42", "default/http", "/items/42"),
        ("/function/shop/items", "shop/items", "/"),
        ("/function/shop/items/x%2Fy", "shop/items", "/x%2Fy"),
    ],
)
def test_paths_resolve_to_function_and_sub_path(
    registry: FunctionRegistry, path: str, key: str, sub_path: str
) -> None:
    fn, rest = resolve(registry, path, "default")
    assert (fn.key, rest) == (key, sub_path)


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/function/nope", "default/nope"),
        ("/function/shop/nope", "shop/nope"),
        ("/function/", "no function named"),
        ("/function", "no function named"),
    ],
)
def test_unknown_paths_name_what_was_looked_for(
    registry: FunctionRegistry, path: str, named: str
) -> None:
    with pytest.raises(InvocationError, match=named) as caught:
        resolve(registry, path, "default")
    assert caught.value.status == 404


# -- through the app --------------------------------------------------------------------------


def test_unknown_function_is_404_with_invocation_id(harness: Callable[..., Harness]) -> None:
    h = harness((function("hello"), ok))
    with TestClient(h.app) as client:
        response = client.post("/function/nope", json={})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "FunctionNotFound"
    assert "default/nope" in error["message"]
    assert error["invocationId"] == response.headers["x-invocation-id"]


def test_success_passes_status_body_and_headers_with_cold_then_warm(
    harness: Callable[..., Harness],
) -> None:
    def created(received: Received) -> Answer:
        return Answer(
            status=201,
            headers={"Content-Type": "text/plain", "X-Handled-By": "stand-in"},
            body=b"made it",
        )

    h = harness((function("maker", eventFormat="http"), created))
    with TestClient(h.app) as client:
        first = client.post("/function/maker", content=b"x")
        second = client.post("/function/maker", content=b"x")
    assert first.status_code == 201
    assert first.text == "made it"
    assert first.headers["content-type"] == "text/plain"
    assert first.headers["x-handled-by"] == "stand-in"
    assert first.headers["x-cold-start"] == "true"
    assert second.headers["x-cold-start"] == "false"
    assert float(first.headers["x-duration-ms"]) >= 0
    sent_ids = [r.headers["x-invocation-id"] for r in h.runtimes["default/maker"].received]
    assert sent_ids == [first.headers["x-invocation-id"], second.headers["x-invocation-id"]]
    assert first.headers["x-invocation-id"] != second.headers["x-invocation-id"]


def test_request_is_forwarded_with_sub_path_query_body_and_contract_headers(
    harness: Callable[..., Harness],
) -> None:
    h = harness((function("echo", timeoutSeconds=7), ok))
    before = time.time()
    with TestClient(h.app) as client:
        response = client.put(
            "/function/default/echo/items/42?verbose=1&q=a%20b",
            content=b'{"name": "kube"}',
            headers={
                "Content-Type": "application/json",
                "X-Custom": "kept",
                "X-Invocation-Id": "forged",
                "X-Deadline-Ms": "1",
                "Proxy-Authorization": "secret",
            },
        )
    assert response.status_code == 200
    sent = h.runtimes["default/echo"].received[0]
    assert sent.method == "PUT"
    assert sent.target == "/items/42?verbose=1&q=a%20b"
    assert sent.body == b'{"name": "kube"}'
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-custom"] == "kept"
    assert sent.headers["host"] == "testserver"  # the caller's, as an http event expects
    assert "proxy-authorization" not in sent.headers
    assert sent.headers["x-invocation-id"] == response.headers["x-invocation-id"] != "forged"
    assert sent.headers["x-invocation-type"] == "sync"
    assert sent.headers["x-attempt"] == "1"
    deadline = int(sent.headers["x-deadline-ms"]) / 1000
    assert before + 7 <= deadline <= time.time() + 7


def test_no_header_is_added_that_the_caller_did_not_send(
    harness: Callable[..., Harness],
) -> None:
    """An http-event handler sees the caller's headers, not the proxy's client defaults."""
    h = harness((function("echo"), ok))
    with TestClient(h.app) as client:
        for name in ("user-agent", "accept", "accept-encoding"):
            del client.headers[name]
        client.post("/function/echo", content=b"raw")
    sent = h.runtimes["default/echo"].received[0].headers
    for name in ("user-agent", "accept", "accept-encoding", "content-type"):
        assert name not in sent


def test_handler_error_is_502_with_the_runtime_error_report(
    harness: Callable[..., Harness],
) -> None:
    def raises(received: Received) -> Answer:
        report = {"errorType": "RuntimeError", "errorMessage": "boom", "stackTrace": ["line 2"]}
        return Answer(
            status=500,
            headers={"Content-Type": "application/json", "X-Function-Error": "Unhandled"},
            body=json.dumps(report).encode(),
        )

    h = harness((function("fail"), raises))
    with TestClient(h.app) as client:
        response = client.post("/function/fail", json={})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "FunctionFailed"
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "boom"
    assert "RuntimeError: boom" in error["message"]
    assert error["invocationId"] == response.headers["x-invocation-id"]


def test_error_answers_carry_cold_start_and_duration(harness: Callable[..., Harness]) -> None:
    """Every answer, a failed one too, says whether it waited for a start.

    See docs/architecture.md, "Gateway HTTP API".
    """

    def raises(received: Received) -> Answer:
        return Answer(
            status=500,
            headers={"Content-Type": "application/json", "X-Function-Error": "Unhandled"},
            body=b'{"errorType": "ValueError", "errorMessage": "no"}',
        )

    h = harness((function("fail"), raises))
    with TestClient(h.app) as client:
        cold = client.post("/function/fail", json={})
        warm = client.post("/function/fail", json={})
        unknown = client.post("/function/nope", json={})
    assert (cold.status_code, warm.status_code, unknown.status_code) == (502, 502, 404)
    assert cold.headers["x-cold-start"] == "true"
    assert warm.headers["x-cold-start"] == "false"
    assert unknown.headers["x-cold-start"] == "false"
    for response in (cold, warm, unknown):
        assert float(response.headers["x-duration-ms"]) >= 0


def test_runtime_timeout_is_504(harness: Callable[..., Harness]) -> None:
    def timed_out(received: Received) -> Answer:
        return Answer(status=504, headers={"X-Function-Error": "Timeout"}, body=b"{}")

    h = harness((function("slow"), timed_out))
    with TestClient(h.app) as client:
        response = client.post("/function/slow", json={})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "FunctionTimedOut"


def test_instance_silent_past_the_deadline_is_504(harness: Callable[..., Harness]) -> None:
    def silent(received: Received) -> Answer:
        return Answer(delay=2.0)

    h = harness((function("stuck", timeoutSeconds=1), silent), deadline_grace_seconds=0.1)
    with TestClient(h.app) as client:
        started = time.monotonic()
        response = client.post("/function/stuck", json={})
        took = time.monotonic() - started
    assert response.status_code == 504
    assert "timeout" in response.json()["error"]["message"]
    assert 1.0 <= took < 1.9
    assert h.tracker.concurrency("default/stuck") == 0


def test_http_handler_chosen_error_status_passes_through(
    harness: Callable[..., Harness],
) -> None:
    def teapot(received: Received) -> Answer:
        return Answer(status=503, body=b'{"why": "maintenance"}')

    h = harness((function("web", eventFormat="http"), teapot))
    with TestClient(h.app) as client:
        response = client.get("/function/web")
    assert response.status_code == 503
    assert response.json() == {"why": "maintenance"}
    assert response.headers["x-cold-start"] == "true"


def test_json_function_error_status_without_report_is_502(
    harness: Callable[..., Harness],
) -> None:
    def broken(received: Received) -> Answer:
        return Answer(status=500, headers={"Content-Type": "text/plain"}, body=b"runtime fault")

    h = harness((function("broken"), broken))
    with TestClient(h.app) as client:
        response = client.post("/function/broken", json={})
    assert response.status_code == 502
    assert response.json()["error"]["errorMessage"] == "runtime fault"


def test_instance_that_hangs_up_is_502_and_the_gateway_keeps_serving(
    harness: Callable[..., Harness],
) -> None:
    calls = {"n": 0}

    def dies_once(received: Received) -> Answer:
        calls["n"] += 1
        return Answer(hang_up=calls["n"] == 1)

    h = harness((function("crashy"), dies_once))
    with TestClient(h.app) as client:
        first = client.post("/function/crashy", json={})
        second = client.post("/function/crashy", json={})
    assert first.status_code == 502
    assert first.json()["error"]["errorType"] == "InstanceLost"
    assert second.status_code == 200


def test_refused_connection_evicts_the_instance_and_tries_another(
    harness: Callable[..., Harness],
) -> None:
    h = harness((function("hello"), ok))
    h.backend.refuse_first.add("default/hello")
    with TestClient(h.app) as client:
        response = client.post("/function/hello", content=b"hi")
    assert response.status_code == 200
    assert response.json() == {"echo": "hi"}
    assert h.backend.evicted == ["dead"]


@pytest.mark.parametrize(
    ("error", "status"),
    [(NoCapacity("cannot start"), 503), (InvocationTimeout("no instance in time"), 504)],
)
def test_activation_failures_map_to_503_and_504(
    harness: Callable[..., Harness], error: InvocationError, status: int
) -> None:
    h = harness((function("hello"), ok))
    h.backend.fail_start["default/hello"] = error
    with TestClient(h.app) as client:
        response = client.post("/function/hello", json={})
    assert response.status_code == status
    assert response.json()["error"]["message"] == error.message
    assert h.tracker.concurrency("default/hello") == 0


def test_body_over_the_limit_is_413_before_reading_it(harness: Callable[..., Harness]) -> None:
    h = harness((function("hello"), ok))
    with TestClient(h.app) as client:
        response = client.post("/function/hello", content=b"x" * (BODY_LIMIT + 1))
        at_limit = client.post("/function/hello", content=b"x" * BODY_LIMIT)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "PayloadTooLarge"
    assert "x-invocation-id" in response.headers
    assert at_limit.status_code == 200
    assert len(h.runtimes["default/hello"].received) == 1  # only the one at the limit


@pytest.fixture
async def async_client(
    harness: Callable[..., Harness],
) -> AsyncIterator[Callable[..., Any]]:
    """An httpx client over ASGITransport, which hands the body to the app chunk by chunk."""
    entered: list[Any] = []

    async def make(h: Harness) -> httpx.AsyncClient:
        lifespan = h.app.router.lifespan_context(h.app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url="http://gw")
        entered.append((lifespan, client))
        return client

    yield make
    for lifespan, client in entered:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_streamed_body_is_cut_off_at_the_limit(
    harness: Callable[..., Harness], async_client: Callable[..., Any]
) -> None:
    h = harness((function("hello"), ok))
    client = await async_client(h)
    chunk = b"x" * 16 * 1024
    sent = {"chunks": 0}

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1000):  # 16 MiB if anyone read it all
            sent["chunks"] += 1
            yield chunk

    response = await client.post("/function/hello", content=endless())
    assert response.status_code == 413
    # Read up to the limit and one chunk past it, not a byte of the rest.
    assert sent["chunks"] == BODY_LIMIT // len(chunk) + 1
    assert h.runtimes["default/hello"].received == []


async def test_over_reserved_concurrency_is_429_with_retry_after(
    harness: Callable[..., Harness], async_client: Callable[..., Any]
) -> None:
    def slow(received: Received) -> Answer:
        return Answer(delay=0.5)

    capped = function("capped", scaling={"reservedConcurrency": 1})
    h = harness((capped, slow))
    client = await async_client(h)
    first = asyncio.create_task(client.post("/function/capped", json={}))
    async with asyncio.timeout(5):
        while h.tracker.concurrency(capped.key) == 0:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.01)
    throttled = await client.post("/function/capped", json={})
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "1"
    assert throttled.json()["error"]["type"] == "Throttled"
    assert (await first).status_code == 200
    assert (await client.post("/function/capped", json={})).status_code == 200


def test_metrics_count_invocations_by_code_and_cold_starts(
    harness: Callable[..., Harness],
) -> None:
    def by_body(received: Received) -> Answer:
        if received.body == b"fail":
            return Answer(status=500, headers={"X-Function-Error": "Unhandled"}, body=b"{}")
        return Answer()

    h = harness((function("mixed"), by_body))
    with TestClient(h.app) as client:
        for body in (b"ok", b"ok", b"fail"):
            client.post("/function/mixed", content=body)
        text = client.get("/metrics").text
    fn = {"namespace": "default", "function": "mixed"}
    assert sample(text, "kubefaas_invocations_total", **fn, code="200", type="sync") == 2
    assert sample(text, "kubefaas_invocations_total", **fn, code="502", type="sync") == 1
    assert sample(text, "kubefaas_cold_starts_total", **fn) == 1
    assert sample(text, "kubefaas_invocation_duration_seconds_count", **fn, type="sync") == 3
    assert sample(text, "kubefaas_inflight_requests", **fn) == 0
    assert sample(text, "kubefaas_instances", **fn, state="ready") == 1


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, None if absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def test_probes_and_lifespan_start_and_stop_the_backend(harness: Callable[..., Harness]) -> None:
    h = harness((function("hello"), ok))
    with TestClient(h.app) as client:
        assert h.backend.started
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["functions"] == 1
    assert h.backend.stopped


def test_stats_report_load_per_function_and_follow_dependency_overrides(
    harness: Callable[..., Harness],
) -> None:
    h = harness((function("hello"), ok))
    with TestClient(h.app) as client:
        client.post("/function/hello", json={})
        stats = client.get("/internal/stats").json()["functions"]
        assert stats["default/hello"]["inFlight"] == 0
        assert stats["default/hello"]["idleSeconds"] >= 0
        assert stats["default/hello"]["readyInstances"] == 1
        h.app.dependency_overrides[get_registry] = lambda: FunctionRegistry([function("other")])
        assert list(client.get("/internal/stats").json()["functions"]) == ["default/other"]


def test_paths_outside_function_are_left_to_fastapi(harness: Callable[..., Harness]) -> None:
    h = harness((function("hello"), ok))
    with TestClient(h.app) as client:
        response = client.get("/functions-list")
    assert response.status_code == 404
    assert "x-invocation-id" not in response.headers


def test_invocation_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_invocation_id() for _ in range(2000)]  # crosses several refills of the pool
    assert len(set(ids)) == len(ids)
    for text in ids[:300]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text
