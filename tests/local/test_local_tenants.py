"""Namespace tokens through a real local-mode gateway over HTTP (docs/architecture.md,
"Namespace tokens"; docs/security.md).

A tenant's token, held in a Secret (a `kind: Secret` manifest in the served folder, or the
mounted-Secret file layout under `secrets/`), reads the usage of its own namespaces only
(403 naming any other), reads the async records of its functions, is rotated by adding a
key and removing the old one, and never shows up in the gateway's output.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from kubefaas import observe_cli
from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

ADMIN = "tenants-admin-token"
TEAM_A = "team-a-token-0123456789"
TEAM_A_NEXT = "team-a-token-rotated-9876"
TEAM_B = "team-b-token-abcdefabcdef"
SECRET = "kubefaas-namespace-tokens"
ECHO = "def handler(event, context):\n    return event\n"
ENV = {
    "KUBEFAAS_ADMIN_TOKEN": ADMIN,
    "KUBEFAAS_NAMESPACE_TOKENS_SECRET": f"default/{SECRET}",
    "KUBEFAAS_SECRET_CACHE_SECONDS": "0.2",
}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wait(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    give_up = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > give_up:
            return value
        time.sleep(0.05)


def _token_files(manifest_dir: ManifestDir, tokens: dict[str, str]) -> None:
    """The Secret as a mounted Secret volume lays it out: one file per key."""
    folder = manifest_dir.path / "secrets" / "default" / SECRET
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for key, value in tokens.items():
        (folder / key).write_text(value + "\n")


def _namespaces(answer: Any) -> set[str]:
    return {item["namespace"] for item in answer.json()["items"]}


def test_usage_with_a_namespace_token_answers_for_its_namespaces_only(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest_dir.add_function("echo", ECHO, namespace="team-a")
    manifest_dir.add_function("echo", ECHO, namespace="team-b")
    _token_files(manifest_dir, {"team-a": TEAM_A, "team-b": TEAM_B})
    gateway = start_gateway(manifest_dir.path, env=ENV)
    for namespace in ("team-a", "team-b", "team-b"):
        assert gateway.invoke("echo", {"n": 1}, namespace=namespace).status_code == 200
    usage = "/system/usage"

    # The admin token sees both namespaces; team-a's token sees team-a only.
    assert _namespaces(gateway.client.get(usage, headers=_bearer(ADMIN))) == {"team-a", "team-b"}
    mine = gateway.client.get(usage, headers=_bearer(TEAM_A))
    assert mine.status_code == 200, mine.text
    assert [(i["namespace"], i["function"], i["requests"]) for i in mine.json()["items"]] == [
        ("team-a", "echo", 1)
    ]
    asked = gateway.client.get(usage, params={"namespace": "team-a"}, headers=_bearer(TEAM_A))
    assert asked.json()["items"] == mine.json()["items"]

    # Another namespace: 403 naming it.
    other = gateway.client.get(usage, params={"namespace": "team-b"}, headers=_bearer(TEAM_A))
    assert other.status_code == 403
    assert "'team-b'" in other.json()["error"]["message"]
    assert "team-a" in other.json()["error"]["message"]

    # No token: 401 with the challenge; a wrong one: 401 invalid_token.
    none = gateway.client.get(usage)
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == 'Bearer realm="kubefaas"'
    assert "namespace token" in none.json()["error"]["message"]
    wrong = gateway.client.get(usage, headers=_bearer("team-a-token-012345678X"))
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]

    # `kubefaas usage` with the token, from the flag and from the environment.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["usage", "--json", "--gateway", gateway.url, "--token", TEAM_B]
        assert observe_cli.main(argv) == 0
    assert [json.loads(line)["function"] for line in out.getvalue().splitlines()] == ["team-b/echo"]
    assert json.loads(out.getvalue().splitlines()[0])["requests"] == 2
    monkeypatch.delenv("KUBEFAAS_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("KUBEFAAS_NAMESPACE_TOKEN", TEAM_A)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert observe_cli.main(["usage", "--json", "--gateway", gateway.url]) == 0
    assert [json.loads(line)["function"] for line in out.getvalue().splitlines()] == ["team-a/echo"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        argv = ["usage", "--namespace", "team-b", "--gateway", gateway.url]
        assert observe_cli.main(argv) == 1
    assert "403" in err.getvalue()
    assert "'team-b'" in err.getvalue()

    # Rotation: add the new key beside the old, both work; drop the old, it stops working.
    _token_files(manifest_dir, {"team-a": TEAM_A, "team-a.next": TEAM_A_NEXT, "team-b": TEAM_B})
    assert _wait(lambda: gateway.client.get(usage, headers=_bearer(TEAM_A_NEXT)).status_code == 200)
    assert gateway.client.get(usage, headers=_bearer(TEAM_A)).status_code == 200
    _token_files(manifest_dir, {"team-a.next": TEAM_A_NEXT, "team-b": TEAM_B})
    assert _wait(lambda: gateway.client.get(usage, headers=_bearer(TEAM_A)).status_code == 401)
    assert _namespaces(gateway.client.get(usage, headers=_bearer(TEAM_A_NEXT))) == {"team-a"}

    # `kubefaas logs` with a namespace token: its namespace's functions, not another's.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        argv = ["logs", "team-a/echo", "--gateway", gateway.url, "--token", TEAM_A_NEXT]
        assert observe_cli.main(argv) == 0
    reports = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["function"] for r in reports if r.get("type") == "REPORT"] == ["team-a/echo"]
    refused = gateway.client.get(
        "/system/logs", params={"function": "team-b/echo"}, headers=_bearer(TEAM_A_NEXT)
    )
    assert refused.status_code == 403
    assert "may not read logs in namespace 'team-b'" in refused.json()["error"]["message"]

    # One token for two namespaces (`team-a_team-b.ci`).
    _token_files(manifest_dir, {"team-a_team-b.ci": "ci-token-for-both-teams"})
    both = _wait(
        lambda: (
            _namespaces(r)
            if (
                r := gateway.client.get(usage, headers=_bearer("ci-token-for-both-teams"))
            ).status_code
            == 200
            else None
        )
    )
    assert both == {"team-a", "team-b"}

    # No token value ever reaches the gateway's output.
    output = gateway.stdout() + gateway.stderr()
    for token in (ADMIN, TEAM_A, TEAM_A_NEXT, TEAM_B, "ci-token-for-both-teams"):
        assert token not in output


def test_an_async_record_is_readable_with_its_namespace_token(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    # The tokens as a `kind: Secret` manifest beside the Functions; the function's own
    # invoke key in its namespace's `kubefaas-invoke-tokens`.
    manifest_dir.add_raw(
        "tokens.yaml",
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": SECRET, "namespace": "default"},
                    "stringData": {"team-a": TEAM_A, "team-b": TEAM_B},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "kubefaas-invoke-tokens", "namespace": "team-a"},
                    "stringData": {"caller": "invoke-key-of-team-a"},
                },
            ]
        ),
    )
    manifest_dir.add_function("echo", ECHO, namespace="team-a", auth={"mode": "token"})
    gateway = start_gateway(manifest_dir.path, env=ENV)
    # The namespace token is not an invoke key: invoking needs the function's own key.
    refused = gateway.client.post(
        "/async-function/team-a/echo", json={"n": 7}, headers=_bearer(TEAM_A)
    )
    assert refused.status_code == 401
    accepted = gateway.client.post(
        "/async-function/team-a/echo", json={"n": 7}, headers=_bearer("invoke-key-of-team-a")
    )
    assert accepted.status_code == 202, accepted.text
    record_path = f"/invocations/{accepted.json()['invocationId']}"

    def done() -> dict[str, Any] | None:
        answer = gateway.client.get(record_path, headers=_bearer(TEAM_A))
        assert answer.status_code == 200, answer.text
        record: dict[str, Any] = answer.json()
        return record if record["status"] == "succeeded" else None

    record = _wait(done)
    assert record
    assert record["function"] == "team-a/echo"
    assert record["result"] == {"n": 7}
    # Another namespace's token, or none: refused as before.
    assert gateway.client.get(record_path, headers=_bearer(TEAM_B)).status_code == 401
    assert gateway.client.get(record_path).status_code == 401
    assert gateway.client.get(record_path, headers=_bearer(ADMIN)).status_code == 200
    assert all(t not in gateway.stdout() + gateway.stderr() for t in (TEAM_A, TEAM_B))


def test_namespace_tokens_alone_open_the_usage_api(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    """Without an admin token the usage API is still reachable with a namespace token."""
    manifest_dir.add_function("echo", ECHO, namespace="team-a")
    _token_files(manifest_dir, {"team-a": TEAM_A})
    env = {k: v for k, v in ENV.items() if k != "KUBEFAAS_ADMIN_TOKEN"}
    gateway = start_gateway(manifest_dir.path, env=env)
    assert gateway.invoke("echo", {}, namespace="team-a").status_code == 200
    assert _namespaces(gateway.client.get("/system/usage", headers=_bearer(TEAM_A))) == {"team-a"}
    # No admin token is configured: the old admin value is just a wrong token.
    assert gateway.client.get("/system/usage", headers=_bearer(ADMIN)).status_code == 401
