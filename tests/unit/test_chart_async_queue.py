"""The chart's `asyncQueue` values: dead-letter retention (14 days by default, an optional
count per function) and /readyz with the queue down reach the gateway's settings, and
the gateway reads them as given (docs/architecture.md, "Queue semantics" and "Readiness
with the queue down")."""

from __future__ import annotations

from typing import Any

from kubefaas_gateway.settings import Settings
from tests.unit.test_chart import container, env_of, find, render, render_error


def _env(*sets: str) -> dict[str, Any]:
    gateway = find(render(*sets), "Deployment", "kubefaas-gateway")
    return env_of(container(gateway, "gateway"))


def _settings(env: dict[str, Any], monkeypatch: Any) -> Settings:
    for name, value in env.items():
        if name.startswith(("KUBEFAAS_ASYNC_DEAD", "KUBEFAAS_READYZ")):
            monkeypatch.setenv(name, value)
    return Settings()


def test_defaults_keep_dead_letters_14_days_without_a_count_and_readyz_lenient(
    monkeypatch: Any,
) -> None:
    env = _env()
    assert env["KUBEFAAS_ASYNC_DEAD_LETTER_RETENTION_SECONDS"] == "1209600"
    assert "KUBEFAAS_ASYNC_DEAD_LETTER_MAX_PER_FUNCTION" not in env
    assert env["KUBEFAAS_READYZ_REQUIRES_QUEUE"] == "false"
    settings = _settings(env, monkeypatch)
    assert settings.async_dead_letter_retention_seconds == 14 * 24 * 3600
    assert settings.async_dead_letter_max_per_function is None
    assert settings.readyz_requires_queue is False


def test_values_set_the_retention_count_and_strict_readiness(monkeypatch: Any) -> None:
    env = _env(
        "asyncQueue.deadLetterRetentionSeconds=3600",
        "asyncQueue.deadLetterMaxPerFunction=500",
        "asyncQueue.readyzRequiresQueue=true",
    )
    settings = _settings(env, monkeypatch)
    assert settings.async_dead_letter_retention_seconds == 3600
    assert settings.async_dead_letter_max_per_function == 500
    assert settings.readyz_requires_queue is True


def test_a_retention_of_zero_or_a_negative_count_is_refused() -> None:
    assert "/asyncQueue/deadLetterRetentionSeconds" in render_error(
        "asyncQueue.deadLetterRetentionSeconds=0"
    )
    assert "/asyncQueue/deadLetterMaxPerFunction" in render_error(
        "asyncQueue.deadLetterMaxPerFunction=-1"
    )
