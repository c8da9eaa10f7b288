"""Which retry schedule a failed async attempt follows.

See docs/architecture.md, "Queue semantics".
"""

from __future__ import annotations

import pytest

from kubefaas.retry import DeadLetter, DeadReason, FailureKind, Retry, RetryPolicy, decide
from kubefaas_gateway.delivery.attempt import classify
from kubefaas_gateway.errors import (
    FunctionFailed,
    FunctionTimedOut,
    InvocationError,
    InvocationTimeout,
    NoCapacity,
    Throttled,
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (FunctionFailed("raised", error_type="ValueError"), FailureKind.FUNCTION_ERROR),
        # A handler past its timeout is retried maxRetries times, not for 6 hours.
        (FunctionTimedOut("ran past 3s"), FailureKind.FUNCTION_ERROR),
        (InvocationTimeout("no instance in time"), FailureKind.UNAVAILABLE),
        (NoCapacity("cannot start"), FailureKind.UNAVAILABLE),
        (Throttled("over reserved concurrency"), FailureKind.THROTTLED),
        (FunctionFailed("bad gateway"), FailureKind.SERVER_ERROR),
    ],
)
def test_failure_kind(error: InvocationError, kind: FailureKind) -> None:
    assert classify(error) is kind


def _after(errors: list[InvocationError]) -> object:
    """What the schedule decides after these failed attempts of one event, a minute in."""
    return decide(
        failures=[classify(error) for error in errors],
        enqueued_at=0.0,
        now=60.0,
        policy=RetryPolicy(max_retries=2),
    )


def test_a_handler_that_keeps_timing_out_is_dead_lettered_after_its_retries() -> None:
    # The sync caller of a handler past its timeout gets 504; an async event whose handler
    # keeps timing out is tried 1 + maxRetries times, then dead-lettered, not retried for
    # the event's whole maximum age.
    timed_out = FunctionTimedOut("ran past 3s")
    assert isinstance(_after([timed_out]), Retry)
    assert isinstance(_after([timed_out] * 2), Retry)
    final = _after([timed_out] * 3)
    assert isinstance(final, DeadLetter)
    assert final.reason is DeadReason.RETRIES_EXHAUSTED


def test_throttled_or_unavailable_attempts_do_not_use_up_the_retries() -> None:
    platform = [Throttled("over reserved concurrency"), NoCapacity("cannot start")] * 3
    assert isinstance(_after(platform), Retry)
