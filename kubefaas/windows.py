"""Rolling, time-weighted concurrency windows: the autoscaler's input signal.

See docs/architecture.md, "Autoscaling" and "Time-weighted concurrency windows".

Why time-weighted: the gateway knows the exact moments the concurrency of a function
changes (a request starts waiting, gets an instance, finishes). Sampling it on a timer
would miss short bursts between samples and, sampled on each change instead, would weigh a
level that lasted 1 µs the same as one that lasted 10 s. Integrating the level over time
(level x seconds it was held) gives the true average over any window, costs a few float
operations per change, and two gateways' averages over the same window simply add up.

Storage is a ring of fixed-width buckets (1 s by default) that each hold the integral of the
level over their second, so memory is constant (window / bucket floats) however busy the
function is, and one ring serves both the stable (60 s) and the panic (6 s) window.

Everything here is pure: the clock is passed in (seconds on any monotonic scale), so tests
drive time explicitly and the gateway passes `time.monotonic()`.
"""

from __future__ import annotations

import math
from typing import Final

from kubefaas import limits

DEFAULT_BUCKET_SECONDS: Final = 1.0


class ConcurrencyWindow:
    """The time-weighted average of one function's concurrency over the recent past.

    Call `update(level, now)` whenever the level (in-flight + pending requests) changes and
    `average(seconds, now)` to read it. Time before the window was created does not count:
    averages are taken over the part of the window that has been observed, so a gateway
    that just restarted under load reports the load it sees rather than a diluted value
    that would make the autoscaler shed instances it still needs (Knative does the same).

    Not thread-safe by design: the gateway runs on one event loop and every call is
    synchronous, so no other task can interleave between reading and writing the buckets.
    """

    __slots__ = ("_bucket", "_indexes", "_integrals", "_last", "_level", "_size", "_start")

    def __init__(
        self,
        *,
        now: float,
        window_seconds: float = limits.STABLE_WINDOW_SECONDS,
        bucket_seconds: float = DEFAULT_BUCKET_SECONDS,
        level: float = 0.0,
    ) -> None:
        if not bucket_seconds > 0:
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
        if not window_seconds >= bucket_seconds:
            raise ValueError(
                f"window_seconds ({window_seconds}) must be at least bucket_seconds "
                f"({bucket_seconds})"
            )
        if level < 0:
            raise ValueError(f"level must not be negative, got {level}")
        self._bucket = bucket_seconds
        # One extra bucket: the oldest one is only partly inside the window.
        self._size = math.ceil(window_seconds / bucket_seconds) + 1
        self._integrals = [0.0] * self._size
        # The absolute bucket number each slot currently holds; -1 = never written.
        self._indexes = [-1] * self._size
        self._start = now
        self._last = now
        self._level = level

    @property
    def level(self) -> float:
        """The level set by the last `update`."""
        return self._level

    @property
    def window_seconds(self) -> float:
        """The longest window `average` can answer for."""
        return (self._size - 1) * self._bucket

    def update(self, level: float, now: float) -> None:
        """The level changed to `level` at `now`: account for the old level until `now`."""
        if level < 0:
            raise ValueError(f"level must not be negative, got {level}")
        self._advance(now)
        self._level = level

    def average(self, seconds: float, now: float) -> float:
        """Time-weighted average level over `(now - seconds, now]`.

        Only the observed part counts (see the class docstring); at the very moment of
        creation, when nothing has been observed yet, the current level is the answer.
        """
        if not 0 < seconds <= self.window_seconds:
            raise ValueError(f"seconds must be in (0, {self.window_seconds}], got {seconds}")
        self._advance(now)
        begin = max(now - seconds, self._start)
        span = now - begin
        if span <= 0:
            return self._level
        total = 0.0
        first = math.floor(begin / self._bucket)
        last = math.floor(now / self._bucket)
        for index in range(first, last + 1):
            slot = index % self._size
            if self._indexes[slot] != index:
                continue
            integral = self._integrals[slot]
            bucket_begin = index * self._bucket
            if bucket_begin < begin:
                # The bucket straddles the window's start: count the share inside it,
                # assuming the level was even across the bucket (error <= one bucket).
                covered = min(bucket_begin + self._bucket, now) - max(bucket_begin, self._start)
                if covered <= 0:
                    continue
                integral *= (min(bucket_begin + self._bucket, now) - begin) / covered
            total += integral
        return max(total / span, 0.0)

    def _advance(self, now: float) -> None:
        """Add `level x time` from the last change up to `now` into the buckets it spans."""
        if now <= self._last:
            # Clocks handed in are monotonic; equal times are common (two changes in one
            # tick), earlier ones are ignored rather than corrupting the integral.
            return
        begin = self._last
        self._last = now
        # Anything older than the ring is forgotten anyway: skip straight to its tail so a
        # function idle for a day costs the same as one idle for a second.
        horizon = now - self._size * self._bucket
        if begin < horizon:
            begin = horizon
        index = math.floor(begin / self._bucket)
        while begin < now:
            bucket_end = (index + 1) * self._bucket
            end = min(bucket_end, now)
            slot = index % self._size
            if self._indexes[slot] != index:
                self._indexes[slot] = index
                self._integrals[slot] = 0.0
            self._integrals[slot] += self._level * (end - begin)
            begin = end
            index += 1
