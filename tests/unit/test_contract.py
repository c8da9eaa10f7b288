"""The launch contract is written once (kubefaas.contract) and read by the runtime alone."""

from __future__ import annotations

from kubefaas.api import parse_function
from kubefaas.contract import reserved_names, runtime_environment
from kubefaas_operator.children import runtime_env
from kubefaas_runtime.config import EventFormat, Settings

FUNCTION = parse_function(
    {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "hello", "namespace": "team-a"},
        "spec": {
            "runtime": "python3.11",
            "handler": "app.run",
            "eventFormat": "http",
            "timeoutSeconds": 7,
            "memory": "1Gi",
            "code": {"inline": {"app.py": "def run(e, c): return e"}},
            "env": [{"name": "PORT", "value": "1"}, {"name": "GREETING", "value": "hi"}],
        },
    }
)


def test_the_runtime_reads_every_value_the_contract_sets() -> None:
    environment = runtime_environment(
        FUNCTION, port=9000, code_dir="/code", tmp_dir="/scratch", version=3
    )
    settings = Settings.from_env(environment)
    assert settings.port == 9000
    assert settings.code_dir == "/code"
    assert settings.tmp_dir == "/scratch"
    assert settings.handler == "app.run"
    assert (settings.function_name, settings.function_namespace) == ("hello", "team-a")
    assert settings.function_version == "3"
    assert settings.event_format is EventFormat.HTTP
    assert settings.timeout_seconds == 7
    assert settings.memory_mb == 1024


def test_user_env_cannot_take_a_contract_name() -> None:
    reserved = reserved_names(FUNCTION)
    assert "PORT" in reserved
    assert "KUBEFAAS_HANDLER" in reserved
    assert "GREETING" not in reserved


def test_each_secret_mount_is_named_by_a_variable_in_the_pod() -> None:
    fn = parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "hello"},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(e, c): return e"}},
                "secrets": [{"name": "tls"}, {"name": "api-keys", "mountPath": "/etc/keys"}],
            },
        }
    )
    pod_env = {entry["name"]: entry["value"] for entry in runtime_env(fn, version=1)}
    assert pod_env["KUBEFAAS_SECRET_DIR_TLS"] == "/var/kubefaas/secrets/tls"
    assert pod_env["KUBEFAAS_SECRET_DIR_API_KEYS"] == "/etc/keys"
    assert "KUBEFAAS_SECRET_DIR_API_KEYS" in reserved_names(fn)
    # A Function without mounts gets no such variable (its pods do not change).
    plain = runtime_environment(FUNCTION, port=1, code_dir="", tmp_dir="", version=1)
    assert not [name for name in plain if name.startswith("KUBEFAAS_SECRET_DIR_")]
