"""A bounded per-minute history of each function's counters, for the console's charts
(docs/console.md, "Charts").

The gateway's own Prometheus counters (`metrics.Metrics`: invocations by code, the
duration histogram, cold starts) are cumulative; `History` samples them every
`SAMPLE_SECONDS` and keeps, per function, the last sample of each of the last
`MINUTES` minutes (a deque, so memory is bounded by functions x 61 samples). A window's
figures are differences between two samples: invocations, errors (5xx and 429), cold
starts, and p50/p99 interpolated from the histogram buckets' differences.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from kubefaas_gateway.metrics import Metrics

MINUTES = 60
SAMPLE_SECONDS = 10.0


@dataclass(frozen=True)
class Sample:
    """Cumulative counts of one function at one moment."""

    invocations: float = 0.0
    errors: float = 0.0
    cold_starts: float = 0.0
    # (upper bound, cumulative count) of the duration histogram, +Inf last.
    buckets: tuple[tuple[float, float], ...] = ()

    def minus(self, older: Sample) -> Sample:
        old = dict(older.buckets)
        return Sample(
            invocations=self.invocations - older.invocations,
            errors=self.errors - older.errors,
            cold_starts=self.cold_starts - older.cold_starts,
            buckets=tuple((le, n - old.get(le, 0.0)) for le, n in self.buckets),
        )

    def quantile(self, q: float) -> float | None:
        """The q-quantile of the durations (seconds), interpolated within its bucket."""
        total = self.buckets[-1][1] if self.buckets else 0.0
        if total <= 0:
            return None
        rank = q * total
        lower, below = 0.0, 0.0
        for le, count in self.buckets:
            if count >= rank:
                if le == float("inf"):
                    return lower
                inside = count - below
                share = (rank - below) / inside if inside else 1.0
                return lower + (le - lower) * share
            lower, below = le, count
        return lower


@dataclass
class Window:
    """One function's figures over the window, and per-minute series for the charts."""

    total: Sample
    invocations: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    cold_starts: list[float] = field(default_factory=list)


def _by_function(
    counter: Counter | Histogram, suffix: str
) -> Iterable[tuple[dict[str, str], float]]:
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix):
                yield sample.labels, sample.value


def read(metrics: Metrics) -> dict[str, Sample]:
    """Every function's cumulative counts now."""
    invocations: dict[str, float] = {}
    errors: dict[str, float] = {}
    cold: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for labels, value in _by_function(metrics.invocations, "_total"):
        key = f"{labels['namespace']}/{labels['function']}"
        invocations[key] = invocations.get(key, 0.0) + value
        code = labels.get("code", "")
        if code.startswith("5") or code == "429":
            errors[key] = errors.get(key, 0.0) + value
    for labels, value in _by_function(metrics.cold_starts, "_total"):
        key = f"{labels['namespace']}/{labels['function']}"
        cold[key] = cold.get(key, 0.0) + value
    for labels, value in _by_function(metrics.duration, "_bucket"):
        key = f"{labels['namespace']}/{labels['function']}"
        le = float(labels["le"])
        per = buckets.setdefault(key, {})
        per[le] = per.get(le, 0.0) + value
    keys = set(invocations) | set(cold) | set(buckets)
    return {
        key: Sample(
            invocations=invocations.get(key, 0.0),
            errors=errors.get(key, 0.0),
            cold_starts=cold.get(key, 0.0),
            buckets=tuple(sorted(buckets.get(key, {}).items())),
        )
        for key in keys
    }


class History:
    """Per-function deques of (minute, last sample in that minute)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._series: dict[str, deque[tuple[int, Sample]]] = {}

    def record(self, samples: dict[str, Sample]) -> None:
        minute = int(self._clock() // 60)
        for key, sample in samples.items():
            series = self._series.get(key)
            if series is None:
                # The first sight of a function: zero a minute before, so counts the
                # gateway made before sampling began are in the window.
                series = self._series[key] = deque(maxlen=MINUTES + 1)
                series.append((minute - 1, Sample()))
            if series[-1][0] == minute:
                series[-1] = (minute, sample)
            else:
                series.append((minute, sample))

    def window(self, key: str, now_sample: Sample | None) -> Window:
        """Figures over the last hour, ending with `now_sample` (the live counts).

        One pass over the (at most 61) samples; per-minute series carry the counts only,
        the histogram is differenced once, for the window's quantiles.
        """
        minute = int(self._clock() // 60)
        stored = self._series.get(key, ())
        series = [(m, s) for m, s in stored if m < minute]
        if now_sample is not None:
            series.append((minute, now_sample))
        elif stored and stored[-1][0] == minute:
            series.append(stored[-1])
        first_minute = minute - MINUTES + 1
        baseline = Sample()
        index = 0
        while index < len(series) and series[index][0] < first_minute:
            baseline = series[index][1]
            index += 1
        window = Window(total=Sample())
        previous = current = baseline
        for m in range(first_minute, minute + 1):
            while index < len(series) and series[index][0] <= m:
                current = series[index][1]
                index += 1
            window.invocations.append(current.invocations - previous.invocations)
            window.errors.append(current.errors - previous.errors)
            window.cold_starts.append(current.cold_starts - previous.cold_starts)
            previous = current
        window.total = current.minus(baseline)
        return window


# One history per app's metrics (each app, and each test, has its own).
_HISTORIES: weakref.WeakKeyDictionary[Metrics, History] = weakref.WeakKeyDictionary()


def history_of(metrics: Metrics) -> History:
    found = _HISTORIES.get(metrics)
    if found is None:
        found = _HISTORIES[metrics] = History()
    return found


async def sample_forever(metrics: Metrics, interval: float = SAMPLE_SECONDS) -> None:
    """Record a sample every `interval` seconds until cancelled.

    Reading every counter costs about a millisecond per function (bench/RESULTS.md,
    "Console history"), so it runs in a worker thread, off the event loop the invoke path
    uses (prometheus_client's collectors are thread-safe)."""
    history = history_of(metrics)
    while True:
        history.record(await asyncio.to_thread(read, metrics))
        await asyncio.sleep(interval)
