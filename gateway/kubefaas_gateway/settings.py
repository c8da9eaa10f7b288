"""Every tunable of the gateway, in one documented place.

Each field is read from the environment variable `KUBEFAAS_<FIELD NAME IN UPPER CASE>`
(for example `KUBEFAAS_PORT`); the docstring under each field names it with its default.
Numbers that belong to the Function API (body limits) come from `kubefaas.limits`.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kubefaas import limits
from kubefaas_gateway.queue.base import RECORD_TTL_DEFAULT_SECONDS

DEFAULT_PORT = limits.GATEWAY_PORT
DEFAULT_HOST = "127.0.0.1"
DEFAULT_NAMESPACE = "default"
# Idle async dispatchers read the queue this often at most (see async_poll_interval_seconds).
ASYNC_IDLE_POLL_SECONDS = 5.0


DROPPED_HEADERS_DEFAULT = frozenset(
    {
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-amz-security-token",
    }
)


def _default_runtime_command() -> list[str]:
    return [sys.executable, "-m", "kubefaas_runtime"]


class Settings(BaseSettings):
    """Gateway settings; construct with keywords in tests, from the environment otherwise."""

    model_config = SettingsConfigDict(
        env_prefix="KUBEFAAS_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    host: str = DEFAULT_HOST
    """`KUBEFAAS_HOST`, default 127.0.0.1: address the gateway listens on."""

    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """`KUBEFAAS_PORT`, default 8080: port the gateway listens on (0 = any free port)."""

    state_dir: Path = Path(".state")
    """`KUBEFAAS_STATE_DIR`, default `.state`: local mode writes function code, instance
    scratch directories and the async queue (`async-queue.sqlite3`) under it."""

    admin_token: SecretStr | None = None
    """`KUBEFAAS_ADMIN_TOKEN`, default unset: bearer token for admin routes
    (`/system/dead-letters`); while unset those routes answer 403 saying how to set it."""

    namespace_tokens_secret: str | None = None
    """`KUBEFAAS_NAMESPACE_TOKENS_SECRET`, default unset: `NAMESPACE/NAME` (or `NAME` in the
    default namespace) of the Secret whose values are namespace tokens, each granting the
    namespaces its key names (`tenants.py`; docs/architecture.md, "Namespace tokens")."""

    auth_default: Literal["none", "token"] = "none"
    """`KUBEFAAS_AUTH_DEFAULT`, default `none` (the chart sets `token`): invoke auth of a
    Function that has no `spec.auth` (docs/security.md)."""

    secrets_dir: Path | None = None
    """`KUBEFAAS_SECRETS_DIR`, default unset: local mode reads Secrets (invoke keys, JWT
    public keys) from `<dir>/<namespace>/<name>/<key>`; `kubefaas local DIR` uses
    `DIR/secrets` when this is unset. In a cluster Secrets come from the API."""

    secret_cache_seconds: float = Field(default=10.0, gt=0)
    """`KUBEFAAS_SECRET_CACHE_SECONDS`, default 10: how long a Secret read for invoke auth
    is kept; a rotated key is accepted (or a removed one refused) within this."""

    metrics_token: SecretStr | None = None
    """`KUBEFAAS_METRICS_TOKEN`, default unset (open): when set, `/metrics` and
    `/internal/stats` need `Authorization: Bearer <token>` (or the admin token)."""
    console_enabled: bool = False
    """`KUBEFAAS_CONSOLE_ENABLED`, default false: serve the web console at `/console`
    (docs/console.md); it logs in with the admin token or a namespace token, so it needs
    one of them set."""

    default_namespace: str = DEFAULT_NAMESPACE
    """`KUBEFAAS_DEFAULT_NAMESPACE`, default `default`: namespace of `/function/{name}`."""

    sync_body_limit_bytes: int = Field(default=limits.SYNC_BODY_LIMIT_BYTES, ge=0)
    """`KUBEFAAS_SYNC_BODY_LIMIT_BYTES`, default 6 MiB: larger sync requests get 413."""

    async_body_limit_bytes: int = Field(default=limits.ASYNC_BODY_LIMIT_BYTES, ge=0)
    """`KUBEFAAS_ASYNC_BODY_LIMIT_BYTES`, default 1 MiB: larger async requests get 413."""

    max_url_bytes: int = Field(default=8192, ge=256)
    """`KUBEFAAS_MAX_URL_BYTES`, default 8192: longer request URLs are answered 414."""

    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    """`KUBEFAAS_MAX_HEADER_BYTES`, default 32 KiB: a larger request header section is
    answered 431 as soon as it crosses the limit (never buffered whole)."""

    max_header_count: int = Field(default=100, ge=8)
    """`KUBEFAAS_MAX_HEADER_COUNT`, default 100: requests with more header fields get 431."""

    response_limit_bytes: int = Field(default=limits.RESPONSE_LIMIT_BYTES, ge=0)
    """`KUBEFAAS_RESPONSE_LIMIT_BYTES`, default 6 MiB: a function answer larger than this is
    refused while it streams in (502 `ResponseTooLarge`), never held whole."""

    keepalive_timeout_seconds: int = Field(default=5, ge=1)
    """`KUBEFAAS_KEEPALIVE_TIMEOUT_SECONDS`, default 5: idle client connections close after."""

    header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    """`KUBEFAAS_HEADER_READ_TIMEOUT_SECONDS`, default 10: a request's line and headers must
    arrive within this (from the connection's start, or from the first byte of a later
    request on it); else 408 `RequestTimeout` and the connection is closed."""

    body_read_timeout_seconds: float = Field(default=60.0, gt=0)
    """`KUBEFAAS_BODY_READ_TIMEOUT_SECONDS`, default 60: a request's whole body must arrive
    within this after its headers; else 408 `RequestTimeout` and the connection is closed."""

    max_connections: int | None = Field(default=None, ge=1)
    """`KUBEFAAS_MAX_CONNECTIONS`, default unset: past this many open connections and
    in-flight requests, new ones are answered 503 by the server."""

    deadline_grace_seconds: float = Field(default=1.0, ge=0)
    """`KUBEFAAS_DEADLINE_GRACE_SECONDS`, default 1.0: how long past an invocation's
    deadline the gateway still waits for the runtime's own 504 before it gives up."""

    upstream_pool_size: int = Field(default=1024, ge=1)
    """`KUBEFAAS_UPSTREAM_POOL_SIZE`, default 1024: most open connections to instances."""

    upstream_keepalive_seconds: float = Field(default=4.0, gt=0)
    """`KUBEFAAS_UPSTREAM_KEEPALIVE_SECONDS`, default 4.0: idle pooled connections to
    instances are closed after this; below the runtime's own keep-alive (uvicorn's 5 s) so
    the gateway never reuses a connection the runtime is closing."""

    instance_start_timeout_seconds: float = Field(default=30.0, gt=0)
    """`KUBEFAAS_INSTANCE_START_TIMEOUT_SECONDS`, default 30: a local instance that has not
    passed its health check by then is killed and counted as a failed start."""

    instance_probe_interval_seconds: float = Field(default=0.01, gt=0)
    """`KUBEFAAS_INSTANCE_PROBE_INTERVAL_SECONDS`, default 0.01: how often a starting
    instance's `/healthz` is probed; short, because it adds directly to cold starts."""

    instance_stop_grace_seconds: float = Field(default=5.0, ge=0)
    """`KUBEFAAS_INSTANCE_STOP_GRACE_SECONDS`, default 5: after SIGTERM an instance may
    finish its in-flight work for this long before it is killed."""

    local_run_as: str = "auto"
    """`KUBEFAAS_LOCAL_RUN_AS`, default `auto`: the user local instances run as when the
    gateway is root (`auto`: `nobody` if it can run the runtime, else root with a warning;
    a user name; `none`), docs/security.md, "Local mode isolation"."""

    local_tmp_check_interval_seconds: float = Field(default=1.0, gt=0)
    """`KUBEFAAS_LOCAL_TMP_CHECK_INTERVAL_SECONDS`, default 1: how often local mode measures
    each instance's /tmp against its `tmpSize` (docs/security.md, "Local mode isolation")."""

    runtime_command: list[str] = Field(default_factory=_default_runtime_command)
    """`KUBEFAAS_RUNTIME_COMMAND` (a JSON list), default `[<this python>, "-m",
    "kubefaas_runtime"]`: how local mode starts one function instance."""

    log_level: str = "info"
    """`KUBEFAAS_LOG_LEVEL`, default `info`."""

    shutdown_timeout_seconds: float = Field(default=10.0, ge=0)
    """`KUBEFAAS_SHUTDOWN_TIMEOUT_SECONDS`, default 10: on SIGTERM, in-flight requests may
    finish for this long before the gateway closes their connections."""

    function_logs: bool = True
    """`KUBEFAAS_FUNCTION_LOGS`, default true: local mode keeps what instances print in
    `<state_dir>/function-logs.sqlite3` for `kubefaas logs`; a cluster gateway keeps there
    the logs of function pods as they end (docs/logs.md)."""

    metering: bool = True
    """`KUBEFAAS_METERING`, default true: count requests, GB-seconds and cold starts per
    function and keep them in `<state_dir>/usage.sqlite3` (`GET /system/usage`)."""

    otlp_endpoint: str | None = None
    """`KUBEFAAS_OTLP_ENDPOINT`, default unset (no spans, nothing imported): OTLP/HTTP
    collector base URL (e.g. `http://127.0.0.1:4318`) for the gateway's OpenTelemetry spans
    (docs/logs.md, "Tracing"; needs the `tracing` extra)."""

    # -- async invocations (docs/architecture.md, "Queue semantics") -------------------

    redis_url: str | None = None
    """`KUBEFAAS_REDIS_URL`, default unset: keep the async queue in Redis Streams (several
    gateway replicas) instead of the SQLite file `<state_dir>/async-queue.sqlite3`."""

    redis_prefix: str = "kubefaas"
    """`KUBEFAAS_REDIS_PREFIX`, default `kubefaas`: hash tag of every async queue key, so
    several installations can share one Redis."""

    async_record_ttl_seconds: float = Field(default=RECORD_TTL_DEFAULT_SECONDS, gt=0)
    """`KUBEFAAS_ASYNC_RECORD_TTL_SECONDS`, default 86400: how long a finished async
    invocation's record (status, attempts, result) stays readable. Dead letters are kept
    until they are redriven or purged."""

    readyz_requires_queue: bool = False
    """`KUBEFAAS_READYZ_REQUIRES_QUEUE`, default false: `/readyz` answers 503 (not 200
    `degraded`) while the async queue's store is unreachable; off by default since sync
    calls need no queue (docs/architecture.md, "Readiness with the queue down")."""

    async_dead_letter_retention_seconds: float = Field(default=14 * 24 * 3600.0, gt=0)
    """`KUBEFAAS_ASYNC_DEAD_LETTER_RETENTION_SECONDS`, default 1209600 (14 days): a dead
    letter older than this is purged (payload dropped, record `failed` for the record
    TTL), counted in `kubefaas_async_dead_letters_purged_total{reason="age"}`."""

    async_dead_letter_max_per_function: int | None = Field(default=None, ge=1)
    """`KUBEFAAS_ASYNC_DEAD_LETTER_MAX_PER_FUNCTION`, default unset (no count bound): keep at
    most this many dead letters per function, purging the oldest beyond it
    (`reason="count"`)."""

    async_sweep_interval_seconds: float = Field(default=60.0, gt=0)
    """`KUBEFAAS_ASYNC_SWEEP_INTERVAL_SECONDS`, default 60: how often finished records past
    their TTL and dead letters past their retention are purged."""

    async_concurrency_cap: int = Field(default=8, ge=1)
    """`KUBEFAAS_ASYNC_CONCURRENCY_CAP`, default 8: most async invocations of one function
    this gateway runs at once (also bounded by maxScale x targetConcurrency and
    reservedConcurrency), so a flood of events cannot starve synchronous callers."""

    async_lease_margin_seconds: float = Field(default=30.0, gt=0)
    """`KUBEFAAS_ASYNC_LEASE_MARGIN_SECONDS`, default 30: an event's lease is the
    function's timeoutSeconds + the deadline grace + this; when a gateway dies mid-attempt
    the event is delivered again once the lease runs out."""

    async_poll_interval_seconds: float = Field(default=ASYNC_IDLE_POLL_SECONDS, gt=0)
    """`KUBEFAAS_ASYNC_POLL_INTERVAL_SECONDS`, default 5: longest an idle function's
    dispatcher sleeps before it reads the queue again, to find what no one told it about
    (events enqueued by other gateway replicas, their retries, leases that ran out). Events
    enqueued or redriven here, and retries scheduled here, wake it at once; so the idle
    cost is one queue read per function per interval, not a busy poll."""

    async_queue_max_per_function: int = Field(default=100_000, ge=1)
    """`KUBEFAAS_ASYNC_QUEUE_MAX_PER_FUNCTION`, default 100000: async events one function
    may have queued or in flight; past it submits get 429 `QueueFull`, nothing stored."""

    async_queue_max_total: int = Field(default=1_000_000, ge=1)
    """`KUBEFAAS_ASYNC_QUEUE_MAX_TOTAL`, default 1000000: events the whole queue may hold;
    past it submits get 507 `QueueStorageFull`, nothing stored."""

    async_dropped_headers: Annotated[frozenset[str], NoDecode] = DROPPED_HEADERS_DEFAULT
    """`KUBEFAAS_ASYNC_DROPPED_HEADERS` (comma-separated), default `authorization, cookie,
    proxy-authorization, x-api-key, x-auth-token, x-csrf-token, x-amz-security-token`:
    request headers never stored with an async event (credentials; docs/security.md)."""

    async_stats_interval_seconds: float = Field(default=5.0, gt=0)
    """`KUBEFAAS_ASYNC_STATS_INTERVAL_SECONDS`, default 5: how often queue depth, oldest
    event age and leases in flight are refreshed for `/metrics`."""

    async_retry_base_seconds: float = Field(default=limits.ASYNC_RETRY_BASE_SECONDS, gt=0)
    """`KUBEFAAS_ASYNC_RETRY_BASE_SECONDS`, default 60: first retry delay after a function
    error, doubling (1 min, then 2 min); lower it to run retry tests in seconds."""

    async_backoff_initial_seconds: float = Field(
        default=limits.THROTTLE_BACKOFF_INITIAL_SECONDS, gt=0
    )
    """`KUBEFAAS_ASYNC_BACKOFF_INITIAL_SECONDS`, default 1: first retry delay after a
    throttle or platform failure, doubling ..."""

    async_backoff_max_seconds: float = Field(default=limits.THROTTLE_BACKOFF_MAX_SECONDS, gt=0)
    """`KUBEFAAS_ASYNC_BACKOFF_MAX_SECONDS`, default 300: ... up to this."""

    async_retry_jitter: float = Field(default=0.1, ge=0, lt=1)
    """`KUBEFAAS_ASYNC_RETRY_JITTER`, default 0.1: up to this fraction of each retry delay is
    shaved off at random, so events that failed together do not return together."""

    callback_timeout_seconds: float = Field(default=10.0, gt=0)
    """`KUBEFAAS_CALLBACK_TIMEOUT_SECONDS`, default 10: per try, for `X-Callback-Url` and URL
    destinations (4 tries, then the failure is logged; the record is kept either way)."""

    # -- triggers (docs/triggers.md) -------------------------------------------------------

    trigger_ack_wait_seconds: float = Field(default=30.0, gt=0)
    """`KUBEFAAS_TRIGGER_ACK_WAIT_SECONDS`, default 30: the `ack_wait` of the NATS consumers
    the gateway creates; a message received by a gateway that died is redelivered after it
    (one still being worked on is kept alive meanwhile)."""

    trigger_claim_idle_seconds: float = Field(default=60.0, gt=0)
    """`KUBEFAAS_TRIGGER_CLAIM_IDLE_SECONDS`, default 60: a Redis stream entry received by
    a consumer that stopped answering is claimed by another gateway after this long."""

    trigger_reconcile_seconds: float = Field(default=2.0, gt=0)
    """`KUBEFAAS_TRIGGER_RECONCILE_SECONDS`, default 2: how often the trigger loops are
    matched to the registry's functions, and queue lag published for scaling."""

    callback_allowed_cidrs: Annotated[tuple[str, ...], NoDecode] = ()
    """`KUBEFAAS_CALLBACK_ALLOWED_CIDRS` (comma-separated), default none: address ranges
    callbacks and URL destinations may reach although the SSRF guard would refuse them
    (loopback, link-local, private; docs/security.md)."""

    callback_blocked_cidrs: Annotated[tuple[str, ...], NoDecode] = ()
    """`KUBEFAAS_CALLBACK_BLOCKED_CIDRS` (comma-separated), default none: more ranges
    callbacks may not reach, such as the cluster's service and pod CIDRs when they are
    public addresses."""

    @field_validator("callback_allowed_cidrs", "callback_blocked_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("callback_allowed_cidrs", "callback_blocked_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
        return value

    # -- in a cluster (`kubefaas gateway`) ------------------------------------------------

    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    """`KUBEFAAS_NAMESPACES`, default unset (every namespace): comma-separated namespaces
    whose Functions the gateway serves and whose pods it routes to."""

    warm_pool: bool = False
    """`KUBEFAAS_WARM_POOL`, default false (the chart sets it when `warmPool.size` > 0):
    watch warm-pool pods and claim one for an eligible function with no ready instance
    (docs/warm-pool.md)."""

    @field_validator("async_dropped_headers", mode="before")
    @classmethod
    def _split_headers(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(p.strip().lower() for p in value.split(",") if p.strip())
        return value

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value
