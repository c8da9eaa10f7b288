"""Function logs and metering end to end: a real local-mode gateway, real runtime processes.

What a user sees (docs/logs.md): `kubefaas logs` prints exactly the lines of one
invocation, each a JSON line tagged with function, instance and invocation id, ending with
the REPORT line; the usage API agrees with the sum of the REPORT lines; usage survives a
gateway restart; an async invocation's record carries each attempt's log tail.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from kubefaas import observe_cli
from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

TOKEN = "logs-admin-token"
ENV = {"KUBEFAAS_ADMIN_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CHATTY = """\
import logging
import time

print("module imported")

def handler(event, context):
    print("hello", event["n"])
    print("two\\nlines")
    logging.warning("warned %s", event["n"])
    time.sleep(event.get("sleep", 0))
    return {"n": event["n"]}
"""


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = observe_cli.main(list(argv))
    return code, out.getvalue()


def _wait(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    give_up = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > give_up:
            return value
        time.sleep(0.05)


def _lines(gateway: RunningGateway, function: str, **params: str) -> list[dict[str, Any]]:
    response = gateway.client.get(
        "/system/logs", params={"function": function, **params}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    return [json.loads(item["line"]) for item in response.json()["items"]]


def _reports(gateway: RunningGateway, function: str) -> list[dict[str, Any]]:
    return [line for line in _lines(gateway, function) if line.get("type") == "REPORT"]


def _usage(gateway: RunningGateway, **params: str) -> list[dict[str, Any]]:
    response = gateway.client.get("/system/usage", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_kubefaas_logs_shows_exactly_the_lines_of_one_invocation(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("chatty", CHATTY, memory="128Mi")
    gateway = start_gateway(manifest_dir.path, env=ENV)
    first = gateway.invoke("chatty", {"n": 1})
    second = gateway.invoke("chatty", {"n": 2})
    assert first.status_code == second.status_code == 200
    first_id = first.headers["x-invocation-id"]
    _wait(lambda: len(_reports(gateway, "chatty")) == 2)

    code, out = _cli(
        "logs", "chatty", "--invocation", first_id, "--gateway", gateway.url, "--token", TOKEN
    )
    assert code == 0
    lines = [json.loads(text) for text in out.splitlines()]
    assert [(line["logger"], line["msg"]) for line in lines[:4]] == [
        ("stdout", "hello 1"),
        ("stdout", "two"),
        ("stdout", "lines"),
        ("root", "warned 1"),
    ]
    assert len(lines) == 5
    report = lines[4]
    assert report["type"] == "REPORT"
    assert report["msg"].startswith(f"REPORT RequestId: {first_id} Duration: ")
    assert {line["requestId"] for line in lines} == {first_id}
    assert {line["function"] for line in lines} == {"default/chatty"}
    assert len({line["instance"] for line in lines}) == 1
    # The first invocation was the cold start: its report carries the init duration.
    assert report["memorySizeMB"] == 128
    assert report["billedDurationMs"] >= 1
    assert report["maxMemoryUsedMB"] > 0
    assert report["initDurationMs"] > 0

    # Without --invocation: the module's own print (no invocation id) and both calls.
    code, out = _cli("logs", "default/chatty", "--gateway", gateway.url, "--token", TOKEN)
    everything = [json.loads(text) for text in out.splitlines()]
    messages = [line["msg"] for line in everything]
    assert "module imported" in messages
    assert "hello 2" in messages
    second_report = [
        line for line in everything if line.get("type") == "REPORT" and line is not report
    ][-1]
    assert "initDurationMs" not in second_report


def test_report_lines_agree_with_the_usage_api_and_the_counters(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("chatty", CHATTY, memory="192Mi")
    manifest_dir.add_function("other", CHATTY, namespace="team-b", memory="128Mi")
    gateway = start_gateway(manifest_dir.path, env=ENV)
    for n in range(6):
        assert gateway.invoke("chatty", {"n": n, "sleep": 0.003 * n}).status_code == 200
    for n in range(3):
        assert gateway.invoke("other", {"n": n}, namespace="team-b").status_code == 200

    for key, calls in (("default/chatty", 6), ("team-b/other", 3)):
        reports = _wait(lambda key=key, calls=calls: len(_reports(gateway, key)) == calls)
        assert reports, f"{key}: not every REPORT line arrived"
    for key, namespace, name in (
        ("default/chatty", "default", "chatty"),
        ("team-b/other", "team-b", "other"),
    ):
        reports = _reports(gateway, key)
        [usage] = _usage(gateway, namespace=namespace)
        assert usage["function"] == name
        assert usage["requests"] == len(reports)
        assert usage["mibMilliseconds"] == sum(
            r["memorySizeMB"] * r["billedDurationMs"] for r in reports
        )
        assert usage["coldStarts"] == sum(1 for r in reports if "initDurationMs" in r)
        assert usage["gbSeconds"] == pytest.approx(usage["mibMilliseconds"] / 1024 / 1000)
        counted = gateway.sample("kubefaas_usage_gb_seconds_total", namespace=namespace)
        assert counted == pytest.approx(usage["gbSeconds"])
        assert gateway.sample("kubefaas_usage_requests_total", namespace=namespace) == len(reports)

    code, out = _cli(
        "usage", "--by", "namespace", "--json", "--gateway", gateway.url, "--token", TOKEN
    )
    assert code == 0
    rows = {row["namespace"]: row for row in map(json.loads, out.splitlines())}
    assert rows["default"]["requests"] == 6
    assert rows["team-b"]["requests"] == 3
    code, table = _cli("usage", "--gateway", gateway.url, "--token", TOKEN)
    assert table.splitlines()[0].split() == ["FUNCTION", "REQUESTS", "GB-SECONDS", "COLD", "STARTS"]
    assert any(line.split()[:2] == ["team-b/other", "3"] for line in table.splitlines())


def test_usage_survives_a_gateway_restart(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    tmp_path: Any,
) -> None:
    manifest_dir.add_function("chatty", CHATTY)
    state = tmp_path / "shared-state"
    first = start_gateway(manifest_dir.path, env=ENV, extra_args=["--state-dir", str(state)])
    for n in range(4):
        assert first.invoke("chatty", {"n": n}).status_code == 200
    before = _usage(first)
    assert before[0]["requests"] == 4
    assert first.terminate() in (0, -signal.SIGTERM)

    second = start_gateway(manifest_dir.path, env=ENV, extra_args=["--state-dir", str(state)])
    assert _usage(second) == before
    assert second.invoke("chatty", {"n": 9}).status_code == 200
    [after] = _usage(second)
    assert after["requests"] == 5
    assert after["coldStarts"] == before[0]["coldStarts"] + 1  # a new gateway, a new instance


def test_async_invocation_record_carries_each_attempts_log_tail(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("chatty", CHATTY)
    gateway = start_gateway(manifest_dir.path, env=ENV)
    accepted = gateway.client.post("/async-function/chatty", json={"n": 7})
    assert accepted.status_code == 202
    invocation_id = accepted.json()["invocationId"]

    def finished() -> dict[str, Any] | None:
        record: dict[str, Any] = gateway.client.get(f"/invocations/{invocation_id}").json()
        attempts = record.get("attempts") or []
        done = record.get("status") == "succeeded" and attempts and attempts[0].get("logs")
        return record if done else None

    record = _wait(finished)
    assert record, "the async invocation did not finish with its logs"
    [attempt] = record["attempts"]
    tail = [json.loads(line) for line in attempt["logs"]]
    assert [line["msg"] for line in tail[:2]] == ["hello 7", "two"]
    assert tail[-1]["type"] == "REPORT"
    assert {line["requestId"] for line in tail} == {invocation_id}


def test_logs_and_usage_need_the_admin_token(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("chatty", CHATTY)
    gateway = start_gateway(manifest_dir.path, env=ENV)
    assert gateway.client.get("/system/logs", params={"function": "chatty"}).status_code == 401
    assert gateway.client.get("/system/usage").status_code == 401
    bad = gateway.client.get("/system/usage", params={"from": "10", "to": "5"}, headers=AUTH)
    assert bad.status_code == 400
    assert "`from`" in bad.json()["error"]["message"]


def test_kubefaas_logs_follow_prints_new_lines_as_they_come(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway], tmp_path: Any
) -> None:
    manifest_dir.add_function("chatty", CHATTY)
    gateway = start_gateway(manifest_dir.path, env=ENV)
    out_path = tmp_path / "follow.out"
    command = [sys.executable, "-m", "kubefaas.cli", "logs", "chatty", "--follow"]
    command += ["--gateway", gateway.url, "--token", TOKEN]
    with out_path.open("wb") as out:
        follower = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.5)  # following an empty log
        assert gateway.invoke("chatty", {"n": 41}).status_code == 200
        assert _wait(lambda: "hello 41" in out_path.read_text()), out_path.read_text()
        assert gateway.invoke("chatty", {"n": 42}).status_code == 200
        assert _wait(lambda: "hello 42" in out_path.read_text()), out_path.read_text()
        assert follower.poll() is None
    finally:
        follower.terminate()
        follower.wait(10)
    messages = [json.loads(line)["msg"] for line in out_path.read_text().splitlines()]
    assert messages.count("hello 41") == 1  # each line once, however often it polled
