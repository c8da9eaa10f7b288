"""Async invocations end to end: a real local-mode gateway process, real runtime processes,
a real SQLite file or a real redis-server, over loopback HTTP (docs/architecture.md,
"Queue semantics").

The gateway runs as its own process (`python -m kubefaas_gateway.local_mode`) so that a test can
`kill -9` it and start it again on the same state. Retry delays are shortened through the
gateway's settings (environment), so every scenario runs in seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from kubefaas import dlq, limits
from tests.loopback import free_port
from tests.redis_server import RedisServer, redis_server, start_redis

__all__ = ["redis_server"]

pytestmark = pytest.mark.local

ADMIN_TOKEN = "test-admin-token"
START_TIMEOUT_SECONDS = 30.0
# Shortened schedule: function-error retries 0.3 s then 0.6 s; throttle backoff from 0.2 s.
FAST_RETRIES = {
    # The sink is a loopback server: allowed past the SSRF guard (docs/security.md).
    "KUBEFAAS_CALLBACK_ALLOWED_CIDRS": "127.0.0.1/32",
    "KUBEFAAS_ASYNC_RETRY_BASE_SECONDS": "0.3",
    "KUBEFAAS_ASYNC_BACKOFF_INITIAL_SECONDS": "0.2",
    "KUBEFAAS_ASYNC_BACKOFF_MAX_SECONDS": "2",
    "KUBEFAAS_ASYNC_RETRY_JITTER": "0",
    "KUBEFAAS_ASYNC_LEASE_MARGIN_SECONDS": "1",
    "KUBEFAAS_ASYNC_POLL_INTERVAL_SECONDS": "0.1",
    "KUBEFAAS_ASYNC_STATS_INTERVAL_SECONDS": "0.2",
    "KUBEFAAS_DEADLINE_GRACE_SECONDS": "0.5",
    "KUBEFAAS_SHUTDOWN_TIMEOUT_SECONDS": "2",
}

# Handlers count their attempts in files under $COUNTS, keyed by what the event names, so a
# count survives instances being replaced and the gateway being killed.
MANIFESTS = """\
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata: {name: echo}
spec:
  runtime: python3.11
  code:
    inline:
      main.py: |
        def handler(event, context):
            return {"got": event, "attempt": context.attempt, "type": context.invocation_type}
---
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata: {name: flaky}
spec:
  runtime: python3.11
  env: [{name: COUNTS, value: "%(counts)s"}]
  async: {maxRetries: %(max_retries)d}
  code:
    inline:
      main.py: |
        import os

        def handler(event, context):
            path = os.path.join(os.environ["COUNTS"], event["key"])
            with open(path, "a") as f:
                f.write("x")
            runs = os.path.getsize(path)
            if runs <= event["failTimes"]:
                raise ValueError(f"failing run {runs} of {event['failTimes']}")
            return {"runs": runs}
---
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata: {name: slow}
spec:
  runtime: python3.11
  timeoutSeconds: 3
  env: [{name: COUNTS, value: "%(counts)s"}]
  code:
    inline:
      main.py: |
        import os
        import time

        def handler(event, context):
            with open(os.path.join(os.environ["COUNTS"], context.request_id), "a") as f:
                f.write("x")
            time.sleep(event.get("sleep", 0.05))
            return {"n": event["n"]}
---
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata: {name: broken}
spec:
  runtime: python3.11
  async:
    maxRetries: 0
    onFailure: {url: "%(sink)s/on-failure"}
  code:
    inline:
      main.py: |
        def handler(event, context):
            raise RuntimeError("broken on purpose")
---
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata: {name: chained}
spec:
  runtime: python3.11
  async:
    onSuccess: {function: echo}
  code:
    inline:
      main.py: |
        def handler(event, context):
            return {"doubled": event["n"] * 2}
"""


@dataclass
class Gateway:
    """One local-mode gateway process; `kill9` and `start` again keep its state."""

    functions: Path
    state_dir: Path
    log_path: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubefaas_gateway.local_mode", str(self.functions),
             "--host", "127.0.0.1", "--port", str(self.port), "--state-dir", str(self.state_dir)],
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the gateway exited at start:\n{self.log_tail()}", pytrace=False)
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        pytest.fail(f"the gateway did not become ready:\n{self.log_tail()}", pytrace=False)

    def environment(self) -> dict[str, str]:
        """Hermetic: the caller's own KUBEFAAS_* settings never leak into the gateway."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("KUBEFAAS_")}
        return {**inherited, **self.env}

    def kill9(self) -> None:
        """A crash: no shutdown code runs (its runtime children die with it)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reap_group()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reap_group()

    def _reap_group(self) -> None:
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- HTTP helpers -------------------------------------------------------------------

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def enqueue(self, function: str, event: Any, **kwargs: Any) -> str:
        response = self.post(f"/async-function/{function}", json=event, **kwargs)
        assert response.status_code == 202, response.text
        invocation_id: str = response.json()["invocationId"]
        return invocation_id

    def record(self, invocation_id: str) -> dict[str, Any]:
        response = self.get(f"/invocations/{invocation_id}")
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        return record

    def wait_for(
        self, invocation_id: str, statuses: tuple[str, ...], timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        record = self.record(invocation_id)
        while record["status"] not in statuses:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"invocation {invocation_id} still {record['status']} after {timeout}s: "
                    f"{json.dumps(record, indent=1)}\ngateway log:\n{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.05)
            record = self.record(invocation_id)
        return record


@dataclass
class Sink:
    """A loopback HTTP server recording what callbacks and destinations POST to it."""

    url: str
    received: list[tuple[str, dict[str, str], bytes]]

    def wait(self, count: int, timeout: float = 20) -> list[tuple[str, dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"{len(self.received)} of {count} callbacks arrived", pytrace=False)
            time.sleep(0.05)
        return list(self.received)


@pytest.fixture
def sink() -> Iterator[Sink]:
    received: list[tuple[str, dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Sink(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def counts(tmp_path: Path) -> Path:
    path = tmp_path / "counts"
    path.mkdir()
    return path


@pytest.fixture
def make_gateway(tmp_path: Path, counts: Path, sink: Sink) -> Iterator[Callable[..., Gateway]]:
    """Starts gateways over the test functions; every one is stopped at the end."""
    started: list[Gateway] = []

    def make(*, admin_token: str | None = ADMIN_TOKEN, max_retries: int = 2, **env: str) -> Gateway:
        n = len(started)
        functions = tmp_path / f"functions-{n}"
        functions.mkdir()
        (functions / "functions.yaml").write_text(
            MANIFESTS % {"counts": counts, "sink": sink.url, "max_retries": max_retries}
        )
        settings = {**FAST_RETRIES, **env}
        if admin_token is not None:
            settings["KUBEFAAS_ADMIN_TOKEN"] = admin_token
        gateway = Gateway(
            functions=functions,
            state_dir=tmp_path / f"state-{n}",
            log_path=tmp_path / f"gateway-{n}.log",
            env=settings,
        )
        started.append(gateway)
        gateway.start()
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


def test_an_async_call_is_accepted_at_once_and_its_result_can_be_looked_up(
    gateway: Gateway,
) -> None:
    response = gateway.post("/async-function/echo", json={"hello": "world"})
    assert response.status_code == 202
    invocation_id = response.json()["invocationId"]
    assert response.headers["location"] == f"/invocations/{invocation_id}"
    assert response.headers["x-invocation-id"] == invocation_id

    record = gateway.wait_for(invocation_id, ("succeeded",))
    assert record["result"] == {"got": {"hello": "world"}, "attempt": 1, "type": "async"}
    assert record["function"] == "default/echo"
    [attempt] = record["attempts"]
    assert attempt["status"] == "succeeded"
    assert record["createdAt"] <= attempt["startedAt"] <= attempt["finishedAt"]

    namespaced = gateway.enqueue("default/echo", {"n": 2})
    assert gateway.wait_for(namespaced, ("succeeded",))["result"]["got"] == {"n": 2}
    assert gateway.get(f"/invocations/{uuid.uuid4()}").status_code == 404


def test_a_failing_function_is_retried_on_schedule_until_it_succeeds(
    gateway: Gateway,
) -> None:
    invocation_id = gateway.enqueue("flaky", {"key": "retry-ok", "failTimes": 2})
    record = gateway.wait_for(invocation_id, ("succeeded", "dead"))

    assert record["status"] == "succeeded"
    assert record["result"] == {"runs": 3}
    attempts = record["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert "failing run 1 of 2" in attempts[0]["error"]["errorMessage"]
    assert attempts[0]["error"]["kind"] == "function_error"
    # 0.3 s then 0.6 s apart (the shortened 1 min / 2 min), never sooner.
    assert attempts[1]["startedAt"] - attempts[0]["finishedAt"] >= 0.3
    assert attempts[2]["startedAt"] - attempts[1]["finishedAt"] >= 0.6


def test_exhausted_retries_dead_letter_then_redrive_succeeds(
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway(max_retries=1)
    invocation_id = gateway.enqueue("flaky", {"key": "redrive", "failTimes": 2})
    dead = gateway.wait_for(invocation_id, ("dead", "succeeded"))
    assert dead["status"] == "dead"
    assert dead["deadLetter"]["reason"] == "retries_exhausted"
    assert [a["status"] for a in dead["attempts"]] == ["failed", "failed"]
    assert all(a["error"]["errorType"] == "ValueError" for a in dead["attempts"])

    listed = gateway.admin("GET", "/system/dead-letters", params={"function": "flaky"})
    assert listed.status_code == 200
    assert [r["invocationId"] for r in listed.json()["items"]] == [invocation_id]

    out = io.StringIO()
    argv = ["--gateway", gateway.url, "--token", ADMIN_TOKEN, "redrive", invocation_id]
    assert dlq.main(argv, out=out) == 0
    assert f"redriven {invocation_id}" in out.getvalue()

    done = gateway.wait_for(invocation_id, ("succeeded",))
    assert done["result"] == {"runs": 3}
    assert [(a["series"], a["status"]) for a in done["attempts"]] == [
        (0, "failed"),
        (0, "failed"),
        (1, "succeeded"),
    ]
    assert gateway.admin("GET", "/system/dead-letters").json()["items"] == []


def test_purge_removes_dead_letters_and_the_cli_reports_it(
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway(max_retries=0)
    first = gateway.enqueue("flaky", {"key": "purge-1", "failTimes": 5})
    second = gateway.enqueue("flaky", {"key": "purge-2", "failTimes": 5})
    for invocation_id in (first, second):
        gateway.wait_for(invocation_id, ("dead",))

    out = io.StringIO()
    base = ["--gateway", gateway.url, "--token", ADMIN_TOKEN]
    assert dlq.main([*base, "list"], out=out) == 0
    assert first in out.getvalue()
    assert second in out.getvalue()

    assert gateway.admin("DELETE", f"/system/dead-letters/{first}").json() == {"purged": 1}
    assert gateway.record(first)["status"] == "failed"
    assert gateway.admin("DELETE", f"/system/dead-letters/{first}").status_code == 404

    out = io.StringIO()
    assert dlq.main([*base, "purge", "--all", "--function", "flaky"], out=out) == 0
    assert "purged 1 dead letter(s)" in out.getvalue()
    assert gateway.admin("GET", "/system/dead-letters").json()["items"] == []


def test_callback_url_receives_the_result_and_the_final_failure(
    gateway: Gateway, sink: Sink
) -> None:
    ok = gateway.enqueue("echo", {"n": 1}, headers={"X-Callback-Url": f"{sink.url}/done"})
    failed = gateway.enqueue("broken", {"n": 2}, headers={"X-Callback-Url": f"{sink.url}/done"})

    # broken also has onFailure -> the sink: three POSTs in all.
    received = sink.wait(3)
    by_id: dict[str, list[tuple[str, dict[str, str], bytes]]] = {}
    for path, headers, body in received:
        by_id.setdefault(headers["x-invocation-id"], []).append((path, headers, body))

    [(path, headers, body)] = by_id[ok]
    assert path == "/done"
    assert headers["x-function-status"] == "succeeded"
    assert json.loads(body) == {"got": {"n": 1}, "attempt": 1, "type": "async"}

    paths = {p: (h, json.loads(b)) for p, h, b in by_id[failed]}
    assert set(paths) == {"/done", "/on-failure"}
    headers, report = paths["/done"]
    assert headers["x-function-status"] == "failed"
    assert report["status"] == "dead"
    assert report["error"]["errorMessage"] == "broken on purpose"
    _, destination = paths["/on-failure"]
    assert destination["requestContext"]["condition"] == "RetriesExhausted"
    assert destination["requestPayload"] == {"n": 2}
    assert destination["responsePayload"]["errorType"] == "RuntimeError"


def test_on_success_function_destination_receives_request_and_response(
    gateway: Gateway,
) -> None:
    gateway.wait_for(gateway.enqueue("chained", {"n": 21}), ("succeeded",))
    # The destination ran as a new async invocation of echo; find it in echo's results.
    deadline = time.monotonic() + 20
    while True:
        text = gateway.get("/metrics").text
        if 'kubefaas_async_enqueued_total{function="echo",namespace="default"}' in text:
            break
        assert time.monotonic() < deadline, "the destination was never enqueued"
        time.sleep(0.05)
    # echo returns its event; wait until the destination's record says so.
    records = _sqlite_records(gateway)
    [echo_id] = [i for i, fn in records if fn == "default/echo"]
    result = gateway.wait_for(echo_id, ("succeeded",))["result"]["got"]
    assert result["requestContext"]["condition"] == "Success"
    assert result["requestPayload"] == {"n": 21}
    assert result["responsePayload"] == {"doubled": 42}


def test_metrics_count_attempts_retries_dead_letters_and_show_the_queue(
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway(max_retries=1)
    gateway.wait_for(gateway.enqueue("flaky", {"key": "metrics", "failTimes": 5}), ("dead",))
    gateway.wait_for(gateway.enqueue("echo", {}), ("succeeded",))

    def sample(name: str, text: str | None = None, **labels: str) -> float | None:
        for line in (text or gateway.get("/metrics").text).splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None

    flaky = {"namespace": "default", "function": "flaky"}
    assert sample("kubefaas_async_enqueued_total", **flaky) == 1
    assert sample("kubefaas_async_attempts_total", outcome="function_error", **flaky) == 2
    assert sample("kubefaas_async_retries_total", **flaky) == 1
    assert sample("kubefaas_async_dead_letters_total", reason="retries_exhausted", **flaky) == 1
    assert sample("kubefaas_async_attempts_total", outcome="succeeded", function="echo") == 1
    assert sample("kubefaas_invocations_total", type="async", function="echo") == 1

    # A backlog shows in the queue gauges and in the autoscaler's feed: slow's events wait
    # for its few async slots.
    for n in range(30):
        gateway.enqueue("slow", {"n": n, "sleep": 1.5})
    deadline = time.monotonic() + 10
    while True:
        queued = gateway.get("/internal/stats").json()["functions"]["default/slow"]["queued"]
        text = gateway.get("/metrics").text
        depth = sample("kubefaas_async_queue_depth", text, function="slow")
        if depth and queued:
            break
        assert time.monotonic() < deadline, "the backlog never showed in the depth gauge"
        time.sleep(0.05)
    assert depth > 0
    assert (sample("kubefaas_async_oldest_event_age_seconds", text, function="slow") or 0) > 0
    assert sample("kubefaas_async_inflight_events", text, function="slow") is not None


def _sqlite_records(gateway: Gateway) -> list[tuple[str, str]]:
    with sqlite3.connect(gateway.state_dir / "async-queue.sqlite3") as conn:
        return conn.execute("SELECT id, function FROM invocations").fetchall()


def test_too_large_or_unknown_is_refused_and_nothing_is_stored(gateway: Gateway) -> None:
    too_big = b"x" * (limits.ASYNC_BODY_LIMIT_BYTES + 1)
    response = gateway.post("/async-function/echo", content=too_big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "PayloadTooLarge"

    def chunks() -> Iterator[bytes]:  # no Content-Length: caught while streaming
        for _ in range(limits.ASYNC_BODY_LIMIT_BYTES // 65536 + 2):
            yield b"y" * 65536

    response = gateway.post("/async-function/echo", content=chunks())
    assert response.status_code == 413

    response = gateway.post("/async-function/nope", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "FunctionNotFound"
    response = gateway.post("/async-function/other-ns/echo", json={})
    assert response.status_code == 404

    response = gateway.post(
        "/async-function/echo", json={}, headers={"X-Callback-Url": "file:///etc/passwd"}
    )
    assert response.status_code == 400

    exactly = gateway.post("/async-function/echo", content=b"z" * limits.ASYNC_BODY_LIMIT_BYTES)
    assert exactly.status_code == 202
    assert _sqlite_records(gateway) == [(exactly.json()["invocationId"], "default/echo")]


def test_admin_routes_need_the_token(make_gateway: Callable[..., Gateway]) -> None:
    gateway = make_gateway()
    for method, path in [
        ("GET", "/system/dead-letters"),
        ("POST", "/system/dead-letters/x/redrive"),
        ("DELETE", "/system/dead-letters/x"),
        ("DELETE", "/system/dead-letters"),
    ]:
        missing = httpx.request(method, gateway.url + path, timeout=10)
        assert missing.status_code == 401, (method, path)
        assert missing.json()["error"]["type"] == "Unauthorized"
        wrong = httpx.request(
            method, gateway.url + path, headers={"Authorization": "Bearer nope"}, timeout=10
        )
        assert wrong.status_code == 401
    assert gateway.admin("GET", "/system/dead-letters").status_code == 200

    out = io.StringIO()
    err = io.StringIO()
    with redirect_stderr(err):
        assert dlq.main(["--gateway", gateway.url, "--token", "nope", "list"], out=out) == 1
    assert "401" in err.getvalue()

    unset = make_gateway(admin_token=None)
    refused = unset.admin("GET", "/system/dead-letters")
    assert refused.status_code == 403
    assert "KUBEFAAS_ADMIN_TOKEN" in refused.json()["error"]["message"]


@pytest.mark.redis
def test_no_202_when_the_queue_cannot_store_the_event(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    server = start_redis(tmp_path / "own-redis")
    try:
        gateway = make_gateway(KUBEFAAS_REDIS_URL=server.url)
        assert gateway.post("/async-function/echo", json={}).status_code == 202
    finally:
        server.stop()
    response = gateway.post("/async-function/echo", json={})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "NoCapacity"
    assert "could not store" in error["message"]


EVENTS_UNDER_KILL = 200


async def _enqueue_until_killed(gateway: Gateway, kill_after: int) -> list[str]:
    """POST events 16 at a time; kill -9 the gateway once `kill_after` were accepted."""
    accepted: list[str] = []
    numbers = iter(range(EVENTS_UNDER_KILL))
    killed = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        for n in numbers:
            try:
                async with session.post(
                    f"{gateway.url}/async-function/slow", json={"n": n}
                ) as response:
                    if response.status == 202:
                        accepted.append((await response.json())["invocationId"])
            except aiohttp.ClientError:
                pass  # the gateway died under this request: no 202, no promise
            if len(accepted) >= kill_after and not killed.is_set():
                killed.set()
                gateway.kill9()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(16)))
    assert killed.is_set()
    return accepted


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_no_acknowledged_event_is_lost_when_the_gateway_is_killed(
    backend: str,
    make_gateway: Callable[..., Gateway],
    counts: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = {}
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env = {
            "KUBEFAAS_REDIS_URL": server.url,
            "KUBEFAAS_REDIS_PREFIX": f"kill-{uuid.uuid4().hex[:8]}",
        }
    gateway = make_gateway(**env)
    accepted = asyncio.run(_enqueue_until_killed(gateway, kill_after=EVENTS_UNDER_KILL // 2))
    assert len(accepted) >= EVENTS_UNDER_KILL // 2

    gateway.start()  # same state dir / same Redis prefix
    deadline = time.monotonic() + 60
    for invocation_id in accepted:
        record = gateway.wait_for(
            invocation_id, ("succeeded",), timeout=max(1.0, deadline - time.monotonic())
        )
        assert record["result"]["n"] >= 0
        assert (counts / invocation_id).exists(), "the handler ran for this event"
