"""The durable async-invocation queue: one interface, two backends (docs/architecture.md, "Queue
semantics").

An invocation moves through these statuses, which `GET /invocations/{id}` reports:

    queued ──lease──> running ──complete──> succeeded
      ▲                  │
      └──retry (due at)──┤
                         └──dead_letter──> dead ──purge──> failed
                                            │
                                            └──redrive──> queued (a fresh attempt series)

- `queued`: waiting for its first attempt or for a scheduled retry (`nextAttemptAt`).
- `running`: a worker holds a lease. If the worker dies, the lease expires and the event
  is leased again (at-least-once); the lost attempt is kept as `abandoned`.
- `succeeded`: final; the result is kept when it is at most `RESULT_MAX_BYTES`.
- `dead`: final failure, kept in the dead-letter store with every attempt's error until
  it is redriven or purged. Nothing is dropped silently.
- `failed`: a dead letter that was purged: the payload is gone, the history stays.

Terminal records (`succeeded`, `failed`) are kept for the backend's record TTL, then
purged. Every operation that finishes an attempt takes the `Lease` it was given; a lease
that has since expired and been handed to another worker is refused (the call returns
None/False), so a slow worker cannot overwrite the outcome of the redelivery.

Time is passed in (`now`, epoch seconds) so the contract tests can drive it.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Status = Literal["queued", "running", "succeeded", "failed", "dead"]
AttemptStatus = Literal["running", "succeeded", "failed", "abandoned", "expired"]
ACTIVE_STATUSES: Final = ("queued", "running")

# Lambda keeps async results nowhere; we keep small ones so callers can poll for them.
RESULT_MAX_BYTES: Final = 256 * 1024
# How long finished records stay readable (DESIGN: "kept for a configurable TTL").
RECORD_TTL_DEFAULT_SECONDS: Final = 24 * 3600

ABANDONED_ERROR: Final = {
    "type": "LeaseExpired",
    "message": "the worker running this attempt stopped answering; the event was delivered again",
}


@dataclass(frozen=True, kw_only=True)
class NewInvocation:
    """What the async route stores: the request as the function will receive it."""

    id: str
    function: str  # namespace/name
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    query: str = ""
    callback_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class AttemptError:
    """Why an attempt failed; `kind` is a `kubefaas.retry.FailureKind` value."""

    kind: str
    type: str
    message: str
    status_code: int | None = None
    # The function's own report when it sent one: errorType, errorMessage, stackTrace.
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": self.type,
            "message": self.message,
            "statusCode": self.status_code,
            **self.details,
        }


@dataclass(frozen=True, kw_only=True)
class Attempt:
    number: int  # 1-based over the record's whole life
    series: int  # 0 for the first delivery, +1 per redrive
    started_at: float
    finished_at: float | None = None
    status: AttemptStatus = "running"
    error: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "series": self.series,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "status": self.status,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(
            number=int(data["number"]),
            series=int(data["series"]),
            started_at=float(data["startedAt"]),
            finished_at=None if data.get("finishedAt") is None else float(data["finishedAt"]),
            status=data["status"],
            error=data.get("error") or None,
        )

    def finished(
        self, *, now: float, status: AttemptStatus, error: dict[str, Any] | None = None
    ) -> Attempt:
        return Attempt(
            number=self.number,
            series=self.series,
            started_at=self.started_at,
            finished_at=now,
            status=status,
            error=error,
        )


@dataclass(frozen=True, kw_only=True)
class InvocationRecord:
    """Everything `GET /invocations/{id}` and the dead-letter admin show."""

    id: str
    function: str
    status: Status
    created_at: float
    updated_at: float
    series: int
    series_started_at: float
    attempts: tuple[Attempt, ...]
    result: Any = None
    result_truncated: bool = False
    error: dict[str, Any] | None = None
    dead_reason: str | None = None
    dead_message: str | None = None
    dead_at: float | None = None
    next_attempt_at: float | None = None
    callback_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "invocationId": self.id,
            "function": self.function,
            "status": self.status,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "attempts": [a.to_json() for a in self.attempts],
        }
        if self.status == "succeeded":
            data["result"] = self.result
            if self.result_truncated:
                data["resultTruncated"] = True
        if self.error is not None:
            data["error"] = self.error
        if self.status in ("dead", "failed") and self.dead_reason:
            data["deadLetter"] = {
                "reason": self.dead_reason,
                "message": self.dead_message,
                "at": self.dead_at,
            }
        if self.status == "queued" and self.next_attempt_at is not None:
            data["nextAttemptAt"] = self.next_attempt_at
        if self.series:
            data["redriven"] = self.series
        return data


@dataclass(frozen=True, kw_only=True)
class Lease:
    """One worker's exclusive hold on one event until `expires_at`."""

    id: str
    function: str
    token: str
    body: bytes
    headers: Mapping[str, str]
    query: str
    callback_url: str | None
    created_at: float
    series_started_at: float
    expires_at: float
    attempt: Attempt  # the attempt this lease runs (status running)
    # Every finished attempt of the current series, oldest first: the retry schedule's input.
    previous: tuple[Attempt, ...]

    @property
    def attempt_in_series(self) -> int:
        """1 for the first try after an enqueue or a redrive (the `X-Attempt` header)."""
        return len(self.previous) + 1


@dataclass(frozen=True)
class QueueStats:
    function: str
    depth: int  # events waiting (first try or retry), not leased
    in_flight: int  # events leased by a worker right now
    oldest_age_seconds: float  # age of the oldest event not yet finished, 0 if none


@dataclass(frozen=True)
class DeadLetterPage:
    items: tuple[InvocationRecord, ...]
    next_cursor: str | None


def encode_result(value: Any) -> tuple[str | None, bool]:
    """JSON text of a result, or (None, True) when it is over `RESULT_MAX_BYTES`."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > RESULT_MAX_BYTES:
        return None, True
    return text, False


def decode_cursor(cursor: str | None) -> int:
    """Dead-letter pages are addressed by offset; the cursor is opaque to clients."""
    if not cursor:
        return 0
    try:
        offset = int(cursor)
    except ValueError:
        raise ValueError(f"cursor {cursor!r} is not one this gateway issued") from None
    if offset < 0:
        raise ValueError(f"cursor {cursor!r} is not one this gateway issued")
    return offset


class InvocationQueue(abc.ABC):
    """The durable store behind async invocations; both backends pass one contract suite."""

    record_ttl_seconds: float

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create what is missing; safe to call on an existing store."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def enqueue(self, invocation: NewInvocation, *, now: float) -> None:
        """Store the event; when this returns, it survives a crash of the gateway."""

    @abc.abstractmethod
    async def enqueue_once(self, invocation: NewInvocation, *, now: float) -> bool:
        """Store the event unless one with its id was stored before (kept or finished, until
        its record expires); True when this call stored it. The id is the idempotency key:
        replicas firing the same schedule tick or receiving the same broker message store
        one event (docs/architecture.md, "Triggers")."""

    @abc.abstractmethod
    async def lease(self, function: str, *, now: float, lease_seconds: float) -> Lease | None:
        """Take one event of `function` that is due, or whose last lease expired."""

    @abc.abstractmethod
    async def complete(self, lease: Lease, *, now: float, result: Any) -> InvocationRecord | None:
        """Success. None when the lease was lost to a redelivery (the outcome is not kept)."""

    @abc.abstractmethod
    async def retry(self, lease: Lease, *, now: float, error: AttemptError, at: float) -> bool:
        """Record the failed attempt and make the event visible again at `at`."""

    @abc.abstractmethod
    async def dead_letter(
        self,
        lease: Lease,
        *,
        now: float,
        error: AttemptError,
        reason: str,
        message: str,
        expired: bool = False,
    ) -> InvocationRecord | None:
        """Final failure: move the event to the dead-letter store with its whole history.

        `expired` marks the leased attempt as never run (the event was too old to try).
        """

    @abc.abstractmethod
    async def get(self, invocation_id: str) -> InvocationRecord | None: ...

    @abc.abstractmethod
    async def list_dead_letters(
        self, *, function: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> DeadLetterPage:
        """Dead letters, oldest first; `cursor` continues from a previous page."""

    @abc.abstractmethod
    async def dead_letter_counts(self) -> dict[str, int]:
        """How many dead letters each function has (functions with none are left out)."""

    @abc.abstractmethod
    async def redrive(self, invocation_id: str, *, now: float) -> InvocationRecord | None:
        """Queue a dead letter again as a fresh attempt series; None if it is not dead."""

    @abc.abstractmethod
    async def purge(self, invocation_id: str, *, now: float) -> bool:
        """Delete one dead letter's payload (the record becomes `failed`)."""

    @abc.abstractmethod
    async def purge_all(self, *, now: float, function: str | None = None) -> int:
        """Purge every dead letter, or those of one function; returns how many."""

    @abc.abstractmethod
    async def stats(self, *, now: float) -> list[QueueStats]:
        """Per function with anything queued or in flight."""

    @abc.abstractmethod
    async def purge_expired(self, *, now: float) -> int:
        """Delete terminal records older than the record TTL; returns how many."""

    async def dead_letter_aged(
        self,
        function: str,
        *,
        started_before: float,
        now: float,
        error: AttemptError,
        reason: str,
        message: str,
    ) -> list[InvocationRecord]:
        """Dead-letter, without an attempt, every waiting event of `function` whose attempt
        series started before `started_before` (leases that run now are left alone).

        For the events of a function that left the registry, which no dispatcher leases
        (docs/architecture.md, "Asynchronous invocation"). Both backends implement it;
        the default does nothing.
        """
        return []
