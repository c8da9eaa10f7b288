"""The runtime's launch contract: environment variables, defaults and bad values."""

from __future__ import annotations

import pytest

from kubefaas_runtime.config import (
    DEFAULT_MAX_BODY_BYTES,
    ConfigError,
    EventFormat,
    Settings,
)


def test_defaults_match_the_launch_contract() -> None:
    settings = Settings.from_env({})
    assert settings.port == 8080
    assert settings.host == "0.0.0.0"
    assert settings.code_dir == "/var/task"
    assert settings.handler == "main.handler"
    assert settings.function_namespace == "default"
    assert settings.function_version == "1"
    assert settings.event_format is EventFormat.JSON
    assert settings.timeout_seconds == 30
    assert settings.memory_mb == 256
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 6 * 1024 * 1024 + 64 * 1024
    assert settings.tmp_dir == "/tmp"
    assert settings.drain_grace_seconds == 2


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "PORT": "9001",
            "HOST": "127.0.0.1",
            "KUBEFAAS_CODE_DIR": "/code",
            "KUBEFAAS_HANDLER": "app.main",
            "KUBEFAAS_FUNCTION_NAME": "hello",
            "KUBEFAAS_FUNCTION_NAMESPACE": "team-a",
            "KUBEFAAS_FUNCTION_VERSION": "7",
            "KUBEFAAS_EVENT_FORMAT": "HTTP",
            "KUBEFAAS_TIMEOUT_SECONDS": "2.5",
            "KUBEFAAS_MEMORY_MB": "512",
            "KUBEFAAS_MAX_BODY_BYTES": "1024",
            "TMPDIR": "/scratch",
            "KUBEFAAS_DRAIN_GRACE_SECONDS": "0",
            "KUBEFAAS_MAX_THREADS": "4",
            "KUBEFAAS_INSTANCE_ID": "pod-1",
            "KUBEFAAS_REPORTS": "off",
        }
    )
    assert settings == Settings(
        port=9001,
        host="127.0.0.1",
        code_dir="/code",
        handler="app.main",
        function_name="hello",
        function_namespace="team-a",
        function_version="7",
        event_format=EventFormat.HTTP,
        timeout_seconds=2.5,
        memory_mb=512,
        max_body_bytes=1024,
        tmp_dir="/scratch",
        drain_grace_seconds=0,
        max_threads=4,
        instance_id="pod-1",
        reports=False,
    )


def test_instance_id_falls_back_to_the_pod_name() -> None:
    assert Settings.from_env({"HOSTNAME": "hello-5d9f-abcde"}).instance_id == "hello-5d9f-abcde"


def test_empty_values_count_as_unset() -> None:
    assert Settings.from_env({"PORT": "", "KUBEFAAS_HANDLER": "  "}) == Settings.from_env({})


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("PORT", "http", "must be a whole number"),
        ("PORT", "70000", "between 0 and 65535"),
        ("KUBEFAAS_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("KUBEFAAS_TIMEOUT_SECONDS", "soon", "number of seconds"),
        ("KUBEFAAS_TIMEOUT_SECONDS", "nan", "finite"),
        ("KUBEFAAS_MEMORY_MB", "0", "at least 1"),
        ("KUBEFAAS_MAX_BODY_BYTES", "-1", "at least 0"),
        ("KUBEFAAS_DRAIN_GRACE_SECONDS", "-2", "at least 0"),
        ("KUBEFAAS_EVENT_FORMAT", "xml", "one of json, http"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_rule(name: str, value: str, rule: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)
    assert repr(value) in str(raised.value)
    assert rule in str(raised.value)
