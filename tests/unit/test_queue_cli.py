"""`kubefaas dlq` when something is wrong: each mistake gets one clear line, no traceback.

The happy paths (list, redrive, purge against a live gateway) run in the local tier.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kubefaas import dlq


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = dlq.main(argv, out=out)
    return code, out.getvalue(), capsys.readouterr().err


def test_without_a_token_it_says_where_the_token_comes_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(dlq.TOKEN_ENV, raising=False)
    code, _, err = run(["list"], capsys)
    assert code == dlq.EXIT_USAGE
    assert "--token" in err
    assert dlq.TOKEN_ENV in err


def test_an_unreachable_gateway_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = f"http://127.0.0.1:{port}"
    code, _, err = run(["--gateway", gateway, "--token", "t", "list"], capsys)
    assert code == dlq.EXIT_FAILED
    assert f"cannot reach the gateway at {gateway}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["purge"], "needs an ID, or --all"),
        (["purge", "abc", "--all"], "not both"),
        (["purge", "abc", "--function", "f"], "--function goes with --all"),
    ],
)
def test_ambiguous_purges_are_refused_before_calling_the_gateway(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dlq.main(["--gateway", "http://127.0.0.1:9", "--token", "t", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.fixture
def fake_gateway() -> Iterator[tuple[str, list[tuple[str, str, str | None]]]]:
    """A loopback server answering like the admin routes do (two pages, then errors)."""
    calls: list[tuple[str, str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            calls.append(("GET", self.path, self.headers.get("Authorization")))
            record = {
                "function": "default/f",
                "attempts": [{}, {}],
                "error": {"errorMessage": "boom"},
                "deadLetter": {"reason": "retries_exhausted"},
            }
            if "cursor=100" in self.path:
                self._answer(200, {"items": [{**record, "invocationId": "b"}], "nextCursor": None})
            else:
                self._answer(200, {"items": [{**record, "invocationId": "a"}], "nextCursor": "100"})

        def do_POST(self) -> None:
            calls.append(("POST", self.path, self.headers.get("Authorization")))
            error = {"type": "InvocationNotFound", "message": "no dead letter zzz"}
            self._answer(404, {"error": {**error, "invocationId": "zzz"}})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_list_follows_every_page_and_sends_the_token(
    fake_gateway: tuple[str, list[tuple[str, str, str | None]]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, calls = fake_gateway
    monkeypatch.setenv(dlq.TOKEN_ENV, "from-env")
    code, out, _ = run(["--gateway", url, "list", "--function", "f"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("INVOCATION")
    assert [line.split()[0] for line in lines[1:]] == ["a", "b"]
    assert "retries_exhausted: boom" in lines[1]
    assert all(auth == "Bearer from-env" for _, _, auth in calls)
    assert "function=f" in calls[0][1]


def test_the_gateways_own_error_message_is_shown(
    fake_gateway: tuple[str, list[tuple[str, str, str | None]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = fake_gateway
    code, _, err = run(["--gateway", url, "--token", "t", "redrive", "zzz"], capsys)
    assert code == dlq.EXIT_FAILED
    assert "404" in err
    assert "no dead letter zzz" in err
