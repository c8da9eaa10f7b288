"""The scaling-signals board: what the gateway knows about each function's load.

Three writers put figures on it, each the one source of its own: the async delivery
publishes per-function queue depths after each stats refresh, the trigger runner publishes
each queue trigger's lag (broker messages not yet received, docs/architecture.md,
"Triggers"), counted as queued work like async events, and local mode's autoscaler
publishes its last decisions. Readers (`Metrics` at scrape time, `/internal/stats`, the
autoscaler's next tick) read the board and never the writers, so none of them waits on
the queue store, and a gateway without an autoscaler (cluster mode) simply has no
decisions on it. Everything happens on the gateway's event loop; a publish replaces the
whole mapping, so a reader never sees half of one.

`FunctionSignals` is the one description of a function's load that both `/internal/stats`
and the Prometheus gauges report, so the two never disagree (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from kubefaas.scaling import DEFAULT_TUNING, Decision, Tuning
from kubefaas_gateway.tracker import Tracker

_EMPTY_DECISIONS: Mapping[str, Decision] = MappingProxyType({})
_EMPTY_DEPTHS: Mapping[str, int] = MappingProxyType({})


class ScalingSignals:
    """Last published queue depths and scaling decisions, by function key."""

    def __init__(self) -> None:
        self._decisions: Mapping[str, Decision] = _EMPTY_DECISIONS
        self._queue_depths: Mapping[str, int] = _EMPTY_DEPTHS
        self._async_depths: Mapping[str, int] = _EMPTY_DEPTHS
        self._trigger_lag: Mapping[str, int] = _EMPTY_DEPTHS

    # -- writers -------------------------------------------------------------------------

    def publish_queue_depths(self, depths: Mapping[str, int]) -> None:
        """Events waiting (not leased) per function, as the queue last reported them."""
        self._async_depths = MappingProxyType(dict(depths))
        self._merge()

    def publish_trigger_lag(self, lag: Mapping[str, int]) -> None:
        """Messages waiting in the brokers of each function's queue triggers."""
        self._trigger_lag = MappingProxyType(dict(lag))
        self._merge()

    def _merge(self) -> None:
        merged = dict(self._async_depths)
        for key, waiting in self._trigger_lag.items():
            merged[key] = merged.get(key, 0) + waiting
        self._queue_depths = MappingProxyType(merged)

    def publish_decisions(self, decisions: Mapping[str, Decision]) -> None:
        """The autoscaler's decisions of its last tick."""
        self._decisions = MappingProxyType(dict(decisions))

    # -- readers -------------------------------------------------------------------------

    @property
    def queue_depths(self) -> Mapping[str, int]:
        return self._queue_depths

    @property
    def decisions(self) -> Mapping[str, Decision]:
        return self._decisions

    def queued(self, key: str) -> int:
        return self._queue_depths.get(key, 0)

    def decision(self, key: str) -> Decision | None:
        return self._decisions.get(key)


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSignals:
    """One function's load as this gateway sees it (docs/architecture.md, "Autoscaling")."""

    in_flight: int
    pending: int
    stable_concurrency: float
    panic_concurrency: float
    queued: int
    idle_seconds: float | None  # None: no request seen since the gateway started

    def to_json(self) -> dict[str, Any]:
        """The `/internal/stats` entry; the operator's autoscaler parses exactly these."""
        return {
            "inFlight": self.in_flight,
            "pending": self.pending,
            "stableConcurrency": round(self.stable_concurrency, 4),
            "panicConcurrency": round(self.panic_concurrency, 4),
            "queued": self.queued,
            "idleSeconds": None if self.idle_seconds is None else round(self.idle_seconds, 3),
        }


def read_signals(
    tracker: Tracker, key: str, *, queued: int, now: float, tuning: Tuning = DEFAULT_TUNING
) -> FunctionSignals:
    """The signals of function `key` at `now` (on the tracker's clock)."""
    load = tracker.load(key)
    stable, panic = tracker.averages(
        key,
        stable_seconds=tuning.stable_window_seconds,
        panic_seconds=tuning.panic_window_seconds,
    )
    busy = load.inflight or load.pending
    last = load.last_active
    return FunctionSignals(
        in_flight=load.inflight,
        pending=load.pending,
        stable_concurrency=stable,
        panic_concurrency=panic,
        queued=queued,
        idle_seconds=0.0 if busy else (None if last is None else max(0.0, now - last)),
    )
