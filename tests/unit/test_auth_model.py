"""`spec.auth` of the Function API: the modes and their rules (docs/security.md)."""

from __future__ import annotations

import pytest

from kubefaas import limits
from kubefaas.api import parse_function
from tests.unit.test_api import manifest, problems

JWT = {"issuer": "https://issuer.test", "audience": "me", "jwksUrl": "https://issuer.test/k"}


def test_token_mode_defaults_to_the_namespace_secret() -> None:
    fn = parse_function(manifest(auth={"mode": "token"}), "fn.yaml")
    assert fn.spec.auth is not None
    assert fn.spec.auth.token is None  # the gateway then reads the default Secret
    named = parse_function(
        manifest(auth={"mode": "token", "token": {"secretName": "keys"}}), "fn.yaml"
    )
    assert named.spec.auth is not None
    assert named.spec.auth.token is not None
    assert named.spec.auth.token.secret_name == "keys"
    assert limits.INVOKE_TOKEN_SECRET_DEFAULT == "kubefaas-invoke-tokens"


def test_jwt_defaults_allow_rs256_and_es256_with_a_small_leeway() -> None:
    fn = parse_function(manifest(auth={"mode": "jwt", "jwt": JWT}), "fn.yaml")
    assert fn.spec.auth is not None
    assert fn.spec.auth.jwt is not None
    assert fn.spec.auth.jwt.algorithms == ["RS256", "ES256"]
    assert fn.spec.auth.jwt.leeway_seconds == limits.JWT_LEEWAY_DEFAULT_SECONDS


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"mode": "jwt"}, "goes with, and is needed by, mode: jwt"),
        ({"mode": "none", "jwt": JWT}, "goes with, and is needed by, mode: jwt"),
        ({"mode": "none", "token": {}}, "spec.auth.token goes with mode: token"),
        ({"mode": "basic"}, "mode"),
        (
            {"mode": "jwt", "jwt": {**JWT, "publicKey": {"name": "k", "key": "pem"}}},
            "exactly one of jwksUrl and publicKey",
        ),
        ({"mode": "jwt", "jwt": {**JWT, "algorithms": ["HS256"]}}, "algorithms"),
        ({"mode": "jwt", "jwt": {**JWT, "leewaySeconds": 3600}}, "leewaySeconds"),
    ],
)
def test_bad_auth_is_refused_naming_the_rule(auth: dict[str, object], expected: str) -> None:
    assert expected in problems(manifest(auth=auth))


def test_env_sets_value_or_value_from_and_secret_mounts_are_unique() -> None:
    ref = {"secretKeyRef": {"name": "db", "key": "pw"}}
    both = [{"name": "A", "value": "x", "valueFrom": ref}]
    assert "value or valueFrom, not both" in problems(manifest(env=both))
    twice = [{"name": "tls"}, {"name": "tls", "mountPath": "/etc/tls"}]
    assert "spec.secrets names must be unique" in problems(manifest(secrets=twice))
    fn = parse_function(manifest(secrets=[{"name": "tls"}]), "fn.yaml")
    assert fn.spec.secrets[0].path == "/var/kubefaas/secrets/tls"
