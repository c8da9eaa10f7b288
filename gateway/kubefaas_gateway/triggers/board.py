"""What each trigger last did: fires, misses, messages, acks, lag and the last error.

The loops write here; `GET /internal/triggers`, the Prometheus collectors and the scaling
signals read it (docs/triggers.md, "Visibility"). Everything runs on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

_LABELS = ("namespace", "function", "trigger")


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


@dataclass
class TriggerState:
    function: str
    name: str
    kind: str  # "schedule" or the source kind: "nats", "redis"
    fires: int = 0
    misses: int = 0
    messages: int = 0
    acks: int = 0
    dead: int = 0
    lag: int | None = None
    last_fire: float | None = None
    last_tick: float | None = None
    last_invocation: str | None = None
    last_message: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    next_tick: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.kind == "schedule":
            data.update(
                fires=self.fires,
                misses=self.misses,
                lastFireTime=iso(self.last_fire),
                lastScheduledTime=iso(self.last_tick),
                nextScheduledTime=iso(self.next_tick),
            )
        else:
            data.update(
                messages=self.messages,
                acks=self.acks,
                deadLettered=self.dead,
                lag=self.lag,
                lastMessageTime=iso(self.last_message),
            )
        data["lastInvocationId"] = self.last_invocation
        data["lastError"] = self.last_error
        data["lastErrorTime"] = iso(self.last_error_at)
        return data


class TriggerBoard:
    """Trigger states by (function key, trigger name), with their Prometheus series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._states: dict[tuple[str, str], TriggerState] = {}
        self.fires = Counter(
            "kubefaas_trigger_fires",
            "Schedule ticks this gateway stored as async invocations.",
            _LABELS,
            registry=registry,
        )
        self.misses = Counter(
            "kubefaas_trigger_misses",
            "Schedule ticks not fired because no gateway ran at the time (catchUp none).",
            _LABELS,
            registry=registry,
        )
        self.messages = Counter(
            "kubefaas_trigger_messages",
            "Broker messages received by a queue trigger.",
            _LABELS,
            registry=registry,
        )
        self.acks = Counter(
            "kubefaas_trigger_acks",
            "Broker messages acknowledged, by outcome (succeeded, dead).",
            [*_LABELS, "outcome"],
            registry=registry,
        )
        self.lag_gauge = Gauge(
            "kubefaas_trigger_lag",
            "Messages waiting in the broker for a queue trigger (not yet received).",
            _LABELS,
            registry=registry,
        )

    def state(self, function: str, name: str, kind: str) -> TriggerState:
        key = (function, name)
        found = self._states.get(key)
        if found is None or found.kind != kind:
            found = self._states[key] = TriggerState(function, name, kind)
        return found

    def forget(self, function: str, name: str) -> None:
        self._states.pop((function, name), None)

    def _labels(self, state: TriggerState) -> tuple[str, str, str]:
        namespace, _, fn = state.function.partition("/")
        return namespace, fn, state.name

    def fired(self, state: TriggerState, *, tick: float, now: float, invocation: str) -> None:
        state.fires += 1
        state.last_fire, state.last_tick, state.last_invocation = now, tick, invocation
        self.fires.labels(*self._labels(state)).inc()

    def missed(self, state: TriggerState, count: int) -> None:
        if count:
            state.misses += count
            self.misses.labels(*self._labels(state)).inc(count)

    def received(self, state: TriggerState, *, now: float, invocation: str) -> None:
        state.messages += 1
        state.last_message, state.last_invocation = now, invocation
        self.messages.labels(*self._labels(state)).inc()

    def acked(self, state: TriggerState, outcome: str) -> None:
        state.acks += 1
        if outcome == "dead":
            state.dead += 1
        self.acks.labels(*self._labels(state), outcome).inc()

    def set_lag(self, state: TriggerState, lag: int) -> None:
        state.lag = lag
        self.lag_gauge.labels(*self._labels(state)).set(lag)

    def error(self, state: TriggerState, message: str, *, now: float) -> None:
        state.last_error, state.last_error_at = message, now

    def lag_by_function(self) -> dict[str, int]:
        lag: dict[str, int] = {}
        for state in self._states.values():
            if state.lag:
                lag[state.function] = lag.get(state.function, 0) + state.lag
        return lag

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for (function, _), state in sorted(self._states.items()):
            out.setdefault(function, []).append(state.to_json())
        return out
