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
from kubefaas.destinations import AddressRule
from kubefaas.quantity import mebibytes
from kubefaas_operator.build_config import BuildConfig, BuildConfigError, load_build_config
from kubefaas_operator.pool import PoolSettings

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
POOL_SIZE_ENV = "KUBEFAAS_POOL_SIZE"
POOL_MAX_PER_NAMESPACE_ENV = "KUBEFAAS_POOL_MAX_PER_NAMESPACE"
POOL_MEMORY_ENV = "KUBEFAAS_POOL_MEMORY"
NETWORK_POLICY_ENV = "KUBEFAAS_FUNCTION_NETWORK_POLICY"
FUNCTION_EGRESS_ENV = "KUBEFAAS_FUNCTION_EGRESS"

DEFAULT_FUNCTION_EGRESS: tuple[Mapping[str, Any], ...] = (
    {
        "to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
            {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}},
        ]
    },
)
"""Where function pods may connect besides DNS and the gateway: any address but the
link-local ones, which hold the cloud metadata endpoints (the chart's
``networkPolicy.functionEgress`` default, which it passes in `FUNCTION_EGRESS_ENV`)."""


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
    destination_rule: AddressRule = field(default_factory=AddressRule)
    """``KUBEFAAS_CALLBACK_ALLOWED_CIDRS`` / ``KUBEFAAS_CALLBACK_BLOCKED_CIDRS``
    (comma-separated CIDRs, default none), the gateway's SSRF rule: URL destinations it
    refuses are reported as ``DestinationsAllowed=False`` (docs/architecture.md,
    "Refused destinations"). Set them to the gateway's values."""
    pool: PoolSettings = field(default_factory=PoolSettings)
    """``KUBEFAAS_POOL_SIZE`` (default 0 = no pools), ``KUBEFAAS_POOL_MAX_PER_NAMESPACE``
    (4), ``KUBEFAAS_POOL_MEMORY`` (256Mi): the warm pools (docs/warm-pool.md)."""

    network_policy: bool = False
    """``KUBEFAAS_FUNCTION_NETWORK_POLICY`` (``true``/``false``): give every Function a
    NetworkPolicy admitting only the gateway pods (`gateway_namespace`, `gateway_selector`);
    off, the operator deletes the ones it made. The chart turns it on with
    ``networkPolicy.enabled`` (docs/architecture.md, "Function network policies")."""
    function_egress: tuple[Mapping[str, Any], ...] = DEFAULT_FUNCTION_EGRESS
    """``KUBEFAAS_FUNCTION_EGRESS`` (a JSON list of NetworkPolicy egress rules): where function
    pods may connect besides DNS and the gateway; ``[]`` = nowhere else."""

    @property
    def gateway_labels(self) -> dict[str, str]:
        """`gateway_selector` as matchLabels (`load_config` checks it is equality only)."""
        return selector_labels(self.gateway_selector)

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


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) > 1000:
        raise ConfigError(f"{name} must be an integer 0-1000, got {text!r}")
    return int(text)


def _pool(environ: Mapping[str, str]) -> PoolSettings:
    memory = environ.get(POOL_MEMORY_ENV, "").strip() or limits.MEMORY_DEFAULT
    try:
        size = mebibytes(memory)
    except ValueError:
        size = 0
    if size < mebibytes(limits.MEMORY_MIN) or size > mebibytes(limits.MEMORY_MAX):
        raise ConfigError(
            f"{POOL_MEMORY_ENV} must be a memory size {limits.MEMORY_MIN}-{limits.MEMORY_MAX} "
            f"(e.g. 256Mi), got {memory!r}"
        )
    return PoolSettings(
        size=_count(environ, POOL_SIZE_ENV, 0),
        max_per_namespace=_count(environ, POOL_MAX_PER_NAMESPACE_ENV, 4),
        memory=memory,
    )


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
    network_policy = _flag(environ, NETWORK_POLICY_ENV, False)
    selector = environ.get(GATEWAY_SELECTOR_ENV, "").strip() or DEFAULT_GATEWAY_SELECTOR
    if network_policy:
        try:
            selector_labels(selector)
        except ValueError as exc:
            raise ConfigError(
                f"{GATEWAY_SELECTOR_ENV} must be key=value pairs joined by commas when "
                f"{NETWORK_POLICY_ENV} is on (it becomes the policy's podSelector): {exc}"
            ) from None
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
        gateway_selector=selector,
        gateway_stats_token=environ.get(GATEWAY_STATS_TOKEN_ENV, "").strip() or None,
        destination_rule=_destination_rule(environ),
        pool=_pool(environ),
        network_policy=network_policy,
        function_egress=_function_egress(environ),
    )


def selector_labels(selector: str) -> dict[str, str]:
    """``a=b,c=d`` -> ``{"a": "b", "c": "d"}``; ValueError for anything else."""
    labels: dict[str, str] = {}
    for part in selector.split(","):
        key, sep, value = part.strip().partition("=")
        key, value = key.strip(), value.strip().lstrip("=").strip()
        if not sep or not key or not value or "!" in key:
            raise ValueError(f"{part.strip()!r} is not a key=value pair")
        labels[key] = value
    return labels


def _function_egress(environ: Mapping[str, str]) -> tuple[Mapping[str, Any], ...]:
    text = environ.get(FUNCTION_EGRESS_ENV, "").strip()
    if not text:
        return DEFAULT_FUNCTION_EGRESS
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{FUNCTION_EGRESS_ENV} is not JSON: {exc}") from None
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(rule, dict) and set(rule) <= {"to", "ports"} for rule in value
    ):
        raise ConfigError(
            f"{FUNCTION_EGRESS_ENV} must be a JSON list of NetworkPolicy egress rules "
            '(objects with "to" and/or "ports"), e.g. '
            '[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}]'
        )
    return tuple(value)


def _destination_rule(environ: Mapping[str, str]) -> AddressRule:
    try:
        return AddressRule.from_environ(environ)
    except ValueError as exc:
        raise ConfigError(f"{exc} (comma-separated CIDRs, e.g. 10.0.0.0/8,fd00::/8)") from None
