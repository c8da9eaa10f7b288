"""The Function API (kubefaas.io/v1alpha1): the single source of truth.

Every field, default and bound of the Function API lives here (docs/architecture.md,
"Function API"; the numbers come from `kubefaas.limits`). `kubefaas.crd` turns these models
into the CRD's OpenAPI schema, so the API server rejects a bad manifest with the same rule
that local mode and the gateway apply through pydantic. Cross-field rules are written once
as a `Rule`: its CEL expression goes into the CRD, its Python predicate runs in the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from kubefaas import limits
from kubefaas.quantity import QUANTITY_PATTERN, parse_quantity
from kubefaas.schedule import Schedule, zone

API_VERSION = f"{limits.API_GROUP}/{limits.API_VERSION}"

# module.function, one level: the module is a file at the root of the code.
HANDLER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"
# A path in inline code (docs/architecture.md, "Packaging"): relative, '/'-separated names
# of letters, digits, '-', '_' and '.', where no name is '.' or '..' or starts with '..'
# (the kubelet's own reserved '..data'), at most INLINE_PATH_MAX_DEPTH names deep. The same
# regular expression is a CEL `matches` in the CRD (RE2 and Python agree on this syntax;
# no backslash, which a CEL string literal would read as an escape).
_PATH_SEGMENT = r"[.]?[-_a-zA-Z0-9][-._a-zA-Z0-9]*"
FILE_PATH_PATTERN = rf"^{_PATH_SEGMENT}(/{_PATH_SEGMENT}){{0,{limits.INLINE_PATH_MAX_DEPTH - 1}}}$"
FILE_PATH_RULE_MESSAGE = (
    "inline file paths must be relative, '/'-separated names of letters, digits, '-', '_' "
    f"and '.' (no '.' or '..' names, none starting with '..'), at most "
    f"{limits.INLINE_PATH_MAX_DEPTH} deep and {limits.INLINE_PATH_MAX_LENGTH} characters"
)
# A key of a Secret's data, as the API server allows it.
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, written once for both enforcers.

    `cel` is evaluated by the API server (x-kubernetes-validations on the object the model
    describes); `holds` is evaluated by the Python model on the same object. `message` is
    what the user reads from either.
    """

    cel: str
    message: str
    holds: Callable[[Any], bool]


def _schema_with_rules(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Publish a model's cross-field rules as CEL in its JSON schema (read by kubefaas.crd)."""
    rules = getattr(cls, "RULES", ())
    if rules:
        schema["x-kubernetes-validations"] = [{"rule": r.cel, "message": r.message} for r in rules]


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=_schema_with_rules,
    )
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).RULES:
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self


def _size_between(low: str, high: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        size = parse_quantity(value)
        if not parse_quantity(low) <= size <= parse_quantity(high):
            raise ValueError(f"must be between {low} and {high}")
        return value

    return check


def _size_field(default: str, low: str, high: str, description: str) -> Any:
    return Field(
        default=default,
        description=f"{description} Between {low} and {high}.",
        pattern=QUANTITY_PATTERN,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        f"quantity(self).compareTo(quantity('{low}')) >= 0 && "
                        f"quantity(self).compareTo(quantity('{high}')) <= 0"
                    ),
                    "message": f"must be between {low} and {high}",
                }
            ]
        },
    )


Memory = Annotated[str, AfterValidator(_size_between(limits.MEMORY_MIN, limits.MEMORY_MAX))]
TmpSize = Annotated[str, AfterValidator(_size_between(limits.TMP_SIZE_MIN, limits.TMP_SIZE_MAX))]


class ConfigMapRef(_Model):
    """Code kept in an existing ConfigMap of the Function's namespace (one key a file)."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)


def valid_file_path(path: str) -> bool:
    """The inline-code path rule (`FILE_PATH_PATTERN` and the length bound)."""
    return (
        len(path) <= limits.INLINE_PATH_MAX_LENGTH and re.match(FILE_PATH_PATTERN, path) is not None
    )


def _exactly_one(code: Any) -> bool:
    return sum(x is not None for x in (code.inline, code.config_map, code.path)) == 1


class Code(_Model):
    """Where the handler's source comes from: inline files, a ConfigMap or a local folder."""

    inline: dict[str, str] | None = Field(
        default=None,
        description=(
            "Relative file path (e.g. main.py, pkg/__init__.py) -> source. The handler's "
            "module must be one of the files at the top."
        ),
        min_length=1,
        max_length=limits.INLINE_CODE_MAX_FILES,
        json_schema_extra={
            "additionalProperties": {"type": "string", "maxLength": limits.INLINE_CODE_MAX_BYTES},
            "x-kubernetes-validations": [
                {
                    "rule": (
                        f"self.all(name, size(name) <= {limits.INLINE_PATH_MAX_LENGTH} && "
                        f"name.matches('{FILE_PATH_PATTERN}'))"
                    ),
                    "message": FILE_PATH_RULE_MESSAGE,
                }
            ],
        },
    )
    config_map: ConfigMapRef | None = None
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description=(
            "A folder next to the manifest (e.g. ./src), read by `kubefaas local`, "
            "`kubefaas build` and `kubefaas deploy`; the operator refuses it."
        ),
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="[has(self.inline), has(self.configMap), has(self.path)].filter(x, x).size() == 1",
            message="set exactly one of code.inline, code.configMap and code.path",
            holds=_exactly_one,
        ),
    )

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        if self.inline is not None:
            for name in self.inline:
                if not valid_file_path(name):
                    raise ValueError(f"inline file path {name!r}: {FILE_PATH_RULE_MESSAGE}")
            names = set(self.inline)
            for name in names:
                parts = name.split("/")
                for depth in range(1, len(parts)):
                    if "/".join(parts[:depth]) in names:
                        raise ValueError(
                            f"inline file {'/'.join(parts[:depth])!r} is also the folder "
                            f"of {name!r}"
                        )
            size = sum(len(src.encode()) for src in self.inline.values())
            if size > limits.INLINE_CODE_MAX_BYTES:
                raise ValueError(
                    f"inline code is {size} bytes, more than {limits.INLINE_CODE_MAX_BYTES}; "
                    "put it in a ConfigMap or an image"
                )
        return self


class SecretKeyRef(_Model):
    """One key of a Secret in the Function's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    key: str = Field(max_length=253, pattern=SECRET_KEY_PATTERN)


class SecretKeySelector(SecretKeyRef):
    """A Secret key read by the kubelet (never by the operator) into an environment
    variable (docs/security.md); `optional` as in a pod's `secretKeyRef`."""

    optional: bool = False


class EnvVarSource(_Model):
    secret_key_ref: SecretKeySelector


class EnvVar(_Model):
    name: str = Field(max_length=256, pattern=ENV_NAME_PATTERN)
    value: str = ""
    value_from: EnvVarSource | None = None

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.valueFrom) || !has(self.value) || self.value == ''",
            message="an env entry sets value or valueFrom, not both",
            holds=lambda e: e.value_from is None or e.value == "",
        ),
    )


SECRET_MOUNT_ROOT = "/var/kubefaas/secrets"


class SecretMount(_Model):
    """A Secret of the Function's namespace mounted read-only, one file per key."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    mount_path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^/[-._a-zA-Z0-9/]*$",
        description=f"Default {SECRET_MOUNT_ROOT}/<name>.",
    )

    @property
    def path(self) -> str:
        return self.mount_path or f"{SECRET_MOUNT_ROOT}/{self.name}"


class Destination(_Model):
    """Where an async result goes: a URL (POSTed) or another Function (invoked async)."""

    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    function: str | None = Field(
        default=None, max_length=limits.NAME_MAX_LENGTH, pattern=limits.NAME_PATTERN
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.url) != has(self.function)",
            message="a destination sets exactly one of url and function",
            holds=lambda d: (d.url is None) != (d.function is None),
        ),
    )


class TokenAuth(_Model):
    secret_name: str = Field(
        default=limits.INVOKE_TOKEN_SECRET_DEFAULT,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "Secret of the Function's namespace whose every value is an accepted key "
            "(several keys: rotate by adding the new one before removing the old)."
        ),
    )


JwtAlgorithm = Literal["RS256", "ES256"]
JWT_ALGORITHMS: tuple[JwtAlgorithm, ...] = ("RS256", "ES256")


class JwtAuth(_Model):
    issuer: str = Field(min_length=1, max_length=1024, description="Required `iss` claim.")
    audience: str = Field(min_length=1, max_length=1024, description="Required `aud` claim.")
    jwks_url: str | None = Field(
        default=None, max_length=2048, pattern=r"^https?://", description="Signing keys (JWKS)."
    )
    public_key: SecretKeyRef | None = Field(
        default=None, description="A PEM public key held in a Secret of the namespace."
    )
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: list(JWT_ALGORITHMS), min_length=1, max_length=2
    )
    leeway_seconds: int = Field(
        default=limits.JWT_LEEWAY_DEFAULT_SECONDS, ge=0, le=limits.JWT_LEEWAY_MAX_SECONDS
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.jwksUrl) != has(self.publicKey)",
            message="spec.auth.jwt sets exactly one of jwksUrl and publicKey",
            holds=lambda j: (j.jwks_url is None) != (j.public_key is None),
        ),
    )


class Auth(_Model):
    """Who may invoke the Function (docs/security.md); unset: the gateway's default."""

    mode: Literal["none", "token", "jwt"]
    token: TokenAuth | None = None
    jwt: JwtAuth | None = None

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="(self.mode == 'jwt') == has(self.jwt)",
            message="spec.auth.jwt goes with, and is needed by, mode: jwt",
            holds=lambda a: (a.mode == "jwt") == (a.jwt is not None),
        ),
        Rule(
            cel="!has(self.token) || self.mode == 'token'",
            message="spec.auth.token goes with mode: token",
            holds=lambda a: a.token is None or a.mode == "token",
        ),
    )


def _valid_zone(value: str | None) -> str | None:
    if value is not None:
        zone(value)
    return value


# An IANA time zone name (None: UTC), checked by `kubefaas.schedule.zone`.
TimeZone = Annotated[str | None, AfterValidator(_valid_zone)]


# A provisioned window's cron: 5 fields by shape in the CRD, values checked by the model.
WINDOW_PATTERN = r"^[^ @]+( +[^ ]+){4}$"
PROVISIONED_WINDOWS_MAX = 16


class ProvisionedWindow(_Model):
    """Extra warm instances while a cron window is open (docs/architecture.md, "Autoscaling").

    The window is open during every minute `schedule` matches: `* 9-17 * * 1-5` keeps
    `minScale` instances from 09:00 to 17:59 on weekdays, in `timezone` (UTC by default).
    """

    schedule: str = Field(
        max_length=256,
        pattern=WINDOW_PATTERN,
        description="5 cron fields; the window is open during each minute they match.",
    )
    timezone: TimeZone = Field(
        default=None, max_length=64, description="IANA time zone of the schedule; UTC."
    )
    min_scale: int = Field(ge=1, le=limits.SCALE_MAX)

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        if value.strip().startswith("@"):
            raise ValueError("a provisioned window takes 5 cron fields, not @every")
        Schedule.parse(value)
        return value


class Scaling(_Model):
    min_scale: int = Field(default=limits.MIN_SCALE_DEFAULT, ge=0, le=limits.SCALE_MAX)
    max_scale: int = Field(default=limits.MAX_SCALE_DEFAULT, ge=1, le=limits.SCALE_MAX)
    target_concurrency: int = Field(
        default=limits.TARGET_CONCURRENCY_DEFAULT,
        ge=1,
        le=limits.TARGET_CONCURRENCY_MAX,
        description="Soft: in-flight requests per instance the autoscaler aims for.",
    )
    container_concurrency: int = Field(
        default=limits.CONTAINER_CONCURRENCY_DEFAULT,
        ge=0,
        le=limits.CONTAINER_CONCURRENCY_MAX,
        description="Hard per-instance limit on in-flight requests; 0 = none.",
    )
    reserved_concurrency: int | None = Field(
        default=None,
        ge=0,
        le=limits.RESERVED_CONCURRENCY_MAX,
        description="Function-wide cap on in-flight sync calls; over it callers get 429.",
    )
    scale_to_zero_after_seconds: int = Field(
        default=limits.SCALE_TO_ZERO_AFTER_DEFAULT,
        ge=0,
        le=limits.SCALE_TO_ZERO_AFTER_MAX,
        description=(
            "Idle seconds before the last instance is removed; 0 = never scale to zero, "
            f"else at least {limits.SCALE_TO_ZERO_AFTER_MIN}."
        ),
    )

    provisioned: list[ProvisionedWindow] = Field(
        default_factory=list,
        max_length=PROVISIONED_WINDOWS_MAX,
        description="Cron windows that raise minScale while open (provisioned concurrency).",
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.minScale <= self.maxScale",
            message="scaling.minScale must not exceed scaling.maxScale",
            holds=lambda s: s.min_scale <= s.max_scale,
        ),
        Rule(
            cel="!has(self.provisioned) || self.provisioned.all(w, w.minScale <= self.maxScale)",
            message="scaling.provisioned[].minScale must not exceed scaling.maxScale",
            holds=lambda s: all(w.min_scale <= s.max_scale for w in s.provisioned),
        ),
        Rule(
            cel=(
                "self.scaleToZeroAfterSeconds == 0 || "
                f"self.scaleToZeroAfterSeconds >= {limits.SCALE_TO_ZERO_AFTER_MIN}"
            ),
            message=(
                "scaling.scaleToZeroAfterSeconds must be 0 (never) or at least "
                f"{limits.SCALE_TO_ZERO_AFTER_MIN}"
            ),
            holds=lambda s: (
                s.scale_to_zero_after_seconds == 0
                or s.scale_to_zero_after_seconds >= limits.SCALE_TO_ZERO_AFTER_MIN
            ),
        ),
    )


class AsyncConfig(_Model):
    max_retries: int = Field(
        default=limits.ASYNC_MAX_RETRIES_DEFAULT, ge=0, le=limits.ASYNC_MAX_RETRIES_MAX
    )
    max_event_age_seconds: int = Field(
        default=limits.ASYNC_MAX_EVENT_AGE_DEFAULT,
        ge=limits.ASYNC_MAX_EVENT_AGE_MIN,
        le=limits.ASYNC_MAX_EVENT_AGE_MAX,
    )
    on_success: Destination | None = None
    on_failure: Destination | None = None


# Schedule expressions the CRD accepts by shape; the model also checks the cron fields'
# values (kubefaas.schedule), so `kubefaas validate` and the gateway name a bad one.
SCHEDULE_PATTERN = r"^(@every +([0-9]+h)?([0-9]+m)?([0-9]+s)?|[^ @]+( +[^ ]+){4})$"
TRIGGER_PAYLOAD_MAX_BYTES = 64 * 1024


def _json_size(value: Any) -> Any:
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > TRIGGER_PAYLOAD_MAX_BYTES:
        raise ValueError(f"payload is {size} bytes of JSON, more than {TRIGGER_PAYLOAD_MAX_BYTES}")
    return value


class ScheduleTrigger(_Model):
    """Fire on a clock (docs/triggers.md): a 5-field cron in `timezone`, or `@every 30s`."""

    expression: str = Field(
        max_length=256,
        pattern=SCHEDULE_PATTERN,
        description="5 cron fields (minute hour day-of-month month day-of-week) or "
        "`@every <duration>` such as 30s, 5m or 1h30m (at least 1s).",
    )
    timezone: TimeZone = Field(
        default=None, max_length=64, description="IANA time zone of a cron expression; UTC."
    )
    payload: Annotated[Any, AfterValidator(_json_size)] = Field(
        default=None,
        description='The JSON event each tick delivers; default {"trigger", "scheduledTime"}.',
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    catch_up: Literal["none", "last"] = Field(
        default="none",
        description="Ticks missed while no gateway ran: none, or fire the last one once.",
    )

    @field_validator("expression")
    @classmethod
    def _check_expression(cls, value: str) -> str:
        Schedule.parse(value)
        return value

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.timezone) || !self.expression.startsWith('@every')",
            message="schedule.timezone applies to cron expressions, not to @every",
            holds=lambda t: t.timezone is None or not t.expression.startswith("@every"),
        ),
    )


class SecretRef(_Model):
    """A Secret of the Function's namespace with the broker credentials: keys `username`
    and `password` (NATS and Redis), or `token` (NATS)."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)


_SUBJECT = r"^[^ \t\r\n]+$"
_STREAM_NAME = r"^[^ \t\r\n.*>]+$"


class NatsSource(_Model):
    url: str = Field(max_length=2048, pattern=r"^(nats|tls)://[^ ]+$")
    stream: str = Field(max_length=255, pattern=_STREAM_NAME, description="JetStream stream.")
    subject: str = Field(max_length=255, pattern=_SUBJECT, description="Subject filter.")
    consumer: str = Field(
        max_length=255, pattern=_STREAM_NAME, description="Durable pull consumer (made if missing)."
    )


class RedisStreamSource(_Model):
    url: str = Field(max_length=2048, pattern=r"^rediss?://[^ ]+$")
    stream: str = Field(max_length=255, min_length=1, description="Stream key.")
    group: str = Field(
        max_length=255, min_length=1, description="Consumer group (made if missing)."
    )


class QueueTrigger(_Model):
    """Invoke once per message of a broker (docs/triggers.md); acked after the invocation
    succeeded or was dead-lettered."""

    nats: NatsSource | None = None
    redis: RedisStreamSource | None = None
    secret_ref: SecretRef | None = None
    batch_size: int = Field(
        default=limits.TRIGGER_BATCH_SIZE_DEFAULT, ge=1, le=limits.TRIGGER_BATCH_SIZE_MAX
    )
    max_in_flight: int = Field(
        default=limits.TRIGGER_MAX_IN_FLIGHT_DEFAULT,
        ge=1,
        le=limits.TRIGGER_MAX_IN_FLIGHT_MAX,
        description="Messages received and not yet acked; 1 keeps the broker's order.",
    )
    error_destination: str | None = Field(
        default=None,
        max_length=255,
        pattern=_SUBJECT,
        description="Subject (NATS) or stream (Redis) that gets each message that ended dead.",
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.nats) != has(self.redis)",
            message="a queue trigger sets exactly one source: nats or redis",
            holds=lambda q: (q.nats is None) != (q.redis is None),
        ),
    )


class Trigger(_Model):
    name: str = Field(max_length=limits.NAME_MAX_LENGTH, pattern=limits.NAME_PATTERN)
    schedule: ScheduleTrigger | None = None
    queue: QueueTrigger | None = None

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.schedule) != has(self.queue)",
            message="a trigger sets exactly one of schedule and queue",
            holds=lambda t: (t.schedule is None) != (t.queue is None),
        ),
    )


class FunctionSpec(_Model):
    runtime: Literal[limits.RUNTIMES] | None = Field(  # type: ignore[valid-type]
        default=None, description="Language runtime; or set image instead."
    )
    image: str | None = Field(
        default=None,
        max_length=512,
        description="A custom image that speaks the runtime contract; or set runtime instead.",
    )
    handler: str = Field(default=limits.DEFAULT_HANDLER, max_length=256, pattern=HANDLER_PATTERN)
    event_format: Literal["json", "http"] = limits.DEFAULT_EVENT_FORMAT
    code: Code | None = None
    env: list[EnvVar] = Field(default_factory=list, max_length=limits.ENV_MAX_ITEMS)
    secrets: list[SecretMount] = Field(
        default_factory=list,
        max_length=limits.SECRET_MOUNTS_MAX,
        description="Secrets mounted read-only into the function's pods.",
    )
    memory: Memory = _size_field(
        limits.MEMORY_DEFAULT, limits.MEMORY_MIN, limits.MEMORY_MAX, "Memory limit."
    )
    timeout_seconds: int = Field(
        default=limits.TIMEOUT_DEFAULT, ge=limits.TIMEOUT_MIN, le=limits.TIMEOUT_MAX
    )
    tmp_size: TmpSize = _size_field(
        limits.TMP_SIZE_DEFAULT,
        limits.TMP_SIZE_MIN,
        limits.TMP_SIZE_MAX,
        "Size of the private /tmp.",
    )
    scaling: Scaling = Field(default_factory=Scaling)
    async_: AsyncConfig = Field(default_factory=AsyncConfig, alias="async")
    triggers: list[Trigger] = Field(
        default_factory=list,
        max_length=limits.TRIGGERS_MAX,
        description="Schedules and message queues that invoke the function async.",
    )
    auth: Auth | None = None

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.runtime) != has(self.image)",
            message="set exactly one of spec.runtime and spec.image",
            holds=lambda s: (s.runtime is None) != (s.image is None),
        ),
        Rule(
            cel="!has(self.code) || has(self.runtime)",
            message="spec.code goes with spec.runtime; an image carries its own code",
            holds=lambda s: s.code is None or s.runtime is not None,
        ),
        Rule(
            cel="!has(self.runtime) || has(self.code)",
            message="spec.runtime needs spec.code (inline files or a configMap)",
            holds=lambda s: s.runtime is None or s.code is not None,
        ),
        Rule(
            cel=(
                "!has(self.code) || !has(self.code.inline) || "
                "self.handler.substring(0, self.handler.indexOf('.')) + '.py' in self.code.inline"
            ),
            message="spec.handler's module must be one of the files in spec.code.inline",
            holds=lambda s: (
                s.code is None
                or s.code.inline is None
                or s.handler.split(".")[0] + ".py" in s.code.inline
            ),
        ),
        Rule(
            cel="!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))",
            message="spec.env names must be unique",
            holds=lambda s: len({e.name for e in s.env}) == len(s.env),
        ),
        Rule(
            cel=(
                "!has(self.triggers) || "
                "self.triggers.all(t, self.triggers.exists_one(u, u.name == t.name))"
            ),
            message="spec.triggers names must be unique",
            holds=lambda s: len({t.name for t in s.triggers}) == len(s.triggers),
        ),
        Rule(
            cel=(
                "!has(self.secrets) || self.secrets.all(m, "
                "self.secrets.exists_one(n, n.name == m.name))"
            ),
            message="spec.secrets names must be unique",
            holds=lambda s: len({m.name for m in s.secrets}) == len(s.secrets),
        ),
    )

    @property
    def handler_module(self) -> str:
        return self.handler.split(".")[0]

    @property
    def handler_function(self) -> str:
        return self.handler.split(".")[1]


class ObjectMeta(BaseModel):
    """The parts of Kubernetes metadata kubefaas reads; everything else passes through."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(max_length=limits.NAME_MAX_LENGTH, pattern=limits.NAME_PATTERN)
    namespace: str = Field(default="default", max_length=63, pattern=limits.NAME_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


class Condition(BaseModel):
    model_config = ConfigDict(
        extra="allow", frozen=True, populate_by_name=True, alias_generator=to_camel
    )

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class TriggerStatus(BaseModel):
    """What a gateway last saw of one trigger (docs/triggers.md, "Visibility")."""

    model_config = ConfigDict(
        extra="allow", frozen=True, populate_by_name=True, alias_generator=to_camel
    )

    name: str
    last_fire_time: str | None = None
    last_message_time: str | None = None
    lag: int | None = None
    last_error: str | None = None


class BuildStatus(BaseModel):
    """The last good build of a Function's image (docs/packaging.md, "On a cluster")."""

    model_config = ConfigDict(
        extra="allow", frozen=True, populate_by_name=True, alias_generator=to_camel
    )

    key: str | None = None
    """The build key `status.image` was built for: an unchanged key is never rebuilt."""


class FunctionStatus(BaseModel):
    model_config = ConfigDict(
        extra="allow", frozen=True, populate_by_name=True, alias_generator=to_camel
    )

    conditions: list[Condition] = Field(default_factory=list)
    replicas: int | None = None
    ready_replicas: int | None = None
    desired_replicas: int | None = None
    url: str | None = None
    observed_generation: int | None = None
    triggers: list[TriggerStatus] = Field(default_factory=list)
    triggers_summary: str | None = None
    """The `Triggers` column of `kubectl get fn`: count and latest fire or message."""
    image: str | None = None
    """The image the operator built for the Function's code and requirements, by digest;
    its pods run it (docs/packaging.md, "On a cluster")."""
    build: BuildStatus | None = None


class Function(BaseModel):
    """A `Function` object as it is applied (apiVersion, kind, metadata, spec[, status])."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["kubefaas.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Function"]
    metadata: ObjectMeta
    spec: FunctionSpec
    status: FunctionStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> str:
        """`namespace/name`, how the gateway and stats address a function."""
        return f"{self.metadata.namespace}/{self.metadata.name}"


# The object-level rules that only the CRD needs to state: the Python model already holds
# the same rules through ObjectMeta's field constraints.
NAME_RULES = (
    {
        "rule": f"size(self.metadata.name) <= {limits.NAME_MAX_LENGTH}",
        "message": (
            f"metadata.name must be at most {limits.NAME_MAX_LENGTH} characters "
            "(it names the function's Service)"
        ),
    },
    {
        "rule": f"self.metadata.name.matches('{limits.NAME_PATTERN}')",
        "message": (
            "metadata.name must be a DNS-1035 label: lower-case letters, digits and '-', "
            "starting with a letter (it names the function's Service)"
        ),
    },
)


class InvalidFunction(ValueError):
    """A manifest that breaks the Function API; `problems` are `field: rule` lines."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "invalid Function: " + "; ".join(problems))


def describe_errors(error: ValidationError) -> list[str]:
    """`spec.scaling.maxScale: Input should be less than or equal to 1000 (got 5000)`."""
    problems = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(part) for part in item["loc"] if part != "function-after[check(), str]")
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        problems.append(f"{loc or '(object)'}: {message}{shown}")
    return problems


def parse_function(document: Any, source: str | None = None) -> Function:
    """Validate one manifest (a dict from YAML/JSON); InvalidFunction names each problem."""
    if not isinstance(document, dict):
        raise InvalidFunction([f"expected a mapping, got {type(document).__name__}"], source)
    try:
        return Function.model_validate(document)
    except ValidationError as exc:
        raise InvalidFunction(describe_errors(exc), source) from None
