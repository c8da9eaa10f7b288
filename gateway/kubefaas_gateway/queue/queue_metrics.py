"""Prometheus metrics of async delivery, registered on the gateway's own registry.

Counters move as events are enqueued, attempted, retried and dead-lettered. The queue
gauges (depth, oldest event age, leases in flight) need a query of the store, which can be
Redis over the network, so they are refreshed by the delivery's periodic stats task and
read from that snapshot at scrape time: a scrape never waits on the queue.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kubefaas_gateway.queue.base import QueueStats

_LABELS = ("namespace", "function")


def _split(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


class _QueueCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Sequence[QueueStats] = ()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "kubefaas_async_queue_depth",
            "Async events waiting for an attempt (first try or a scheduled retry).",
            labels=_LABELS,
        )
        age = GaugeMetricFamily(
            "kubefaas_async_oldest_event_age_seconds",
            "Age of the oldest async event not yet finished.",
            labels=_LABELS,
        )
        leased = GaugeMetricFamily(
            "kubefaas_async_inflight_events",
            "Async events leased by a worker (being attempted), all gateway replicas.",
            labels=_LABELS,
        )
        for stats in self.snapshot:
            labels = list(_split(stats.function))
            depth.add_metric(labels, stats.depth)
            age.add_metric(labels, stats.oldest_age_seconds)
            leased.add_metric(labels, stats.in_flight)
        yield depth
        yield age
        yield leased


class AsyncMetrics:
    """Counters and queue gauges for async invocations, by function."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.enqueued = Counter(
            "kubefaas_async_enqueued",
            "Async invocations accepted (202) and stored.",
            _LABELS,
            registry=registry,
        )
        self.attempts = Counter(
            "kubefaas_async_attempts",
            "Attempts of async invocations, by outcome (succeeded or a failure kind).",
            [*_LABELS, "outcome"],
            registry=registry,
        )
        self.retries = Counter(
            "kubefaas_async_retries",
            "Failed attempts scheduled to be tried again.",
            _LABELS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "kubefaas_async_dead_letters",
            "Async invocations moved to the dead-letter store, by reason.",
            [*_LABELS, "reason"],
            registry=registry,
        )
        self._queue = _QueueCollector()
        registry.register(self._queue)

    def update_queue(self, stats: Sequence[QueueStats]) -> None:
        self._queue.snapshot = tuple(stats)

    def enqueue(self, key: str) -> None:
        self.enqueued.labels(*_split(key)).inc()

    def attempt(self, key: str, outcome: str) -> None:
        self.attempts.labels(*_split(key), outcome).inc()

    def retry(self, key: str) -> None:
        self.retries.labels(*_split(key)).inc()

    def dead_letter(self, key: str, reason: str) -> None:
        self.dead_letters.labels(*_split(key), reason).inc()
