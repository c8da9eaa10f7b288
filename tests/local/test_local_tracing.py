"""W3C traceparent and OpenTelemetry spans end to end: a real gateway, real runtimes, and a
real HTTP server on loopback standing in for the OTLP collector (docs/logs.md, "Tracing")."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

ECHO_TRACE = """\
def handler(event, context):
    return {"traceparent": context.traceparent, "traceId": context.trace_id}
"""
ECHO_HTTP = """\
def handler(event, context):
    return {"statusCode": 200, "body": event["headers"].get("traceparent") or ""}
"""
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_reaches_the_handler_in_the_context_and_as_a_header(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("trace", ECHO_TRACE)
    manifest_dir.add_function("web", ECHO_HTTP, eventFormat="http")
    gateway = start_gateway(manifest_dir.path)

    traced = gateway.invoke("trace", {}, headers={"traceparent": TRACEPARENT})
    assert traced.json() == {
        "traceparent": TRACEPARENT,
        "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    assert gateway.invoke("web", headers={"traceparent": TRACEPARENT}).text == TRACEPARENT
    # No header, or a malformed one: the handler sees no trace rather than garbage.
    assert gateway.invoke("trace", {}).json() == {"traceparent": None, "traceId": None}
    bad = gateway.invoke("trace", {}, headers={"traceparent": "00-zz-not-a-trace"})
    assert bad.json()["traceparent"] is None


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    received: list[tuple[str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_spans_are_exported_over_otlp_when_configured_and_the_function_is_their_child(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    collector: tuple[str, list[tuple[str, bytes]]],
) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="needs the tracing extra")
    url, received = collector
    manifest_dir.add_function("trace", ECHO_TRACE)
    gateway = start_gateway(manifest_dir.path, env={"KUBEFAAS_OTLP_ENDPOINT": url})

    seen = gateway.invoke("trace", {}, headers={"traceparent": TRACEPARENT}).json()
    # Same trace, but the function's parent is now the gateway's invoke span.
    assert seen["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert seen["traceparent"] != TRACEPARENT
    gateway_span_id = bytes.fromhex(seen["traceparent"][36:52])

    give_up = time.monotonic() + 10
    while time.monotonic() < give_up and not any(b"cold start" in body for _, body in received):
        time.sleep(0.1)
    bodies = b"".join(body for path, body in received if path == "/v1/traces")
    assert b"invoke" in bodies
    assert b"cold start" in bodies
    assert bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736") in bodies
    assert gateway_span_id in bodies

    # An async attempt: its invoke span has a queue wait child, in the caller's trace.
    other_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    accepted = gateway.client.post(
        "/async-function/trace", json={}, headers={"traceparent": other_trace}
    )
    assert accepted.status_code == 202
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up and not any(b"queue wait" in body for _, body in received):
        time.sleep(0.1)
    queued = [body for _, body in received if b"queue wait" in body]
    assert queued, "no queue wait span was exported"
    assert bytes.fromhex("0af7651916cd43dd8448eb211c80319c") in b"".join(queued)
