"""The runtime's settings, read once from the environment at start.

The gateway's local backend and the operator's Deployment both launch
``python -m kubefaas_runtime`` with exactly these variables, so this module is the
launch contract: each field names its variable and default, and a bad value stops the
process with a message that names the variable and the rule (exit code 2) instead of
surfacing later as a confusing failure inside an invocation.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from kubefaas.wire import RUNTIME_PORT

DEFAULT_PORT = RUNTIME_PORT
DEFAULT_HOST = "0.0.0.0"
DEFAULT_CODE_DIR = "/var/task"
DEFAULT_HANDLER = "main.handler"
DEFAULT_FUNCTION_NAME = "function"
DEFAULT_NAMESPACE = "default"
DEFAULT_VERSION = "1"
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MEMORY_MB = 256
# The 6 MiB synchronous payload limit (kubefaas.limits, which the runtime cannot import;
# docs/architecture.md, "Defaults and bounds") plus slack for the JSON envelope a client
# may wrap around a payload that is itself at the limit.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024 + 64 * 1024
DEFAULT_TMP_DIR = "/tmp"
# Long enough for an endpoint removal to reach every gateway (one probe period) before
# the listening socket closes, short enough not to eat into terminationGracePeriodSeconds.
DEFAULT_DRAIN_GRACE_SECONDS = 2.0
# Sync handlers run in a thread pool. Concurrency per instance is bounded by the gateway
# (targetConcurrency / containerConcurrency), not here, so the pool is generous: a handler
# waiting on I/O should not queue behind others. Threads cost little until used.
DEFAULT_MAX_THREADS = 64


class EventFormat(StrEnum):
    """How a request becomes an event and a return value becomes a response."""

    JSON = "json"
    HTTP = "http"


class ConfigError(ValueError):
    """A launch variable has a value the runtime cannot use; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the runtime reads from its environment.

    Each field documents its variable and default; ``from_env`` is the only parser.
    """

    port: int = DEFAULT_PORT
    """``PORT``: TCP port to listen on."""
    host: str = DEFAULT_HOST
    """``HOST``: address to bind; local mode passes ``127.0.0.1``."""
    code_dir: str = DEFAULT_CODE_DIR
    """``KUBEFAAS_CODE_DIR``: folder with the user code, put first on ``sys.path``."""
    deps_dir: str = ""
    """``KUBEFAAS_DEPS_DIR``: installed requirements (docs/architecture.md, "Packaging"),
    put on ``sys.path`` right after the code; empty = none. A built function image sets it
    in its config; local mode sets it per instance."""
    handler: str = DEFAULT_HANDLER
    """``KUBEFAAS_HANDLER``: ``module.function`` (``pkg/mod.fn`` is accepted too)."""
    function_name: str = DEFAULT_FUNCTION_NAME
    """``KUBEFAAS_FUNCTION_NAME``."""
    function_namespace: str = DEFAULT_NAMESPACE
    """``KUBEFAAS_FUNCTION_NAMESPACE``."""
    function_version: str = DEFAULT_VERSION
    """``KUBEFAAS_FUNCTION_VERSION``."""
    event_format: EventFormat = EventFormat.JSON
    """``KUBEFAAS_EVENT_FORMAT``: ``json`` or ``http``."""
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    """``KUBEFAAS_TIMEOUT_SECONDS``: deadline of a call without ``X-Deadline-Ms``; also
    how long a SIGTERM drain waits for in-flight calls."""
    memory_mb: int = DEFAULT_MEMORY_MB
    """``KUBEFAAS_MEMORY_MB``: reported as ``context.memory_limit_in_mb``."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """``KUBEFAAS_MAX_BODY_BYTES``: larger request bodies are answered 413."""
    tmp_dir: str = DEFAULT_TMP_DIR
    """``TMPDIR``: the instance's private scratch directory (``context.tmp_dir``)."""
    drain_grace_seconds: float = DEFAULT_DRAIN_GRACE_SECONDS
    """``KUBEFAAS_DRAIN_GRACE_SECONDS``: after SIGTERM, how long to keep accepting
    connections while /healthz already answers 503."""
    max_threads: int = DEFAULT_MAX_THREADS
    """``KUBEFAAS_MAX_THREADS``: size of the pool that runs sync handlers."""
    reports: bool = True
    """``KUBEFAAS_REPORTS``, default on (``0``/``false``/``off`` turn it off): end each
    invocation with a REPORT line."""
    instance_id: str = ""
    """``KUBEFAAS_INSTANCE_ID``, else ``HOSTNAME`` (the pod name on Kubernetes), else the
    host name and process id: tags every log line (docs/logs.md)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (``os.environ`` by default).

        Empty values count as unset, so a manifest can blank a variable safely.
        """
        env = os.environ if environ is None else environ

        def text(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        return cls(
            port=_integer(env, "PORT", DEFAULT_PORT, low=0, high=65535),
            host=text("HOST", DEFAULT_HOST),
            code_dir=text("KUBEFAAS_CODE_DIR", DEFAULT_CODE_DIR),
            deps_dir=env.get("KUBEFAAS_DEPS_DIR", "").strip(),
            handler=text("KUBEFAAS_HANDLER", DEFAULT_HANDLER),
            function_name=text("KUBEFAAS_FUNCTION_NAME", DEFAULT_FUNCTION_NAME),
            function_namespace=text("KUBEFAAS_FUNCTION_NAMESPACE", DEFAULT_NAMESPACE),
            function_version=text("KUBEFAAS_FUNCTION_VERSION", DEFAULT_VERSION),
            event_format=_event_format(env),
            timeout_seconds=_number(env, "KUBEFAAS_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS),
            memory_mb=_integer(env, "KUBEFAAS_MEMORY_MB", DEFAULT_MEMORY_MB, low=1),
            max_body_bytes=_integer(env, "KUBEFAAS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, low=0),
            tmp_dir=text("TMPDIR", DEFAULT_TMP_DIR),
            drain_grace_seconds=_number(
                env,
                "KUBEFAAS_DRAIN_GRACE_SECONDS",
                DEFAULT_DRAIN_GRACE_SECONDS,
                allow_zero=True,
            ),
            max_threads=_integer(env, "KUBEFAAS_MAX_THREADS", DEFAULT_MAX_THREADS, low=1),
            reports=text("KUBEFAAS_REPORTS", "1").lower() not in ("0", "false", "off", "no"),
            instance_id=text(
                "KUBEFAAS_INSTANCE_ID",
                text("HOSTNAME", f"{socket.gethostname()}-{os.getpid()}"),
            ),
        )


def _integer(
    env: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be a whole number") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name}={raw!r}: must be {bound}")
    return value


def _number(
    env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be a number of seconds") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={raw!r}: must be a finite number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        rule = "at least 0" if allow_zero else "greater than 0"
        raise ConfigError(f"{name}={raw!r}: must be {rule}")
    return value


def _event_format(env: Mapping[str, str]) -> EventFormat:
    raw = env.get("KUBEFAAS_EVENT_FORMAT", "").strip().lower()
    if not raw:
        return EventFormat.JSON
    try:
        return EventFormat(raw)
    except ValueError:
        allowed = ", ".join(f.value for f in EventFormat)
        raise ConfigError(f"KUBEFAAS_EVENT_FORMAT={raw!r}: must be one of {allowed}") from None
