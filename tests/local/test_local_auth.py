"""Invoke auth against the real gateway and runtime processes (docs/security.md).

Keys and public keys live in the manifests folder's `secrets/<namespace>/<name>/<key>`,
as `kubefaas local` reads them; a JWKS is served from 127.0.0.1 by the test itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

ECHO = "def handler(event, context):\n    return {'ok': True}\n"
ISSUER = "https://issuer.test"
AUDIENCE = "kubefaas-test"
ADMIN = "admin-secret-value"


def _secret(folder: Path, namespace: str, name: str, **keys: str | bytes) -> None:
    target = folder / "secrets" / namespace / name
    target.mkdir(parents=True, exist_ok=True)
    for key, value in keys.items():
        data = value.encode() if isinstance(value, str) else value
        (target / key).write_bytes(data)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_auth_accepts_every_key_of_the_secret_and_refuses_the_rest(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function(
        "guarded", ECHO, auth={"mode": "token", "token": {"secretName": "guarded-keys"}}
    )
    manifest_dir.add_function("open", ECHO, auth={"mode": "none"})
    _secret(manifest_dir.path, "default", "guarded-keys", old="key-one\n", new="key-two")
    gateway = start_gateway(manifest_dir.path, env={"KUBEFAAS_AUTH_DEFAULT": "token"})

    missing = gateway.invoke("guarded", {})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith('Bearer realm="kubefaas"')
    assert missing.json()["error"]["type"] == "Unauthorized"
    assert "Authorization: Bearer" in missing.json()["error"]["message"]

    wrong = gateway.invoke("guarded", {}, headers=_bearer("key-three"))
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]

    # Both keys of the Secret work (rotation), by bearer or by X-Api-Key.
    assert gateway.invoke("guarded", {}, headers=_bearer("key-one")).status_code == 200
    assert gateway.invoke("guarded", {}, headers={"X-Api-Key": "key-two"}).status_code == 200
    # No instance was started for the refused calls: the first 200 was the cold start.
    assert gateway.sample("kubefaas_invocations_total", function="guarded", code="401") == 2

    # mode: none is open even when the gateway's default is token.
    assert gateway.invoke("open", {}).status_code == 200


def test_functions_without_spec_auth_follow_the_gateway_default(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("plain", ECHO)
    _secret(manifest_dir.path, "default", "kubefaas-invoke-tokens", team="team-key")
    gateway = start_gateway(manifest_dir.path, env={"KUBEFAAS_AUTH_DEFAULT": "token"})
    assert gateway.invoke("plain", {}).status_code == 401
    assert gateway.invoke("plain", {}, headers=_bearer("team-key")).status_code == 200


def test_async_submit_and_result_need_the_functions_credential_or_the_admin_token(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("guarded", ECHO, auth={"mode": "token"})
    _secret(manifest_dir.path, "default", "kubefaas-invoke-tokens", k="async-key")
    gateway = start_gateway(manifest_dir.path, env={"KUBEFAAS_ADMIN_TOKEN": ADMIN})

    refused = gateway.client.post("/async-function/guarded", json={})
    assert refused.status_code == 401
    accepted = gateway.client.post("/async-function/guarded", json={}, headers=_bearer("async-key"))
    assert accepted.status_code == 202
    location = accepted.headers["location"]

    assert gateway.client.get(location).status_code == 401
    assert gateway.client.get(location, headers=_bearer("wrong")).status_code == 401
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        record = gateway.client.get(location, headers=_bearer("async-key"))
        assert record.status_code == 200
        if record.json()["status"] == "succeeded":
            break
        time.sleep(0.1)
    assert record.json()["status"] == "succeeded"
    assert gateway.client.get(location, headers=_bearer(ADMIN)).status_code == 200


def test_metrics_and_stats_need_the_metrics_token_when_one_is_set(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("plain", ECHO)
    gateway = start_gateway(manifest_dir.path, env={"KUBEFAAS_METRICS_TOKEN": "scrape-me"})
    for path in ("/metrics", "/internal/stats", "/internal/triggers"):
        refused = gateway.client.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["error"]["type"] == "Unauthorized"
        assert gateway.client.get(path, headers=_bearer("scrape-me")).status_code == 200


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    """A JWT signed HS256 by hand (PyJWT itself refuses a PEM as an HMAC secret)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


# -- jwt -----------------------------------------------------------------------------------


def _rsa() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem


def _token(key: Any, algorithm: str, *, kid: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "sub": "someone", **claims}
    headers = {"kid": kid} if kid else None
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, Any]]:
    """An ES256 key and the URL of a JWKS holding its public half, on 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    document = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = document.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", key
    server.shutdown()
    server.server_close()


def test_jwt_auth_checks_signature_issuer_audience_and_expiry(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    jwks_server: tuple[str, Any],
) -> None:
    rsa_key, pem = _rsa()
    jwks_url, ec_key = jwks_server
    manifest_dir.add_function(
        "pem",
        ECHO,
        auth={
            "mode": "jwt",
            "jwt": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "publicKey": {"name": "signer", "key": "public.pem"},
                "leewaySeconds": 5,
            },
        },
    )
    manifest_dir.add_function(
        "jwks",
        ECHO,
        auth={"mode": "jwt", "jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwksUrl": jwks_url}},
    )
    _secret(manifest_dir.path, "default", "signer", **{"public.pem": pem})
    gateway = start_gateway(manifest_dir.path)

    good = _token(rsa_key, "RS256")
    assert gateway.invoke("pem", {}, headers=_bearer(good)).status_code == 200
    assert gateway.invoke("pem", {}, headers=_bearer(good)).status_code == 200  # cached

    def refused(name: str, token: str) -> str:
        response = gateway.invoke(name, {}, headers=_bearer(token))
        assert response.status_code == 401, response.text
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        message: str = response.json()["error"]["message"].lower()
        return message

    other_key, _ = _rsa()
    assert "signature" in refused("pem", _token(other_key, "RS256"))
    assert "audience" in refused("pem", _token(rsa_key, "RS256", aud="someone-else"))
    assert "issuer" in refused("pem", _token(rsa_key, "RS256", iss="https://evil.test"))
    assert "expired" in refused("pem", _token(rsa_key, "RS256", exp=int(time.time()) - 60))
    assert "yet valid" in refused("pem", _token(rsa_key, "RS256", nbf=int(time.time()) + 60))
    # Within the leeway (5 s) an exp just past still passes.
    assert (
        gateway.invoke(
            "pem", {}, headers=_bearer(_token(rsa_key, "RS256", exp=int(time.time()) - 1))
        ).status_code
        == 200
    )
    # HS256 with the public key as the HMAC secret (algorithm confusion) is refused.
    forged = _hs256({"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}, pem)
    refused("pem", forged)

    # ES256 through the JWKS, picked by kid.
    assert (
        gateway.invoke("jwks", {}, headers=_bearer(_token(ec_key, "ES256", kid="k1"))).status_code
        == 200
    )
    assert "kid" in refused("jwks", _token(ec_key, "ES256", kid="k2"))
    assert "signature" in refused(
        "jwks", _token(ec.generate_private_key(ec.SECP256R1()), "ES256", kid="k1")
    )
