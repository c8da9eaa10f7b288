"""Limits on what a caller controls, against the real gateway (docs/security.md)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

ECHO = "def handler(event, context):\n    return {'ok': True}\n"


def _urllib_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_7_mib_body_from_plain_urllib_reads_a_413(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("echo", ECHO)
    gateway = start_gateway(manifest_dir.path)
    for _ in range(3):  # not a lucky race: every time
        status, body = _urllib_post(gateway.url + "/function/echo", b"x" * (7 * 1024 * 1024))
        assert status == 413
        assert body["error"]["type"] == "PayloadTooLarge"


def _raw(gateway: RunningGateway, head: bytes, *, then: bytes = b"") -> tuple[int, bytes]:
    """Send `head` (and `then`) on a fresh connection; the status and body answered."""
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(head)
            sock.sendall(then)
        except OSError:
            pass  # the gateway answered and stopped reading: what it said is below
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 10:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def test_oversized_urls_and_headers_are_refused_early_with_json_errors(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("echo", ECHO)
    gateway = start_gateway(manifest_dir.path)

    long_url = gateway.invoke("echo", {}, path="/" + "a" * 9000)
    assert long_url.status_code == 414
    assert long_url.json()["error"]["type"] == "UriTooLong"

    big = gateway.invoke("echo", {}, headers={"X-Big": "b" * 40_000})
    assert big.status_code == 431
    assert big.json()["error"]["type"] == "HeadersTooLarge"
    assert "header section" in big.json()["error"]["message"]

    many = gateway.invoke("echo", {}, headers={f"X-H{i}": "v" for i in range(150)})
    assert many.status_code == 431
    assert "more than 100 headers" in many.json()["error"]["message"]

    # A 64 MB header is answered once 32 KiB are in: the rest is never sent, let alone held.
    status, body = _raw(
        gateway,
        b"POST /function/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"h" * 256 * 1024,
        then=b"h" * 1024 * 1024,
    )
    assert status == 431
    assert json.loads(body)["error"]["type"] == "HeadersTooLarge"

    assert gateway.invoke("echo", {}, headers={"X-Fine": "f" * 8000}).status_code == 200
    for reason, count in (("url_length", 1), ("header_count", 1), ("header_bytes", 2)):
        assert gateway.sample("kubefaas_gateway_refused_requests_total", reason=reason) == count


def test_a_function_answer_over_the_response_limit_is_502_response_too_large(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function(
        "big", "def handler(event, context):\n    return 'x' * event['size']\n"
    )
    gateway = start_gateway(manifest_dir.path, env={"KUBEFAAS_RESPONSE_LIMIT_BYTES": "1048576"})
    refused = gateway.invoke("big", {"size": 2 * 1024 * 1024})
    assert refused.status_code == 502
    assert refused.json()["error"]["type"] == "ResponseTooLarge"
    assert "1048576" in refused.json()["error"]["message"]
    assert gateway.invoke("big", {"size": 1000_000}).status_code == 200
    assert gateway.sample("kubefaas_gateway_refused_requests_total", reason="response_size") == 1


SLOW = "import time\n\ndef handler(event, context):\n    time.sleep(30)\n"


def test_async_quotas_refuse_before_storing(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("slow", SLOW, timeoutSeconds=60)
    manifest_dir.add_function("other", SLOW, timeoutSeconds=60)
    gateway = start_gateway(
        manifest_dir.path,
        env={
            "KUBEFAAS_ASYNC_QUEUE_MAX_PER_FUNCTION": "2",
            "KUBEFAAS_ASYNC_QUEUE_MAX_TOTAL": "3",
            "KUBEFAAS_ASYNC_STATS_INTERVAL_SECONDS": "3600",  # only this gateway's count
        },
    )
    submit = gateway.client.post
    assert [submit("/async-function/slow", json={}).status_code for _ in range(2)] == [202, 202]
    full = submit("/async-function/slow", json={})
    assert full.status_code == 429
    assert full.json()["error"]["type"] == "QueueFull"
    assert full.headers["retry-after"] == "5"
    assert submit("/async-function/other", json={}).status_code == 202
    storage = submit("/async-function/other", json={})
    assert storage.status_code == 507
    assert storage.json()["error"]["type"] == "QueueStorageFull"
    # Nothing of the refused was stored: its id is unknown.
    invocation = storage.json()["error"]["invocationId"]
    assert gateway.client.get(f"/invocations/{invocation}").status_code == 404
    assert gateway.sample("kubefaas_gateway_refused_requests_total", reason="queue_function") == 1
    assert gateway.sample("kubefaas_gateway_refused_requests_total", reason="queue_total") == 1
