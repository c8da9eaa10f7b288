"""Schedule triggers on an explicit clock: cron, @every, time zones and DST, catch-up.

See docs/triggers.md; every tick below is computed from a given epoch second, never the
machine's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from kubefaas.schedule import Schedule, due_ticks, parse_duration, startup_ticks

PARIS = ZoneInfo("Europe/Paris")


def at(*parts: int, tz: ZoneInfo | None = None) -> float:
    return datetime(*parts, tzinfo=tz or UTC).timestamp()  # type: ignore[misc]


def local(t: float, tz: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(t, tz).isoformat()


def test_cron_fires_at_the_next_matching_minute_strictly_after_now() -> None:
    every_five = Schedule.parse("*/5 * * * *")
    assert every_five.next_after(at(2024, 1, 1, 10, 2)) == at(2024, 1, 1, 10, 5)
    assert every_five.next_after(at(2024, 1, 1, 10, 5)) == at(2024, 1, 1, 10, 10)
    assert every_five.last_at_or_before(at(2024, 1, 1, 10, 5)) == at(2024, 1, 1, 10, 5)
    assert every_five.last_at_or_before(at(2024, 1, 1, 10, 9, 59)) == at(2024, 1, 1, 10, 5)
    weekdays = Schedule.parse("0 9 * * 1-5")
    # Friday 2024-01-05 10:00 -> Monday 09:00.
    assert weekdays.next_after(at(2024, 1, 5, 10)) == at(2024, 1, 8, 9)


def test_every_ticks_on_multiples_of_the_interval_so_replicas_agree() -> None:
    two = Schedule.parse("@every 2s")
    assert two.every_seconds == 2
    assert two.next_after(1000.0) == 1002.0
    assert two.next_after(1000.7) == 1002.0
    assert two.next_after(1001.999) == 1002.0
    assert two.last_at_or_before(1003.5) == 1002.0
    assert Schedule.parse("@every 1h30m").every_seconds == 5400
    assert parse_duration("90s") == 90


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("@every 0s", None, "at least 1s"),
        ("@every 5", None, "duration of hours, minutes and seconds"),
        ("@every 5m", "Europe/Paris", "timezone has no meaning"),
        ("@daily", None, "5 cron fields or @every"),
        ("0 * * *", None, "5 fields"),
        ("61 * * * *", None, "invalid cron expression"),
        ("0 * * * *", "Europe/Atlantis", "unknown time zone"),
    ],
)
def test_a_bad_schedule_is_refused_with_what_is_wrong(
    expression: str, timezone: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule.parse(expression, timezone)


def test_cron_follows_the_time_zone_it_names() -> None:
    paris_nine = Schedule.parse("0 9 * * *", "Europe/Paris")
    # Winter: 09:00 in Paris is 08:00 UTC; summer: 07:00 UTC.
    assert paris_nine.next_after(at(2024, 1, 10)) == at(2024, 1, 10, 8)
    assert paris_nine.next_after(at(2024, 7, 10)) == at(2024, 7, 10, 7)


def test_a_time_skipped_by_spring_forward_fires_once_right_after_the_gap() -> None:
    half_past_two = Schedule.parse("30 2 * * *", "Europe/Paris")
    first = half_past_two.next_after(at(2024, 3, 30, 12, tz=PARIS))
    assert local(first) == "2024-03-31T03:00:00+02:00"
    assert local(half_past_two.next_after(first)) == "2024-04-01T02:30:00+02:00"


def test_a_time_repeated_by_fall_back_fires_once() -> None:
    half_past_two = Schedule.parse("30 2 * * *", "Europe/Paris")
    first = half_past_two.next_after(at(2024, 10, 26, 12, tz=PARIS))
    assert local(first) == "2024-10-27T02:30:00+02:00"
    second = half_past_two.next_after(first)
    assert local(second) == "2024-10-28T02:30:00+01:00"
    assert second - first == 25 * 3600  # the repeated 02:30 (+01:00) did not fire


def test_hourly_cron_across_fall_back_fires_every_real_hour() -> None:
    hourly = Schedule.parse("0 * * * *", "Europe/Paris")
    t = at(2024, 10, 27, 0, tz=PARIS)
    ticks = []
    for _ in range(4):
        t = hourly.next_after(t)
        ticks.append(local(t))
    assert ticks == [
        "2024-10-27T01:00:00+02:00",
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T03:00:00+01:00",
    ]


def test_ticks_due_on_time_fire_and_old_ones_are_counted_missed() -> None:
    two = Schedule.parse("@every 2s")
    on_time = due_ticks(two, last=1000.0, now=1002.3, catch_up="none")
    assert (on_time.fire, on_time.missed) == ((1002.0,), 0)
    nothing = due_ticks(two, last=1002.0, now=1003.9, catch_up="none")
    assert (nothing.fire, nothing.missed) == ((), 0)
    # Stopped from 1000 to 1020: ticks 1002..1014 are more than 5 s late.
    late = due_ticks(two, last=1000.0, now=1020.0, catch_up="none")
    assert late.fire == (1016.0, 1018.0, 1020.0)
    assert late.missed == 7


def test_catch_up_last_fires_the_latest_missed_tick_once() -> None:
    hourly = Schedule.parse("0 * * * *")
    woke = due_ticks(hourly, last=at(2024, 1, 1, 1), now=at(2024, 1, 1, 5, 30), catch_up="last")
    assert woke.fire == (at(2024, 1, 1, 5),)
    assert woke.missed == 3  # 02:00, 03:00, 04:00
    dropped = due_ticks(hourly, last=at(2024, 1, 1, 1), now=at(2024, 1, 1, 5, 30), catch_up="none")
    assert (dropped.fire, dropped.missed) == ((), 4)


def test_startup_fires_the_last_tick_only_with_catch_up_last() -> None:
    nightly = Schedule.parse("0 3 * * *", "Europe/Paris")
    now = at(2024, 1, 10, 12, tz=PARIS)
    assert startup_ticks(nightly, now=now, catch_up="last") == (at(2024, 1, 10, 3, tz=PARIS),)
    assert startup_ticks(nightly, now=now, catch_up="none") == ()
