"""Namespace tokens' Secret keys and matching (docs/architecture.md, "Namespace tokens"):
what a key grants, and that only well-formed keys' tokens are accepted."""

from __future__ import annotations

import asyncio

import pytest

from kubefaas_gateway.secrets import SecretData
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.tenants import (
    Forbidden,
    NamespaceTokens,
    grant_of,
    namespaces_of_key,
    secret_ref,
)


@pytest.mark.parametrize(
    ("key", "granted"),
    [
        ("team-a", {"team-a"}),
        ("team-a.2026-12", {"team-a"}),
        ("team-a.ci.old", {"team-a"}),
        ("team-a_team-b", {"team-a", "team-b"}),
        ("team-a_team-b.ci", {"team-a", "team-b"}),
        ("Team-A", None),
        ("team-a__team-b", None),
        ("-team", None),
        (".label", None),
        ("", None),
    ],
)
def test_a_key_names_what_it_grants(key: str, granted: set[str] | None) -> None:
    assert namespaces_of_key(key) == (None if granted is None else frozenset(granted))


def test_the_secret_is_named_with_or_without_its_namespace() -> None:
    assert secret_ref(Settings()) is None
    assert secret_ref(Settings(namespace_tokens_secret="ops/tokens")) == ("ops", "tokens")
    assert secret_ref(Settings(namespace_tokens_secret="tokens")) == ("default", "tokens")


def _tokens(data: SecretData | None) -> NamespaceTokens:
    async def reader(namespace: str, name: str) -> SecretData | None:
        return data if (namespace, name) == ("ops", "tokens") else None

    return NamespaceTokens(reader, ("ops", "tokens"))


def test_a_token_grants_its_keys_namespaces_and_a_bad_key_grants_nothing() -> None:
    tokens = _tokens({"team-a.new": b"aaa\n", "Bad_Key": b"bbb", "team-b": b"  "})
    grant = asyncio.run(tokens.grant(b"aaa"))
    assert grant is not None
    assert grant.namespaces == frozenset({"team-a"})
    assert grant.key == "team-a.new"
    assert grant.allows("team-a")
    assert not grant.allows("team-b")
    with pytest.raises(Forbidden, match="namespace 'team-b'"):
        grant.require("team-b", "read usage")
    assert asyncio.run(tokens.grant(b"bbb")) is None  # a malformed key is ignored
    assert asyncio.run(tokens.grant(b"")) is None  # an empty value is no token


def test_the_admin_token_is_admin_and_a_missing_secret_leaves_only_it() -> None:
    settings = Settings(admin_token="the-admin")
    tokens = _tokens(None)
    admin = asyncio.run(grant_of(settings, tokens, b"the-admin"))
    assert admin is not None
    assert admin.admin
    assert asyncio.run(grant_of(settings, tokens, b"aaa")) is None
    assert asyncio.run(grant_of(Settings(), tokens, b"")) is None
