"""The async retry schedule, driven with an explicit clock.

See docs/architecture.md, "Queue semantics".
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubefaas import limits
from kubefaas.api import AsyncConfig
from kubefaas.retry import (
    DeadLetter,
    DeadReason,
    FailureKind,
    Retry,
    RetryPolicy,
    decide,
    is_expired,
)

T0 = 1_700_000_000.0
FN = FailureKind.FUNCTION_ERROR
THROTTLED = FailureKind.THROTTLED


def test_function_error_retries_after_one_then_two_minutes_then_dead_letters() -> None:
    policy = RetryPolicy.for_function(AsyncConfig(max_retries=2))

    first = decide(failures=[FN], enqueued_at=T0, now=T0 + 1, policy=policy)
    assert first == Retry(at=T0 + 1 + 60, delay=60)

    second = decide(failures=[FN, FN], enqueued_at=T0, now=T0 + 62, policy=policy)
    assert second == Retry(at=T0 + 62 + 120, delay=120)

    third = decide(failures=[FN, FN, FN], enqueued_at=T0, now=T0 + 183, policy=policy)
    assert isinstance(third, DeadLetter)
    assert third.reason is DeadReason.RETRIES_EXHAUSTED
    assert "maxRetries=2" in third.message


def test_max_retries_zero_dead_letters_on_the_first_function_error() -> None:
    policy = RetryPolicy.for_function(AsyncConfig(max_retries=0))
    decision = decide(failures=[FN], enqueued_at=T0, now=T0, policy=policy)
    assert isinstance(decision, DeadLetter)
    assert decision.reason is DeadReason.RETRIES_EXHAUSTED


def test_function_error_base_is_configurable_so_tests_run_in_seconds() -> None:
    policy = RetryPolicy.for_function(AsyncConfig(), function_error_base_seconds=0.5)
    assert decide(failures=[FN], enqueued_at=T0, now=T0, policy=policy) == Retry(T0 + 0.5, 0.5)
    assert decide(failures=[FN, FN], enqueued_at=T0, now=T0, policy=policy) == Retry(T0 + 1, 1)


def test_throttling_backs_off_from_one_second_doubling_to_five_minutes() -> None:
    policy = RetryPolicy.for_function(AsyncConfig())
    delays = []
    for n in range(1, 13):
        decision = decide(failures=[THROTTLED] * n, enqueued_at=T0, now=T0 + 10, policy=policy)
        assert isinstance(decision, Retry)
        delays.append(decision.delay)
    assert delays[:9] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert delays[9:] == [300, 300, 300]
    assert limits.THROTTLE_BACKOFF_MAX_SECONDS == 300


def test_throttling_does_not_use_up_the_function_error_retries() -> None:
    policy = RetryPolicy.for_function(AsyncConfig(max_retries=1))
    history = [FailureKind.THROTTLED, FailureKind.UNAVAILABLE, FailureKind.SERVER_ERROR] * 5
    assert isinstance(decide(failures=history, enqueued_at=T0, now=T0, policy=policy), Retry)
    assert isinstance(decide(failures=[*history, FN], enqueued_at=T0, now=T0, policy=policy), Retry)
    dead = decide(failures=[*history, FN, FN], enqueued_at=T0, now=T0, policy=policy)
    assert isinstance(dead, DeadLetter)


def test_a_function_error_restarts_the_throttle_backoff() -> None:
    policy = RetryPolicy.for_function(AsyncConfig(max_retries=5))
    decision = decide(
        failures=[THROTTLED] * 6 + [FN, THROTTLED], enqueued_at=T0, now=T0, policy=policy
    )
    assert decision == Retry(T0 + 1, 1)


def test_event_older_than_max_age_goes_to_dead_letters_with_the_reason() -> None:
    policy = RetryPolicy.for_function(AsyncConfig(max_event_age_seconds=60))
    decision = decide(failures=[THROTTLED], enqueued_at=T0, now=T0 + 61, policy=policy)
    assert isinstance(decision, DeadLetter)
    assert decision.reason is DeadReason.EVENT_AGE_EXCEEDED
    assert "maxEventAgeSeconds=60" in decision.message
    assert is_expired(enqueued_at=T0, now=T0 + 61, policy=policy)
    assert not is_expired(enqueued_at=T0, now=T0 + 59, policy=policy)


def test_a_retry_that_would_land_after_max_age_happens_at_the_expiry_instead() -> None:
    policy = RetryPolicy.for_function(AsyncConfig(max_event_age_seconds=60))
    decision = decide(failures=[THROTTLED] * 7, enqueued_at=T0, now=T0 + 40, policy=policy)
    assert decision == Retry(at=T0 + 60, delay=20)


def test_jitter_only_shortens_delays_and_comes_from_the_injected_source() -> None:
    policy = RetryPolicy(jitter=0.5)
    assert decide(
        failures=[THROTTLED] * 4, enqueued_at=T0, now=T0, policy=policy, random=lambda: 0.5
    ) == Retry(T0 + 6, 6)
    assert decide(
        failures=[THROTTLED] * 4, enqueued_at=T0, now=T0, policy=policy, random=lambda: 0.0
    ) == Retry(T0 + 8, 8)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_retries", -1),
        ("max_event_age_seconds", 0),
        ("backoff_initial_seconds", 0),
        ("jitter", 1.0),
    ],
)
def test_a_nonsensical_policy_is_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_deciding_without_a_failure_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least"):
        decide(failures=[], enqueued_at=T0, now=T0, policy=RetryPolicy())


@given(
    kinds=st.lists(st.sampled_from(list(FailureKind)), min_size=1, max_size=40),
    max_retries=st.integers(0, limits.ASYNC_MAX_RETRIES_MAX),
    max_age=st.integers(limits.ASYNC_MAX_EVENT_AGE_MIN, limits.ASYNC_MAX_EVENT_AGE_MAX),
    base=st.floats(0.01, 120),
    jitter=st.floats(0, 0.99),
    rnd=st.floats(0, 0.999),
    start_offset=st.floats(0, 30),
)
def test_schedule_never_retries_past_max_age_nor_beyond_max_retries(
    kinds: list[FailureKind],
    max_retries: int,
    max_age: int,
    base: float,
    jitter: float,
    rnd: float,
    start_offset: float,
) -> None:
    """Replays a failure history through the schedule the way the workers do."""
    policy = RetryPolicy.for_function(
        AsyncConfig(max_retries=max_retries, max_event_age_seconds=max_age),
        function_error_base_seconds=base,
        jitter=jitter,
    )
    now = T0 + start_offset
    history: list[FailureKind] = []
    for kind in kinds:
        history.append(kind)
        decision = decide(
            failures=history, enqueued_at=T0, now=now, policy=policy, random=lambda: rnd
        )
        function_errors = sum(1 for k in history if k is FailureKind.FUNCTION_ERROR)
        if isinstance(decision, DeadLetter):
            assert function_errors > max_retries or now >= T0 + max_age
            break
        assert function_errors <= max_retries
        assert now <= decision.at <= T0 + max_age
        now = decision.at
