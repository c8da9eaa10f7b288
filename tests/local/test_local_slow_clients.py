"""Slow and idle clients against the real gateway (docs/security.md, "Limits on what a
caller controls"): a connection that trickles its headers or its body, or sends nothing,
is answered 408 and closed instead of holding the gateway's resources for ever."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

ECHO = "def handler(event, context):\n    return {'ok': True}\n"
TIMEOUT = 2  # seconds, both read timeouts of the gateway under test
GIVE_UP = 30.0  # how long a trickling client would go on without the timeouts


def _connect(gateway: RunningGateway) -> socket.socket:
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=GIVE_UP)


def _trickle(sock: socket.socket, pieces: list[bytes]) -> bytes:
    """Send `pieces` one every 0.5 s until the gateway answers; everything it sent."""
    sock.settimeout(0.5)
    for piece in pieces:
        try:
            sock.sendall(piece)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue  # nothing yet: the next piece
        except OSError:
            break  # closed under us
        return chunk + _read_to_eof(sock)
    return _read_to_eof(sock)


def _read_to_eof(sock: socket.socket) -> bytes:
    sock.settimeout(GIVE_UP)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _error(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]


def test_slow_or_idle_clients_get_408_and_are_disconnected(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("echo", ECHO)
    gateway = start_gateway(
        manifest_dir.path,
        env={
            "KUBEFAAS_HEADER_READ_TIMEOUT_SECONDS": str(TIMEOUT),
            "KUBEFAAS_BODY_READ_TIMEOUT_SECONDS": str(TIMEOUT),
        },
    )

    # Headers one line every 0.5 s, 60 lines: 30 s without the header timeout.
    with _connect(gateway) as sock:
        started = time.monotonic()
        head = [b"POST /function/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"]
        answer = _trickle(sock, head + [b"X-Slow-%d: x\r\n" % i for i in range(60)])
        waited = time.monotonic() - started
    status, error = _error(answer)
    assert status == 408
    assert error["type"] == "RequestTimeout"
    assert "headers did not arrive within 2 s" in error["message"]
    assert waited < GIVE_UP / 2

    # A connection that never sends a byte.
    with _connect(gateway) as sock:
        status, error = _error(_read_to_eof(sock))
    assert status == 408
    assert "headers" in error["message"]

    # Complete headers, then a body that trickles and stops.
    with _connect(gateway) as sock:
        head = b"POST /function/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
        answer = _trickle(sock, [head] + [b"{"] * 60)
    status, error = _error(answer)
    assert status == 408
    assert "body did not arrive within 2 s" in error["message"]

    # A client that sends in time is served.
    with _connect(gateway) as sock:
        request = b"POST /function/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
        sock.sendall(request)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
    assert gateway.invoke("echo", {}).status_code == 200
    assert gateway.sample("kubefaas_gateway_refused_requests_total", reason="header_timeout") == 2
    assert gateway.sample("kubefaas_gateway_refused_requests_total", reason="body_timeout") == 1
