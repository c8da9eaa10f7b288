"""Provisioned concurrency windows (kubefaas.provisioned): when a window is open, what the
decider then holds, and the model's errors for a bad window."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from kubefaas.api import ProvisionedWindow, Scaling
from kubefaas.provisioned import is_open, provisioned_min_scale
from kubefaas.scaling import Observation, Reason, decide, initial_state

PARIS = ZoneInfo("Europe/Paris")
OFFICE = ProvisionedWindow(schedule="* 9-17 * * 1-5", timezone="Europe/Paris", min_scale=3)


def at(*parts: int, tz: ZoneInfo = PARIS) -> float:
    return datetime(*parts, tzinfo=tz).timestamp()


def test_an_office_hours_window_is_open_from_its_first_to_its_last_matching_minute() -> None:
    # Thursday 2026-12-03, Paris time.
    assert not is_open(OFFICE, at(2026, 12, 3, 8, 59, 59))
    assert is_open(OFFICE, at(2026, 12, 3, 9, 0, 0))
    assert is_open(OFFICE, at(2026, 12, 3, 17, 59, 59))
    assert not is_open(OFFICE, at(2026, 12, 3, 18, 0, 0))
    # Saturday: closed all day.
    assert not is_open(OFFICE, at(2026, 12, 5, 12, 0, 0))


def test_a_window_follows_its_time_zone_across_daylight_saving() -> None:
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert is_open(OFFICE, at(2026, 12, 3, 8, 0, tz=UTC))
    assert not is_open(OFFICE, at(2026, 12, 3, 7, 30, tz=UTC))
    assert is_open(OFFICE, at(2026, 7, 2, 7, 0, tz=UTC))
    # Monday 2026-03-30, the day after the spring change: 09:00 Paris is 07:00 UTC.
    assert is_open(OFFICE, at(2026, 3, 30, 7, 0, tz=UTC))
    utc = ProvisionedWindow(schedule="* 9-17 * * 1-5", min_scale=1)
    assert not is_open(utc, at(2026, 3, 30, 7, 0, tz=UTC))


def test_the_largest_open_window_wins_and_closed_ones_count_for_nothing() -> None:
    lunch = ProvisionedWindow(schedule="* 12 * * *", timezone="Europe/Paris", min_scale=8)
    assert provisioned_min_scale([OFFICE, lunch], at(2026, 12, 3, 12, 30)) == 8
    assert provisioned_min_scale([OFFICE, lunch], at(2026, 12, 3, 10, 0)) == 3
    assert provisioned_min_scale([OFFICE, lunch], at(2026, 12, 3, 20, 0)) == 0
    assert provisioned_min_scale([], at(2026, 12, 3, 10, 0)) == 0


def idle(ready: int) -> Observation:
    return Observation(
        stable_concurrency=0.0,
        panic_concurrency=0.0,
        in_flight=0,
        pending=0,
        queued=0,
        ready=ready,
        last_activity=None,
    )


def test_an_open_window_holds_instances_of_an_idle_function_then_lets_it_go_to_zero() -> None:
    scaling = Scaling(scale_to_zero_after_seconds=10, provisioned=[OFFICE])
    held = decide(initial_state(0.0), idle(0), 1_000.0, scaling=scaling, provisioned=3)
    assert held.replicas == 3
    assert held.reason is Reason.PROVISIONED
    # The window closed: the idle function winds down as usual, halving per tick.
    after = decide(held.state, idle(3), 1_002.0, scaling=scaling, provisioned=0)
    assert after.replicas == 1
    assert after.reason is Reason.SCALE_TO_ZERO


def test_a_window_raises_min_scale_never_lowers_it_and_stays_under_max_scale() -> None:
    scaling = Scaling(min_scale=4, max_scale=5, provisioned=[OFFICE])
    assert decide(initial_state(0.0), idle(4), 100.0, scaling=scaling, provisioned=2).replicas == 4
    busy = Observation(
        stable_concurrency=800.0,
        panic_concurrency=800.0,
        in_flight=800,
        pending=0,
        queued=0,
        ready=5,
        last_activity=100.0,
    )
    capped = decide(initial_state(0.0), busy, 100.0, scaling=scaling, provisioned=3)
    assert capped.replicas == 5
    assert capped.reason is Reason.MAX_SCALE


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"schedule": "@every 1m", "minScale": 1}, r"provisioned\.0\.schedule\n.*should match"),
        ({"schedule": "* 25 * * *", "minScale": 1}, "invalid cron expression"),
        ({"schedule": "* 9 * * *", "timezone": "Mars/Olympus", "minScale": 1}, "unknown time zone"),
        ({"schedule": "* 9 * * *", "minScale": 0}, "greater than or equal to 1"),
    ],
)
def test_a_bad_window_is_refused_naming_what_is_wrong(window: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Scaling.model_validate({"provisioned": [window]})


def test_a_window_above_max_scale_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"provisioned\[\]\.minScale must not exceed"):
        Scaling.model_validate(
            {"maxScale": 2, "provisioned": [{"schedule": "* * * * *", "minScale": 3}]}
        )
