"""Prometheus metrics of the gateway, served at `GET /metrics`.

Counters and histograms are updated per invocation, so their labelled children are cached
per (function, code, type) and the hot path does one dict lookup. Gauges (in-flight,
pending, instances) cost nothing per request: they are read from the tracker and the
backend when Prometheus scrapes. Each app owns its `CollectorRegistry`, so several apps
(tests) never collide in the process-wide default registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kubefaas.api import Function
from kubefaas_gateway.backends.base import Backend
from kubefaas_gateway.signals import ScalingSignals
from kubefaas_gateway.tracker import Tracker

if TYPE_CHECKING:
    from kubefaas_gateway.metering import Metering

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Invocations run from milliseconds up to the 900 s timeout ceiling.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
)  # fmt: skip
COLD_START_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class _LoadCollector(Collector):
    """In-flight, pending, instance and autoscaling gauges, computed at scrape time."""

    def __init__(
        self,
        *,
        functions: Callable[[], Iterable[Function]],
        tracker: Tracker,
        backend: Backend,
        signals: ScalingSignals,
    ) -> None:
        self._functions = functions
        self._tracker = tracker
        self._backend = backend
        self._signals = signals

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["namespace", "function"]
        inflight = GaugeMetricFamily(
            "kubefaas_inflight_requests",
            "Requests sent to an instance and not yet answered.",
            labels=labels,
        )
        pending = GaugeMetricFamily(
            "kubefaas_pending_requests",
            "Requests held by the gateway until an instance is ready.",
            labels=labels,
        )
        instances = GaugeMetricFamily(
            "kubefaas_instances",
            "Function instances known to the gateway, by state (starting or ready).",
            labels=[*labels, "state"],
        )
        average = GaugeMetricFamily(
            "kubefaas_concurrency_average",
            "Time-weighted average of in-flight + pending requests over the autoscaler's "
            "stable or panic window.",
            labels=[*labels, "window"],
        )
        desired = GaugeMetricFamily(
            "kubefaas_desired_replicas",
            "Instances the autoscaler last decided on (local mode).",
            labels=labels,
        )
        decisions = self._signals.decisions
        for fn in self._functions():
            names = [fn.namespace, fn.name]
            inflight.add_metric(names, self._tracker.inflight(fn.key))
            pending.add_metric(names, self._tracker.pending(fn.key))
            known = self._backend.instances(fn)
            ready = sum(1 for instance in known if instance.ready)
            instances.add_metric([*names, "ready"], ready)
            instances.add_metric([*names, "starting"], len(known) - ready)
            stable, panic = self._tracker.averages(fn.key)
            average.add_metric([*names, "stable"], stable)
            average.add_metric([*names, "panic"], panic)
            decision = decisions.get(fn.key)
            if decision is not None:
                desired.add_metric(names, decision.replicas)
        yield inflight
        yield pending
        yield instances
        yield average
        yield desired


class Metrics:
    """The gateway's metrics; `record` is the one call the invoke path makes."""

    def __init__(
        self,
        *,
        functions: Callable[[], Iterable[Function]],
        tracker: Tracker,
        backend: Backend,
        signals: ScalingSignals,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.invocations = Counter(
            "kubefaas_invocations",
            "Invocations answered, by HTTP status code and type (sync or async).",
            ["namespace", "function", "code", "type"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kubefaas_invocation_duration_seconds",
            "Time from the gateway receiving an invocation to its answer, cold start included.",
            ["namespace", "function", "type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "kubefaas_cold_starts",
            "Invocations that waited for an instance to start.",
            ["namespace", "function"],
            registry=self.registry,
        )
        self.cold_start_seconds = Histogram(
            "kubefaas_cold_start_seconds",
            "How long an invocation waited for an instance to start.",
            ["namespace", "function"],
            buckets=COLD_START_BUCKETS,
            registry=self.registry,
        )
        self.throttled = Counter(
            "kubefaas_throttled",
            "Invocations refused with 429 because the function was at its reservedConcurrency.",
            ["namespace", "function"],
            registry=self.registry,
        )
        # Decisions of the local autoscaler (when one runs) become gauges at scrape time.
        self.registry.register(
            _LoadCollector(functions=functions, tracker=tracker, backend=backend, signals=signals)
        )
        self._children: dict[tuple[str, int, str], tuple[Counter, Histogram]] = {}
        self._throttled_children: dict[str, Counter] = {}
        self.meter: Metering | None = None
        """Usage metering, when on (`observe.attach`; docs/logs.md)."""

    def bill(self, fn: Function, headers: Sequence[tuple[bytes, bytes]], cold_start: bool) -> None:
        """Bill one invocation the runtime answered (no-op with metering off)."""
        if self.meter is not None:
            self.meter.bill(fn, headers, cold_start)

    def record(self, fn: Function, code: int, kind: str, seconds: float) -> None:
        """Count one answered invocation of `fn` with HTTP `code`, `kind` sync or async."""
        cache_key = (fn.key, code, kind)
        children = self._children.get(cache_key)
        if children is None:
            children = (
                self.invocations.labels(fn.namespace, fn.name, str(code), kind),
                self.duration.labels(fn.namespace, fn.name, kind),
            )
            self._children[cache_key] = children
        children[0].inc()
        children[1].observe(seconds)

    def record_throttled(self, fn: Function) -> None:
        """Count one 429 for `fn` (hot path under overload: one dict lookup)."""
        child = self._throttled_children.get(fn.key)
        if child is None:
            child = self._throttled_children[fn.key] = self.throttled.labels(fn.namespace, fn.name)
        child.inc()

    def record_cold_start(self, fn: Function, seconds: float) -> None:
        self.cold_starts.labels(fn.namespace, fn.name).inc()
        self.cold_start_seconds.labels(fn.namespace, fn.name).observe(seconds)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
