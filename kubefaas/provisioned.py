"""Provisioned concurrency: cron windows that raise a function's minScale while open
(docs/architecture.md, "Autoscaling"). Pure: wall-clock time is passed in.

A window is open during every minute its 5-field cron expression matches, in its time
zone, so `* 9-17 * * 1-5` is 09:00-17:59 on weekdays and daylight-saving changes follow
cron's own rules (`kubefaas.schedule`). Both autoscalers (the operator's, and local mode's)
hand the largest open window's `minScale` to the decider, which holds at least that many
instances with the reason "provisioned".
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from kubefaas.api import ProvisionedWindow
from kubefaas.schedule import Schedule


def is_open(window: ProvisionedWindow, wall: float) -> bool:
    """Whether the minute holding epoch second `wall` matches the window's schedule."""
    minute = math.floor(wall / 60) * 60
    schedule = Schedule.parse(window.schedule, window.timezone)
    return schedule.last_at_or_before(minute) == minute


def provisioned_min_scale(windows: Iterable[ProvisionedWindow], wall: float) -> int:
    """The largest `minScale` of the windows open at `wall`; 0 when none is."""
    return max((w.min_scale for w in windows if is_open(w, wall)), default=0)
