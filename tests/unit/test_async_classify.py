"""Which retry schedule a failed async attempt follows (DESIGN §7)."""

from __future__ import annotations

import pytest

from kubefaas.retry import FailureKind
from kubefaas_gateway.errors import (
    FunctionFailed,
    FunctionTimedOut,
    InvocationError,
    InvocationTimeout,
    NoCapacity,
    Throttled,
)
from kubefaas_gateway.workers import classify


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


def test_a_handler_timeout_still_answers_504() -> None:
    assert FunctionTimedOut("x").status == 504
