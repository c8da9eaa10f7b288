"""The chart's `console` value (docs/console.md, "Turning it on"): off by default; on, it
sets the gateway's setting and grants exactly the Function writes Deploy and Delete need."""

from __future__ import annotations

from tests.unit.test_chart import (
    assert_least_privilege,
    container,
    env_of,
    find,
    render,
    render_error,
    rule_triples,
)

WRITES = {("kubefaas.io", "functions", "*any*", verb) for verb in ("create", "patch", "delete")}


def _gateway(*sets: str) -> tuple[dict[str, object], set[tuple[str, str, str, str]]]:
    objects = render(*sets)
    env = env_of(container(find(objects, "Deployment", "kubefaas-gateway"), "gateway"))
    role = find(objects, "ClusterRole", "kubefaas-gateway")
    assert_least_privilege(role)
    return env, rule_triples(role["rules"])


def test_console_is_off_by_default_and_the_gateway_cannot_write_functions() -> None:
    env, grants = _gateway()
    assert env["KUBEFAAS_CONSOLE_ENABLED"] == "false"
    assert not grants & WRITES
    assert not any(g[1] == "functions" and g[3] in ("update", "delete") for g in grants)


def test_console_enabled_sets_the_gateway_and_grants_create_patch_delete_only() -> None:
    env, grants = _gateway("console.enabled=true")
    assert env["KUBEFAAS_CONSOLE_ENABLED"] == "true"
    assert grants & WRITES == WRITES
    assert not any(g[1] == "functions" and g[3] == "update" for g in grants)


def test_console_values_are_checked_by_the_schema() -> None:
    assert "console" in render_error("console.enabled=maybe")
    assert "console" in render_error("console.theme=dark")


def test_namespace_tokens_secret_is_named_in_the_release_namespace_when_set() -> None:
    env, _ = _gateway()
    assert "KUBEFAAS_NAMESPACE_TOKENS_SECRET" not in env
    env, grants = _gateway("auth.namespaceTokens.secretName=team-tokens")
    assert env["KUBEFAAS_NAMESPACE_TOKENS_SECRET"] == "kubefaas-system/team-tokens"
    # Read with the gateway's `get` on Secrets; never list or watch.
    assert ("", "secrets", "*any*", "get") in grants
    assert not any(g[1] == "secrets" and g[3] in ("list", "watch") for g in grants)
    assert "secretName" in render_error("auth.namespaceTokens.secretName=Bad_Name")
