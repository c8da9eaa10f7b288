"""When a failed asynchronous invocation is tried again, and when it is given up.

See docs/architecture.md, "Queue semantics".

Two kinds of failure are scheduled differently, as Lambda does:

- The function itself failed (raised, returned an error, ran out of time): the same input
  will probably fail again, so it is retried only `maxRetries` times, 1 min then 2 min apart
  (doubling from `ASYNC_RETRY_BASE_SECONDS`), then dead-lettered.
- The platform could not run it (throttled 429, a 5xx that is not the function's error, no
  capacity 503, activation timeout 504, connection refused): nothing is wrong with the
  event, so it is retried with exponential backoff from 1 s doubling to 5 min for as long
  as the event is younger than `maxEventAgeSeconds`, then dead-lettered.

No retry is ever scheduled past the event's maximum age: a retry that would land later is
moved to the expiry instant, so the event gets its last chance instead of being dropped
early. This module is pure: time comes in as `now` (seconds since the epoch), randomness
as an injected `random` callable, so tests drive the schedule without sleeping.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubefaas import limits
from kubefaas.api import AsyncConfig


class FailureKind(enum.StrEnum):
    """Why one attempt failed, as far as scheduling is concerned."""

    FUNCTION_ERROR = "function_error"  # the handler raised, returned an error, or timed out
    THROTTLED = "throttled"  # 429: over the function's concurrency
    SERVER_ERROR = "server_error"  # a 5xx that is not the function's own error
    UNAVAILABLE = "unavailable"  # 503/504 from the platform, connection failures

    @property
    def is_function_error(self) -> bool:
        return self is FailureKind.FUNCTION_ERROR


class DeadReason(enum.StrEnum):
    """Why an event went to the dead-letter store."""

    RETRIES_EXHAUSTED = "retries_exhausted"
    EVENT_AGE_EXCEEDED = "event_age_exceeded"
    # The event's function left the registry and the event outlived the longest age any
    # function may set (docs/security.md, "Failure modes").
    FUNCTION_DELETED = "function_deleted"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """One function's retry rules; the base delays are overridable so tests run in seconds."""

    max_retries: int = limits.ASYNC_MAX_RETRIES_DEFAULT
    max_event_age_seconds: float = limits.ASYNC_MAX_EVENT_AGE_DEFAULT
    function_error_base_seconds: float = limits.ASYNC_RETRY_BASE_SECONDS
    # Function-error retries double like backoff; past maxRetries=2 they would grow beyond
    # the event's life, so they share the throttle ceiling.
    function_error_max_seconds: float = limits.THROTTLE_BACKOFF_MAX_SECONDS
    backoff_initial_seconds: float = limits.THROTTLE_BACKOFF_INITIAL_SECONDS
    backoff_max_seconds: float = limits.THROTTLE_BACKOFF_MAX_SECONDS
    # Fraction of each delay that may be shaved off at random (0 = exact schedule), so many
    # events throttled together do not come back in one burst.
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.max_event_age_seconds <= 0:
            raise ValueError(f"max_event_age_seconds must be > 0, got {self.max_event_age_seconds}")
        for name in (
            "function_error_base_seconds",
            "function_error_max_seconds",
            "backoff_initial_seconds",
            "backoff_max_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    @classmethod
    def for_function(
        cls,
        config: AsyncConfig,
        *,
        function_error_base_seconds: float = limits.ASYNC_RETRY_BASE_SECONDS,
        backoff_initial_seconds: float = limits.THROTTLE_BACKOFF_INITIAL_SECONDS,
        backoff_max_seconds: float = limits.THROTTLE_BACKOFF_MAX_SECONDS,
        jitter: float = 0.0,
    ) -> RetryPolicy:
        """The policy of a Function's `spec.async`, with the platform's base delays."""
        return cls(
            max_retries=config.max_retries,
            max_event_age_seconds=config.max_event_age_seconds,
            function_error_base_seconds=function_error_base_seconds,
            function_error_max_seconds=max(backoff_max_seconds, function_error_base_seconds),
            backoff_initial_seconds=backoff_initial_seconds,
            backoff_max_seconds=backoff_max_seconds,
            jitter=jitter,
        )


@dataclass(frozen=True)
class Retry:
    """Try again at `at` (epoch seconds); `delay` is `at - now`."""

    at: float
    delay: float


@dataclass(frozen=True)
class DeadLetter:
    """Give up: store the event with every attempt's error and this reason."""

    reason: DeadReason
    message: str


Decision = Retry | DeadLetter


def expires_at(*, enqueued_at: float, policy: RetryPolicy) -> float:
    """The last instant an attempt of this event may start."""
    return enqueued_at + policy.max_event_age_seconds


def is_expired(*, enqueued_at: float, now: float, policy: RetryPolicy) -> bool:
    """True when the event is too old to be attempted at all (checked before each attempt)."""
    return now > expires_at(enqueued_at=enqueued_at, policy=policy)


def age_exceeded(*, enqueued_at: float, now: float, policy: RetryPolicy) -> DeadLetter:
    age = now - enqueued_at
    return DeadLetter(
        reason=DeadReason.EVENT_AGE_EXCEEDED,
        message=(
            f"event is {age:.0f} s old, past maxEventAgeSeconds={policy.max_event_age_seconds:g}"
        ),
    )


def decide(
    *,
    failures: Sequence[FailureKind],
    enqueued_at: float,
    now: float,
    policy: RetryPolicy,
    random: Callable[[], float] | None = None,
) -> Decision:
    """What to do after a failed attempt.

    `failures` is the kind of every failed attempt of the current series, oldest first, the
    one that just failed last. `enqueued_at` is when the series began (the enqueue, or the
    last redrive). `random` returns floats in [0, 1); it is only called when the policy has
    jitter.
    """
    if not failures:
        raise ValueError("decide() needs at least the attempt that just failed")
    deadline = expires_at(enqueued_at=enqueued_at, policy=policy)
    if now >= deadline:
        return age_exceeded(enqueued_at=enqueued_at, now=now, policy=policy)

    last = failures[-1]
    if last.is_function_error:
        errors = sum(1 for kind in failures if kind.is_function_error)
        if errors > policy.max_retries:
            return DeadLetter(
                reason=DeadReason.RETRIES_EXHAUSTED,
                message=(
                    f"the function failed {errors} time(s); "
                    f"maxRetries={policy.max_retries} exhausted"
                ),
            )
        delay = min(
            policy.function_error_base_seconds * 2 ** (errors - 1),
            policy.function_error_max_seconds,
        )
    else:
        # Consecutive platform failures back off; a function error in between starts the
        # platform backoff again because the situation changed.
        streak = 0
        for kind in reversed(failures):
            if kind.is_function_error:
                break
            streak += 1
        delay = min(
            policy.backoff_initial_seconds * 2 ** min(streak - 1, 64),
            policy.backoff_max_seconds,
        )

    if policy.jitter and random is not None:
        delay *= 1.0 - policy.jitter * random()
    return Retry(at=min(now + delay, deadline), delay=min(delay, deadline - now))
