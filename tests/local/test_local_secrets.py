"""Secrets for functions in local mode, and credentials kept out of the async queue
(docs/security.md), against the real gateway and runtime processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

READ_ENV = "import os\n\ndef handler(event, context):\n    return os.environ.get(event['name'])\n"


def _secret(folder: Path, namespace: str, name: str, **keys: str) -> None:
    target = folder / "secrets" / namespace / name
    target.mkdir(parents=True, exist_ok=True)
    for key, value in keys.items():
        (target / key).write_text(value)


def test_env_from_a_secret_key_reaches_the_function(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    ref = {"secretKeyRef": {"name": "db", "key": "password"}}
    manifest_dir.add_function("reader", READ_ENV, env=[{"name": "DB_PASSWORD", "valueFrom": ref}])
    missing_ref = {"secretKeyRef": {"name": "nope", "key": "k"}}
    manifest_dir.add_function("broken", READ_ENV, env=[{"name": "X", "valueFrom": missing_ref}])
    _secret(manifest_dir.path, "default", "db", password="s3cret-value")
    gateway = start_gateway(manifest_dir.path)
    answer = gateway.invoke("reader", {"name": "DB_PASSWORD"})
    assert answer.status_code == 200
    assert answer.json() == "s3cret-value"
    broken = gateway.invoke("broken", {"name": "X"})
    assert broken.status_code == 503
    assert "Secret 'nope'" in broken.json()["error"]["message"]


def test_async_events_are_stored_without_credential_headers(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("sink", "def handler(event, context):\n    return 1\n")
    gateway = start_gateway(
        manifest_dir.path,
        # Held long enough to look at the stored event; X-Team-Secret added to the list.
        env={
            "KUBEFAAS_ASYNC_DROPPED_HEADERS": "authorization,cookie,x-api-key,x-team-secret",
        },
    )
    secrets = {
        "Authorization": "Bearer tok-AAAA",
        "Cookie": "session=cookie-BBBB",
        "X-Api-Key": "key-CCCC",
        "X-Team-Secret": "team-DDDD",
        "X-Visible": "kept-EEEE",
    }
    accepted = gateway.client.post("/async-function/sink", json={}, headers=secrets)
    assert accepted.status_code == 202
    time.sleep(0.5)
    stored = b"".join(p.read_bytes() for p in gateway.state_dir.glob("async-queue.sqlite3*"))
    assert b"kept-EEEE" in stored  # the event's headers are in the file ...
    for value in ("tok-AAAA", "cookie-BBBB", "key-CCCC", "team-DDDD"):
        assert value.encode() not in stored  # ... but no credential


def test_the_async_queue_file_is_readable_by_its_owner_only(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    manifest_dir.add_function("sink", "def handler(event, context):\n    return 1\n")
    gateway = start_gateway(manifest_dir.path)
    assert gateway.client.post("/async-function/sink", json={}).status_code == 202
    files = sorted(gateway.state_dir.glob("async-queue.sqlite3*"))
    assert files
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path.name


READ_MOUNT_AND_ENV = """import os
from pathlib import Path

def handler(event, context):
    folder = Path(os.environ["KUBEFAAS_SECRET_DIR_TLS_CERTS"])
    key = folder / "tls.key"
    return {
        "key": key.read_text(),
        "mode": oct(key.stat().st_mode & 0o777),
        "token": os.environ.get("API_TOKEN"),
    }
"""

SECRET_MANIFEST = """apiVersion: v1
kind: Secret
metadata:
  name: api
  namespace: default
stringData:
  token: from-the-manifest
"""


def test_a_mounted_secret_and_a_manifest_secret_reach_the_function(
    manifest_dir: ManifestDir, start_gateway: Callable[..., RunningGateway]
) -> None:
    # The mount is read from the secrets folder, the env var from a `kind: Secret`
    # manifest beside the Function; a folder copy of `api` loses to the manifest.
    ref = {"secretKeyRef": {"name": "api", "key": "token"}}
    manifest_dir.add_function(
        "mounted",
        READ_MOUNT_AND_ENV,
        env=[{"name": "API_TOKEN", "valueFrom": ref}],
        secrets=[{"name": "tls-certs"}],
    )
    manifest_dir.add_function("unmounted", READ_MOUNT_AND_ENV, secrets=[{"name": "nowhere"}])
    manifest_dir.add_raw("secret-api.yaml", SECRET_MANIFEST)
    _secret(manifest_dir.path, "default", "tls-certs", **{"tls.key": "KEY-PEM"})
    _secret(manifest_dir.path, "default", "api", token="from-the-folder")
    gateway = start_gateway(manifest_dir.path)
    answer = gateway.invoke("mounted", {})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"key": "KEY-PEM", "mode": "0o400", "token": "from-the-manifest"}
    missing = gateway.invoke("unmounted", {})
    assert missing.status_code == 503
    assert "Secret 'nowhere'" in missing.json()["error"]["message"]
