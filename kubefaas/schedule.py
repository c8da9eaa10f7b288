"""When a schedule trigger fires (docs/architecture.md, "Triggers"). Pure: time is passed in.

Two forms:

- a 5-field cron expression (minute hour day-of-month month day-of-week), evaluated in an
  IANA time zone (UTC by default) by `cronsim`, which follows cron's own rules across
  daylight-saving changes: a wall-clock time skipped by a spring-forward fires once, at the
  first instant after the gap; a fixed time repeated by a fall-back fires once, at its
  first occurrence, while an hourly (`*` hour) schedule fires in each real hour;
- `@every <duration>` (`90s`, `5m`, `1h30m`; at least 1 s): ticks on multiples of the
  interval since the Unix epoch, so every gateway replica computes the same ticks.

A tick is an epoch second (a float); its identity (function, trigger, tick) is what makes a
tick fire once across replicas. `startup_ticks` says what to fire when a gateway starts
(`catchUp`), `due_ticks` what to fire when it wakes, late or on time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

EVERY_PREFIX = "@every "
EVERY_MIN_SECONDS = 1
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

CatchUp = Literal["none", "last"]


def parse_duration(text: str) -> int:
    """`1h30m` -> 5400 seconds; ValueError naming the accepted form."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(
            f"@every takes a duration of hours, minutes and seconds such as 30s, 5m or 1h30m, "
            f"got {text.strip()!r}"
        )
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone `name` (UTC when None); ValueError when unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Paris"
        ) from None


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: `every_seconds` set for `@every`, else a cron `expression`."""

    expression: str
    timezone: str | None = None
    every_seconds: int | None = None

    @classmethod
    def parse(cls, expression: str, timezone: str | None = None) -> Schedule:
        """Validate `expression` (and `timezone`); ValueError says what is wrong."""
        text = expression.strip()
        if text.startswith(EVERY_PREFIX) or text == EVERY_PREFIX.strip():
            if timezone is not None:
                raise ValueError("timezone has no meaning for @every schedules")
            seconds = parse_duration(text[len(EVERY_PREFIX) :])
            if seconds < EVERY_MIN_SECONDS:
                raise ValueError(f"@every must be at least {EVERY_MIN_SECONDS}s")
            return cls(text, None, seconds)
        if text.startswith("@"):
            raise ValueError(f"unknown schedule {text!r}: use 5 cron fields or @every <duration>")
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(
                "a cron schedule has 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(fields)} in {text!r}"
            )
        zone(timezone)
        try:
            CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
        return cls(text, timezone, None)

    def next_after(self, t: float) -> float:
        """The first tick strictly after epoch second `t`."""
        if self.every_seconds is not None:
            return (math.floor(t / self.every_seconds) + 1) * self.every_seconds
        start = datetime.fromtimestamp(math.floor(t), tz=zone(self.timezone))
        return next(iter(CronSim(self.expression, start))).timestamp()

    def last_at_or_before(self, t: float) -> float:
        """The latest tick at or before `t`."""
        if self.every_seconds is not None:
            return math.floor(t / self.every_seconds) * self.every_seconds
        start = datetime.fromtimestamp(math.floor(t) + 1, tz=zone(self.timezone))
        return next(iter(CronSim(self.expression, start, reverse=True))).timestamp()


@dataclass(frozen=True)
class Due:
    """What a waking trigger does: fire these ticks; count the others as missed."""

    fire: tuple[float, ...]
    missed: int


# How late a tick may be and still fire when catchUp is none: a gateway that wakes a
# little late (a busy loop, a GC pause) fires; one that was stopped across ticks does not.
ON_TIME_SECONDS = 5.0
# Counting misses stops here: a gateway stopped for months need not walk every tick.
MISSED_COUNT_MAX = 10_000


def due_ticks(
    schedule: Schedule,
    *,
    last: float,
    now: float,
    catch_up: CatchUp,
    on_time_seconds: float = ON_TIME_SECONDS,
) -> Due:
    """Ticks after `last` (the last one handled) up to `now`.

    Each tick at most `on_time_seconds` old fires. Older ones are missed; with
    `catchUp: last` the latest missed one still fires (once), like a cron that runs what it
    slept through.
    """
    fire: list[float] = []
    missed: list[float] = []
    tick = schedule.next_after(last)
    while tick <= now and len(missed) < MISSED_COUNT_MAX:
        (fire if now - tick <= on_time_seconds else missed).append(tick)
        tick = schedule.next_after(tick)
    if catch_up == "last" and missed and not fire:
        fire.append(missed.pop())
    return Due(tuple(fire), len(missed))


def startup_ticks(schedule: Schedule, *, now: float, catch_up: CatchUp) -> tuple[float, ...]:
    """What a gateway fires as it starts at `now`: with `catchUp: last`, the latest tick
    at or before now (a no-op through the idempotency key when it had already fired);
    with `none`, nothing: the next tick will come."""
    if catch_up == "last":
        return (schedule.last_at_or_before(now),)
    return ()
