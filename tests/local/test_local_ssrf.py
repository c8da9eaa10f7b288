"""The SSRF guard of callbacks against the real gateway (docs/security.md). IP literals
only: nothing here leaves the machine."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

ECHO = "def handler(event, context):\n    return {'ok': True}\n"


@pytest.fixture
def sink() -> Iterator[tuple[str, list[str]]]:
    """A loopback server recording the paths POSTed to it."""
    received: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


INTERNAL = (
    "http://127.0.0.1:6379/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://192.168.0.10:8080/hook",
    "http://[::1]:8080/",
    "http://[::ffff:127.0.0.1]/",
)


def test_callbacks_to_internal_addresses_are_refused_at_submit(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("echo", ECHO)
    gateway = start_gateway(manifest_dir.path)
    for url in INTERNAL:
        headers = {"X-Callback-Url": url}
        refused = gateway.client.post("/async-function/echo", json={}, headers=headers)
        assert refused.status_code == 400, url
        assert refused.json()["error"]["type"] == "CallbackRefused"
        assert "KUBEFAAS_CALLBACK_ALLOWED_CIDRS" in refused.json()["error"]["message"]
    # Refused before storing: nothing was queued.
    assert gateway.sample("kubefaas_async_enqueued_total") in (None, 0.0)


def test_the_allowlist_lets_a_named_range_through_and_destinations_are_checked_when_sent(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    sink: tuple[str, list[str]],
) -> None:
    url, received = sink
    manifest_dir.add_function("echo", ECHO, **{"async": {"onSuccess": {"url": f"{url}/dest"}}})
    guarded = start_gateway(manifest_dir.path)
    # The manifest's destination is refused when it would be sent: nothing reaches the sink.
    assert guarded.client.post("/async-function/echo", json={}).status_code == 202
    deadline = time.monotonic() + 15
    while "not sent" not in guarded.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "127.0.0.1, a loopback address" in guarded.stderr()
    assert received == []
    guarded.terminate()

    allowed = start_gateway(
        manifest_dir.path, env={"KUBEFAAS_CALLBACK_ALLOWED_CIDRS": "127.0.0.1/32"}
    )
    accepted = allowed.client.post(
        "/async-function/echo", json={}, headers={"X-Callback-Url": f"{url}/callback"}
    )
    assert accepted.status_code == 202
    deadline = time.monotonic() + 15
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(received) == ["/callback", "/dest"]
