"""The runtime's ASGI app driven in-process: what a caller of a function instance sees."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from kubefaas_runtime.app import RuntimeApp
from kubefaas_runtime.config import EventFormat, Settings


@dataclass
class Runtime:
    app: RuntimeApp
    client: httpx.AsyncClient
    module_name: str

    @property
    def module(self) -> ModuleType:
        """The user's module as the runtime imported it (to reach its state)."""
        return sys.modules[self.module_name]

    async def invoke(self, payload: Any = None, **kwargs: Any) -> httpx.Response:
        if payload is not None:
            kwargs["json"] = payload
        return await self.client.post("/", **kwargs)


Make = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(tmp_path: Path) -> AsyncIterator[Make]:
    """Write a handler module, build the app around it, optionally run its init."""
    made: list[Runtime] = []
    code_dir = tmp_path / "code"
    code_dir.mkdir()

    async def make(
        source: str | None,
        *,
        function: str = "handler",
        initialize: bool = True,
        **overrides: Any,
    ) -> Runtime:
        module_name = f"fn_{uuid.uuid4().hex}"
        if source is not None:
            (code_dir / f"{module_name}.py").write_text(textwrap.dedent(source))
        settings = replace(
            Settings(
                code_dir=str(code_dir),
                handler=f"{module_name}.{function}",
                function_name="hello",
                function_namespace="team-a",
                function_version="4",
                memory_mb=512,
                tmp_dir=str(tmp_path / "scratch"),
                max_threads=8,
            ),
            **overrides,
        )
        app = RuntimeApp(settings)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn")
        runtime = Runtime(app, client, module_name)
        made.append(runtime)
        if initialize:
            await app.initialize()
        return runtime

    yield make

    for runtime in made:
        await runtime.client.aclose()
        runtime.app.close()
        sys.modules.pop(runtime.module_name, None)
    while str(code_dir) in sys.path:
        sys.path.remove(str(code_dir))


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def _deadline_in(seconds: float) -> dict[str, str]:
    return {"X-Deadline-Ms": str(int((time.time() + seconds) * 1000))}


COUNTER = """
    calls = 0

    def handler(event, context):
        global calls
        calls += 1
        return {"calls": calls, "event": event}
"""

BLOCKING_SYNC = """
    import threading
    entered = threading.Event()
    release = threading.Event()

    def handler(event, context):
        if event.get("block"):
            entered.set()
            release.wait(10)
            return "late"
        return "quick"
"""


# --- health and init ----------------------------------------------------------------


async def test_healthz_is_503_starting_before_init_and_200_after(make_runtime: Make) -> None:
    runtime = await make_runtime(COUNTER, initialize=False)
    before = await runtime.client.get("/healthz")
    assert before.status_code == 503
    assert before.json() == {"status": "starting"}

    await runtime.app.initialize()
    after = await runtime.client.get("/healthz")
    assert after.status_code == 200
    assert after.json() == {"status": "ok"}


async def test_healthz_answers_while_a_slow_init_is_running(
    make_runtime: Make, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    runtime = await make_runtime(
        f"""
        import os, time
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        LOADED_AT = time.time()

        def handler(event, context):
            return "loaded"
        """,
        initialize=False,
    )
    init = asyncio.create_task(runtime.app.initialize())
    pending_call = asyncio.create_task(runtime.invoke({}))
    await asyncio.sleep(0.05)

    during = await runtime.client.get("/healthz")
    assert during.status_code == 503
    assert during.json() == {"status": "starting"}
    assert not pending_call.done()

    go.touch()
    await init
    assert (await runtime.client.get("/healthz")).status_code == 200
    # A call that arrived during init waited for it rather than failing.
    response = await pending_call
    assert response.status_code == 200
    assert response.json() == "loaded"


@pytest.mark.parametrize(
    ("source", "function", "error_type", "message"),
    [
        (
            "def handler(event, context)\n    return 1\n",
            "handler",
            "Runtime.ImportModuleError",
            "Syntax error in module",
        ),
        (None, "handler", "Runtime.ImportModuleError", "Unable to import module"),
        (
            "import package_that_is_not_installed\n",
            "handler",
            "Runtime.ImportModuleError",
            "No module named 'package_that_is_not_installed'",
        ),
        ("def other(event, context): ...\n", "handler", "Runtime.HandlerNotFound", "missing"),
        ("handler = 42\n", "handler", "Runtime.HandlerNotFound", "not a function"),
        (
            "import os\nDB = os.environ['KUBEFAAS_TEST_UNSET_VARIABLE']\n",
            "handler",
            "KeyError",
            "KUBEFAAS_TEST_UNSET_VARIABLE",
        ),
        ("import sys\nsys.exit(3)\n", "handler", "SystemExit", "sys.exit(3)"),
    ],
    ids=[
        "syntax-error",
        "missing-module",
        "missing-dependency",
        "missing-function",
        "not-callable",
        "exception-at-import",
        "exit-at-import",
    ],
)
async def test_init_failure_keeps_the_instance_up_and_answers_every_call_with_the_cause(
    make_runtime: Make,
    caplog: pytest.LogCaptureFixture,
    source: str | None,
    function: str,
    error_type: str,
    message: str,
) -> None:
    runtime = await make_runtime(source, function=function)

    health = await runtime.client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "init-failed"
    assert health.json()["error"]["errorType"] == error_type

    for _ in range(2):
        response = await runtime.invoke({"any": "event"}, headers={"X-Invocation-Id": "inv-1"})
        assert response.status_code == 500
        assert response.headers["x-function-error"] == "Unhandled"
        assert response.headers["x-invocation-id"] == "inv-1"
        document = response.json()
        assert document["errorType"] == error_type
        assert message in document["errorMessage"]
        assert isinstance(document["stackTrace"], list)

    # The cause is in the instance's log too, not only in responses.
    assert any(error_type in record.getMessage() for record in caplog.records)


async def test_init_failure_stack_trace_points_at_the_user_code(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        def connect():
            raise ConnectionError("database unreachable")

        DB = connect()
        """
    )
    document = (await runtime.invoke({})).json()
    assert document["errorType"] == "ConnectionError"
    assert document["errorMessage"] == "database unreachable"
    trace = "".join(document["stackTrace"])
    assert runtime.module_name in trace
    assert "in connect" in trace
    assert "importlib" not in trace
    assert "kubefaas_runtime" not in trace


async def test_a_bad_handler_name_is_reported(make_runtime: Make) -> None:
    runtime = await make_runtime(COUNTER, handler="nodot")
    document = (await runtime.invoke({})).json()
    assert document["errorType"] == "Runtime.MalformedHandlerName"
    assert "KUBEFAAS_HANDLER" in document["errorMessage"]


async def test_draining_turns_healthz_503_but_still_serves_calls(make_runtime: Make) -> None:
    runtime = await make_runtime(COUNTER)
    runtime.app.begin_drain()
    health = await runtime.client.get("/healthz")
    assert health.status_code == 503
    assert health.json() == {"status": "draining"}
    assert (await runtime.invoke({})).status_code == 200


# --- invocations --------------------------------------------------------------------


async def test_module_state_survives_between_invocations(make_runtime: Make) -> None:
    runtime = await make_runtime(COUNTER)
    bodies = [(await runtime.invoke({"n": n})).json() for n in range(3)]
    assert [body["calls"] for body in bodies] == [1, 2, 3]
    assert bodies[2]["event"] == {"n": 2}


@pytest.mark.parametrize(
    ("content", "event"),
    [(b'{"a": 1}', {"a": 1}), (b"plain words", "plain words"), (b"", {})],
)
async def test_json_event_reaches_the_handler(
    make_runtime: Make, content: bytes, event: object
) -> None:
    runtime = await make_runtime(COUNTER)
    response = await runtime.client.post("/", content=content)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["event"] == event


async def test_any_method_and_path_is_an_invocation(make_runtime: Make) -> None:
    runtime = await make_runtime(COUNTER)
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = await runtime.client.request(method, "/some/deep/path?x=1")
        assert response.status_code == 200
    assert runtime.module.calls == 4


async def test_async_handler_runs_on_the_loop(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        import asyncio, threading
        state = {"calls": 0}

        async def handler(event, context):
            await asyncio.sleep(0)
            state["calls"] += 1
            return {"calls": state["calls"], "thread": threading.current_thread().name}
        """
    )
    first = (await runtime.invoke({})).json()
    second = (await runtime.invoke({})).json()
    assert second["calls"] == first["calls"] + 1 == 2
    assert second["thread"] == "MainThread"


async def test_a_sync_wrapper_around_an_async_handler_still_works(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        import asyncio

        def traced(function):
            def wrapper(event, context):  # a decorator that hides the coroutine function
                return function(event, context)
            return wrapper

        @traced
        async def handler(event, context):
            await asyncio.sleep(0)
            return {"wrapped": True}
        """
    )
    response = await runtime.invoke({})
    assert response.status_code == 200
    assert response.json() == {"wrapped": True}


async def test_sync_handler_runs_in_a_worker_thread(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        import threading

        def handler(event, context):
            return threading.current_thread().name
        """
    )
    assert (await runtime.invoke({})).json().startswith("kubefaas-handler")


async def test_context_carries_the_invocation_and_function_fields(
    make_runtime: Make, tmp_path: Path
) -> None:
    runtime = await make_runtime(
        """
        def handler(event, context):
            return {
                "request_id": context.request_id,
                "aws_request_id": context.aws_request_id,
                "function_name": context.function_name,
                "function_namespace": context.function_namespace,
                "function_version": context.function_version,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invocation_type": context.invocation_type,
                "attempt": context.attempt,
                "tmp_dir": context.tmp_dir,
                "deadline_ms": context.deadline_ms,
                "remaining": context.get_remaining_time_in_millis(),
            }
        """
    )
    deadline_ms = int((time.time() + 20) * 1000)
    response = await runtime.invoke(
        {},
        headers={
            "X-Invocation-Id": "inv-77",
            "X-Deadline-Ms": str(deadline_ms),
            "X-Invocation-Type": "async",
            "X-Attempt": "3",
        },
    )
    context = response.json()
    assert context["request_id"] == context["aws_request_id"] == "inv-77"
    assert context["function_name"] == "hello"
    assert context["function_namespace"] == "team-a"
    assert context["function_version"] == "4"
    assert context["memory_limit_in_mb"] == 512
    assert context["invocation_type"] == "async"
    assert context["attempt"] == 3
    assert context["tmp_dir"] == str(tmp_path / "scratch")
    assert context["deadline_ms"] == deadline_ms
    assert 15_000 < context["remaining"] <= 20_000


async def test_without_invocation_headers_the_defaults_apply(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        def handler(event, context):
            return [context.invocation_type, context.attempt,
                    context.get_remaining_time_in_millis()]
        """,
        timeout_seconds=12,
    )
    response = await runtime.invoke({})
    invocation_type, attempt, remaining = response.json()
    assert (invocation_type, attempt) == ("sync", 1)
    assert 10_000 < remaining <= 12_000
    # A made-up id is a uuid4 in hex, echoed back so the caller can correlate logs.
    generated = response.headers["x-invocation-id"]
    assert uuid.UUID(hex=generated).version == 4
    assert uuid.UUID(hex=generated).hex == generated


async def test_every_invocation_response_carries_id_and_duration(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        import time

        def handler(event, context):
            time.sleep(0.05)
            return None
        """
    )
    response = await runtime.invoke({}, headers={"X-Invocation-Id": "inv-9"})
    assert response.headers["x-invocation-id"] == "inv-9"
    assert 45 <= float(response.headers["x-duration-ms"]) < 5_000
    assert response.json() is None


async def test_log_records_and_context_log_carry_the_request_id(
    make_runtime: Make,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime = await make_runtime(
        """
        import logging

        def handler(event, context):
            logging.getLogger("user.sync").warning("working on %s", event["item"])
            context.log("done with", event["item"])
            return "ok"

        async def async_handler(event, context):
            logging.getLogger("user.async").warning("async work")
            return "ok"
        """
    )
    caplog.set_level(logging.WARNING)
    await runtime.invoke({"item": "x1"}, headers={"X-Invocation-Id": "inv-sync"})
    [record] = [r for r in caplog.records if r.name == "user.sync"]
    assert record.getMessage() == "working on x1"
    assert record.request_id == "inv-sync"  # type: ignore[attr-defined]
    assert "inv-sync done with x1\n" in capsys.readouterr().err

    async_runtime = await make_runtime(None, handler=f"{runtime.module_name}.async_handler")
    await async_runtime.invoke({}, headers={"X-Invocation-Id": "inv-async"})
    [record] = [r for r in caplog.records if r.name == "user.async"]
    assert record.request_id == "inv-async"  # type: ignore[attr-defined]


async def test_non_serialisable_result_is_a_500(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        def handler(event, context):
            return {"when": {1, 2}}
        """
    )
    response = await runtime.invoke({})
    assert response.status_code == 500
    assert response.headers["x-function-error"] == "Unhandled"
    assert response.json()["errorType"] == "Runtime.SerializationError"
    assert "set is not JSON serializable" in response.json()["errorMessage"]


# --- failures -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["def", "async def"])
async def test_an_exception_is_a_500_with_lambdas_error_shape(
    make_runtime: Make, kind: str
) -> None:
    runtime = await make_runtime(
        f"""
        def validate(event):
            if "name" not in event:
                raise ValueError("name is required")

        {kind} handler(event, context):
            validate(event)
            return "hello " + event["name"]
        """
    )
    response = await runtime.invoke({})
    assert response.status_code == 500
    assert response.headers["x-function-error"] == "Unhandled"
    document = response.json()
    assert document["errorType"] == "ValueError"
    assert document["errorMessage"] == "name is required"
    assert len(document["stackTrace"]) == 2
    assert "in handler" in document["stackTrace"][0]
    assert 'raise ValueError("name is required")' in document["stackTrace"][1]
    assert not any("kubefaas_runtime" in frame for frame in document["stackTrace"])

    # The instance keeps serving.
    assert (await runtime.invoke({"name": "ada"})).json() == "hello ada"


@pytest.mark.parametrize(
    "source",
    [
        "import sys\ndef handler(event, context):\n    sys.exit(2)\n",
        "import sys\nasync def handler(event, context):\n    sys.exit(2)\n",
        "def handler(event, context):\n    raise KeyboardInterrupt\n",
        "async def handler(event, context):\n    raise KeyboardInterrupt\n",
    ],
    ids=["sync-exit", "async-exit", "sync-interrupt", "async-interrupt"],
)
async def test_exit_and_interrupt_in_a_handler_are_500s_not_a_dead_instance(
    make_runtime: Make, source: str
) -> None:
    runtime = await make_runtime(source)
    for _ in range(2):
        response = await runtime.invoke({})
        assert response.status_code == 500
        assert response.headers["x-function-error"] == "Unhandled"
        assert response.json()["errorType"] in {"SystemExit", "KeyboardInterrupt"}
    assert (await runtime.client.get("/healthz")).status_code == 200


async def test_sync_handler_past_its_deadline_is_a_504_and_the_instance_serves_on(
    make_runtime: Make,
) -> None:
    runtime = await make_runtime(BLOCKING_SYNC)
    started = time.monotonic()
    response = await runtime.invoke({"block": True}, headers=_deadline_in(0.3))
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert response.headers["x-function-error"] == "Timeout"
    document = response.json()
    assert document["errorType"] == "Runtime.Timeout"
    assert re.fullmatch(r"Task timed out after 0\.[23]\d seconds", document["errorMessage"])
    assert elapsed < 2
    assert runtime.app.abandoned == 1

    # The stuck thread does not stop the instance from answering.
    assert (await runtime.client.get("/healthz")).status_code == 200
    assert (await runtime.invoke({})).json() == "quick"

    runtime.module.release.set()
    await _until(lambda: runtime.app.abandoned == 0)


async def test_the_default_timeout_applies_without_a_deadline_header(make_runtime: Make) -> None:
    runtime = await make_runtime(BLOCKING_SYNC, timeout_seconds=0.2)
    response = await runtime.invoke({"block": True})
    assert response.status_code == 504
    assert response.json()["errorMessage"] == "Task timed out after 0.20 seconds"
    runtime.module.release.set()
    await _until(lambda: runtime.app.abandoned == 0)


async def test_a_deadline_already_past_is_answered_without_calling_the_handler(
    make_runtime: Make,
) -> None:
    runtime = await make_runtime(COUNTER)
    response = await runtime.invoke({}, headers=_deadline_in(-1))
    assert response.status_code == 504
    assert runtime.module.calls == 0


async def test_async_handler_past_its_deadline_is_cancelled_and_a_504(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        import asyncio
        seen = []

        async def handler(event, context):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
        """
    )
    response = await runtime.invoke({}, headers=_deadline_in(0.2))
    assert response.status_code == 504
    assert response.headers["x-function-error"] == "Timeout"
    assert response.json()["errorType"] == "Runtime.Timeout"
    await _until(lambda: runtime.module.seen == ["cancelled"])
    assert runtime.app.abandoned == 0


async def test_async_handler_ignoring_cancellation_still_gets_a_prompt_504(
    make_runtime: Make,
) -> None:
    runtime = await make_runtime(
        """
        import asyncio

        async def handler(event, context):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.5)  # cleanup that ignores the deadline
            return "too late"
        """
    )
    started = time.monotonic()
    response = await runtime.invoke({}, headers=_deadline_in(0.2))
    assert response.status_code == 504
    assert time.monotonic() - started < 0.5
    await _until(lambda: runtime.app.abandoned == 0)


async def test_a_blocked_sync_call_does_not_hold_up_other_calls(make_runtime: Make) -> None:
    runtime = await make_runtime(BLOCKING_SYNC)
    blocked = asyncio.create_task(runtime.invoke({"block": True}))
    await _until(runtime.module.entered.is_set)

    assert (await runtime.invoke({})).json() == "quick"
    assert (await runtime.client.get("/healthz")).status_code == 200
    assert runtime.app.inflight == 1
    assert await runtime.app.wait_idle(seconds=0.05) == 1

    runtime.module.release.set()
    assert (await blocked).json() == "late"
    assert await runtime.app.wait_idle(seconds=1) == 0


# --- request size -------------------------------------------------------------------


async def test_a_body_over_the_limit_is_a_413_and_never_reaches_the_handler(
    make_runtime: Make,
) -> None:
    runtime = await make_runtime(COUNTER, max_body_bytes=1000)
    response = await runtime.client.post("/", content=b"x" * 1001)
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert "x-function-error" not in response.headers
    document = response.json()
    assert document["errorType"] == "Runtime.RequestTooLarge"
    assert "1000 bytes" in document["errorMessage"]
    assert runtime.module.calls == 0

    assert (await runtime.client.post("/", content=b"7" * 1000)).status_code == 200


async def test_a_streamed_body_over_the_limit_stops_being_read(make_runtime: Make) -> None:
    runtime = await make_runtime(COUNTER, max_body_bytes=10_000)
    chunk = b"y" * 4096
    received = 0
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": chunk, "more_body": received < 1000}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    await runtime.app(scope, receive, send)

    assert sent[0]["status"] == 413
    assert received == 3  # 12 KiB read of the ~4 MiB offered
    assert runtime.module.calls == 0


# --- http event format --------------------------------------------------------------


async def test_http_format_passes_the_request_and_maps_the_proxy_response(
    make_runtime: Make,
) -> None:
    runtime = await make_runtime(
        """
        import base64, json

        def handler(event, context):
            if event["path"] == "/image":
                return {"statusCode": 200, "body": base64.b64encode(b"\\x89PNG").decode(),
                        "isBase64Encoded": True, "headers": {"Content-Type": "image/png"}}
            return {
                "statusCode": 201,
                "headers": {"X-Seen-Path": event["path"]},
                "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
                "body": json.dumps({
                    "method": event["httpMethod"],
                    "query": event["queryStringParameters"],
                    "multiQuery": event["multiValueQueryStringParameters"],
                    "accept": event["headers"]["accept"],
                    "body": event["body"],
                    "requestId": event["requestContext"]["requestId"],
                }),
            }
        """,
        event_format=EventFormat.HTTP,
    )
    response = await runtime.client.put(
        "/orders/7?tag=a&tag=b",
        content=b"raw text",
        headers=[("Accept", "text/html"), ("Accept", "application/json"), ("X-Invocation-Id", "i")],
    )
    assert response.status_code == 201
    assert response.headers["x-seen-path"] == "/orders/7"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "method": "PUT",
        "query": {"tag": "b"},
        "multiQuery": {"tag": ["a", "b"]},
        "accept": "text/html,application/json",
        "body": "raw text",
        "requestId": "i",
    }

    image = await runtime.client.get("/image")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == b"\x89PNG"


async def test_http_format_binary_request_body_arrives_base64_encoded(make_runtime: Make) -> None:
    runtime = await make_runtime(
        """
        def handler(event, context):
            return {"isBase64Encoded": event["isBase64Encoded"], "body": event["body"]}
        """,
        event_format=EventFormat.HTTP,
    )
    response = await runtime.client.post("/", content=b"\xff\xfe\x00")
    assert response.json() == {"isBase64Encoded": True, "body": "//4A"}


async def test_http_format_plain_return_values_are_json(make_runtime: Make) -> None:
    runtime = await make_runtime(
        "def handler(event, context):\n    return {'ok': True}\n", event_format=EventFormat.HTTP
    )
    response = await runtime.client.get("/")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_lifespan_messages_are_acknowledged(make_runtime: Make) -> None:
    runtime = await make_runtime(COUNTER)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    await runtime.app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
