"""Secrets for functions in the pods the operator builds (docs/security.md): the kubelet
reads them; the Deployment only names them, so the operator needs no access to Secrets."""

from __future__ import annotations

from kubefaas_operator import children
from tests.unit.test_children import container, deployment, function, pod_spec


def test_env_from_a_secret_key_is_a_secret_key_ref() -> None:
    fn = function(
        env=[
            {"name": "PLAIN", "value": "1"},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
            {
                "name": "MAYBE",
                "valueFrom": {"secretKeyRef": {"name": "x", "key": "k", "optional": True}},
            },
        ]
    )
    env = {e["name"]: e for e in container(deployment(fn))["env"]}
    assert env["PLAIN"] == {"name": "PLAIN", "value": "1"}
    assert env["DB_PASSWORD"] == {
        "name": "DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}},
    }
    assert env["MAYBE"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_secrets_are_mounted_read_only_at_their_path_or_the_default() -> None:
    fn = function(secrets=[{"name": "tls"}, {"name": "api-keys", "mountPath": "/etc/keys"}])
    obj = deployment(fn)
    volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
    assert volumes["secret-0"] == {
        "name": "secret-0",
        "secret": {"secretName": "tls", "defaultMode": 0o444},
    }
    assert volumes["secret-1"]["secret"]["secretName"] == "api-keys"
    mounts = {m["name"]: m for m in container(obj)["volumeMounts"]}
    assert mounts["secret-0"] == {
        "name": "secret-0",
        "mountPath": "/var/kubefaas/secrets/tls",
        "readOnly": True,
    }
    assert mounts["secret-1"]["mountPath"] == "/etc/keys"
    assert mounts["secret-1"]["readOnly"] is True


def test_adding_secret_fields_does_not_roll_existing_functions() -> None:
    # The hash of a Function that uses none of the new fields is what it was before them.
    plain = function(env=[{"name": "A", "value": "1"}])
    assert children.pod_checksum(plain, {}) == (
        children.pod_checksum(
            function(env=[{"name": "A", "value": "1"}], auth={"mode": "none"}), {}
        )
    )
    with_secret = function(env=[{"name": "A", "value": "1"}], secrets=[{"name": "tls"}])
    assert children.pod_checksum(with_secret, {}) != children.pod_checksum(plain, {})
