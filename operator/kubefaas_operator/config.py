"""The operator's settings: one place, each field naming its flag or variable and default.

Parsing is pure (the environment is passed in as a mapping), so a bad value is refused at
start with a message naming the variable and the rule, instead of surfacing later as a
Function stuck with a confusing status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kubefaas import limits, naming
from kubefaas_operator.build_config import BuildConfig, BuildConfigError, load_build_config

DEFAULT_GATEWAY_URL = "http://kubefaas-gateway.kubefaas-system.svc"
"""Where Functions are invoked when neither --gateway-url nor KUBEFAAS_GATEWAY_URL is set:
the gateway Service the Helm chart installs in kubefaas-system."""

DEFAULT_GATEWAY_SELECTOR = f"{naming.COMPONENT_LABEL}={naming.GATEWAY_COMPONENT}"
"""The gateway pods the autoscaler reads `/internal/stats` from, unless the chart narrows it
to its own release's pods."""

DEFAULT_HEALTH_PORT = 8081
DEFAULT_METRICS_PORT = 9090
# The children watch repairs drift within a second; the resync is only the net for a
# missed event (a child deleted while a watch was reconnecting). Four LIST calls a pass,
# whatever the number of Functions.
DEFAULT_RESYNC_SECONDS = 120.0
# kopf runs our (blocking) handlers in a thread pool. Each reconcile is a handful of short
# API calls, so more threads than cores keeps the API server busy during a bulk apply.
DEFAULT_WORKERS = 16

RUNTIME_IMAGES_ENV = "KUBEFAAS_RUNTIME_IMAGES"
GATEWAY_URL_ENV = "KUBEFAAS_GATEWAY_URL"
HEALTH_PORT_ENV = "KUBEFAAS_OPERATOR_HEALTH_PORT"
METRICS_PORT_ENV = "KUBEFAAS_OPERATOR_METRICS_PORT"
RESYNC_SECONDS_ENV = "KUBEFAAS_OPERATOR_RESYNC_SECONDS"
WORKERS_ENV = "KUBEFAAS_OPERATOR_WORKERS"
AUTOSCALER_ENV = "KUBEFAAS_OPERATOR_AUTOSCALER"
GATEWAY_NAMESPACE_ENV = "KUBEFAAS_GATEWAY_NAMESPACE"
GATEWAY_SELECTOR_ENV = "KUBEFAAS_GATEWAY_SELECTOR"
GATEWAY_STATS_TOKEN_ENV = "KUBEFAAS_GATEWAY_STATS_TOKEN"


class ConfigError(ValueError):
    """A setting has a value the operator cannot use; the message names it and the rule."""


@dataclass(frozen=True, kw_only=True)
class OperatorConfig:
    """Everything the operator reads from its command line and environment."""

    runtime_images: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType(dict(limits.RUNTIME_IMAGES))
    )
    """``KUBEFAAS_RUNTIME_IMAGES`` (a JSON object runtime -> image): the WHOLE map, replacing
    the default `limits.RUNTIME_IMAGES`; a runtime missing from it makes its Functions
    ``Ready=False, reason UnknownRuntime``."""
    gateway_url: str = DEFAULT_GATEWAY_URL
    """``--gateway-url`` or ``KUBEFAAS_GATEWAY_URL``: base of the invoke URL in status."""
    namespaces: tuple[str, ...] = ()
    """``--namespace`` (repeatable): watch only these; empty = all namespaces."""
    verbose: bool = False
    """``--verbose``: debug logging."""
    health_port: int = DEFAULT_HEALTH_PORT
    """``KUBEFAAS_OPERATOR_HEALTH_PORT``: kopf's liveness endpoint ``/healthz``; 0 = off."""
    metrics_port: int = DEFAULT_METRICS_PORT
    """``KUBEFAAS_OPERATOR_METRICS_PORT``: Prometheus ``/metrics``; 0 = off."""
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    """``KUBEFAAS_OPERATOR_RESYNC_SECONDS``: period of the safety-net pass; 0 = off."""
    workers: int = DEFAULT_WORKERS
    """``KUBEFAAS_OPERATOR_WORKERS``: threads running reconciles (and API connections)."""
    autoscaler: bool = True
    """``KUBEFAAS_OPERATOR_AUTOSCALER`` (``true``/``false``): run the autoscaler loop in this
    process. Off only where something else must own replicas (tests that scale by hand)."""
    gateway_namespace: str | None = None
    """``KUBEFAAS_GATEWAY_NAMESPACE``: where the autoscaler looks for gateway pods; unset =
    every namespace. The chart sets its release namespace."""
    gateway_selector: str = DEFAULT_GATEWAY_SELECTOR
    """``KUBEFAAS_GATEWAY_SELECTOR``: label selector of the gateway pods, default
    ``app.kubernetes.io/component=gateway``. The chart sets its release's labels."""
    gateway_stats_token: str | None = field(default=None, repr=False)
    """``KUBEFAAS_GATEWAY_STATS_TOKEN``: bearer token sent with ``GET /internal/stats``
    (the gateways' ``KUBEFAAS_METRICS_TOKEN``; docs/security.md); the chart sets both."""
    build: BuildConfig | None = None
    """``KUBEFAAS_BUILD_*``: the build Job of Functions with a requirements.txt
    (`build_config`); None = builds off (no ``KUBEFAAS_BUILD_REGISTRY``)."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def parse_runtime_images(text: str) -> Mapping[str, str]:
    """``{"python3.11": "registry/kubefaas-runtime:0.1.0"}`` -> a read-only mapping."""
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{RUNTIME_IMAGES_ENV} is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        raise ConfigError(
            f"{RUNTIME_IMAGES_ENV} must be a JSON object of non-empty strings, "
            'runtime -> image, e.g. {"python3.11": "kubefaas-runtime:0.1.0"}'
        )
    return MappingProxyType(dict(value))


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"{name} must be a port number 0-65535 (0 = off), got {text!r}")
    return int(text)


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {text!r}")
    return value


def _workers(environ: Mapping[str, str]) -> int:
    text = environ.get(WORKERS_ENV, "").strip()
    if not text:
        return DEFAULT_WORKERS
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise ConfigError(f"{WORKERS_ENV} must be an integer 1-256, got {text!r}")
    return int(text)


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    text = environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {text!r}")


def load_config(
    *,
    namespaces: Sequence[str] | None,
    gateway_url: str | None,
    verbose: bool,
    environ: Mapping[str, str],
) -> OperatorConfig:
    """Combine command-line values (which win) with the environment and the defaults."""
    images_text = environ.get(RUNTIME_IMAGES_ENV, "").strip()
    url = (gateway_url or environ.get(GATEWAY_URL_ENV, "").strip() or DEFAULT_GATEWAY_URL).rstrip(
        "/"
    )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the gateway URL must start with http:// or https://, got {url!r}")
    try:
        build = load_build_config(environ)
    except BuildConfigError as exc:
        raise ConfigError(str(exc)) from None
    return OperatorConfig(
        build=build,
        runtime_images=(
            parse_runtime_images(images_text)
            if images_text
            else MappingProxyType(dict(limits.RUNTIME_IMAGES))
        ),
        gateway_url=url,
        namespaces=tuple(dict.fromkeys(namespaces or ())),
        verbose=verbose,
        health_port=_port(environ, HEALTH_PORT_ENV, DEFAULT_HEALTH_PORT),
        metrics_port=_port(environ, METRICS_PORT_ENV, DEFAULT_METRICS_PORT),
        resync_seconds=_number(environ, RESYNC_SECONDS_ENV, DEFAULT_RESYNC_SECONDS),
        workers=_workers(environ),
        autoscaler=_flag(environ, AUTOSCALER_ENV, True),
        gateway_namespace=environ.get(GATEWAY_NAMESPACE_ENV, "").strip() or None,
        gateway_selector=environ.get(GATEWAY_SELECTOR_ENV, "").strip() or DEFAULT_GATEWAY_SELECTOR,
        gateway_stats_token=environ.get(GATEWAY_STATS_TOKEN_ENV, "").strip() or None,
    )
