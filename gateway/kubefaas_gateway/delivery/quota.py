"""Async queue quotas: refuse an event before it is stored when its function, or the whole
queue, holds too many (docs/security.md; docs/architecture.md, "Auth and limits").

The queue's depth is read by the delivery's periodic stats task (every
`KUBEFAAS_ASYNC_STATS_INTERVAL_SECONDS`, one query, not one per submit); events this
gateway stored since that read are counted on top, so one gateway never overshoots. With
several gateway replicas on Redis each counts its own, so the total may pass the quota by
what the others stored within one stats interval.

Over the function's quota: `429 QueueFull` (retry later: its events are being worked off);
over the total: `507 QueueStorageFull` (the platform's own storage is what is short).
Both count in `kubefaas_gateway_refused_requests_total{reason="queue_function"|"queue_total"}`.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from kubefaas_gateway.errors import InvocationError, Throttled
from kubefaas_gateway.queue import QueueStats
from kubefaas_gateway.refusals import refusal_counter

RETRY_AFTER_SECONDS = 5


class QueueFull(Throttled):
    """The function has as many async events queued as its quota allows."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after_seconds=RETRY_AFTER_SECONDS)


class QueueStorageFull(InvocationError):
    """The async queue as a whole holds as many events as the gateway allows."""

    status = 507


class QueueQuota:
    def __init__(
        self, *, per_function: int, total: int, registry: CollectorRegistry | None = None
    ) -> None:
        self._per_function = per_function
        self._total = total
        self._stored: dict[str, int] = {}  # from the last stats read
        self._stored_total = 0
        self._added: dict[str, int] = {}  # since then, by this gateway
        self._added_total = 0
        self._counter = refusal_counter(registry) if registry is not None else None

    def update(self, stats: Sequence[QueueStats]) -> None:
        """A fresh read of the queue: it includes everything added before it."""
        self._stored = {s.function: s.depth + s.in_flight for s in stats}
        self._stored_total = sum(self._stored.values())
        self._added = {}
        self._added_total = 0

    def check(self, key: str) -> None:
        """Raise `QueueFull`/`QueueStorageFull` if one more event of `key` is too many."""
        held = self._stored.get(key, 0) + self._added.get(key, 0)
        if held >= self._per_function:
            self._refused("queue_function")
            raise QueueFull(
                f"function {key} has {held} async events queued, its quota is "
                f"{self._per_function} (KUBEFAAS_ASYNC_QUEUE_MAX_PER_FUNCTION); retry later"
            )
        total = self._stored_total + self._added_total
        if total >= self._total:
            self._refused("queue_total")
            raise QueueStorageFull(
                f"the async queue holds {total} events, its quota is {self._total} "
                "(KUBEFAAS_ASYNC_QUEUE_MAX_TOTAL); retry later"
            )

    def added(self, key: str) -> None:
        self._added[key] = self._added.get(key, 0) + 1
        self._added_total += 1

    def _refused(self, reason: str) -> None:
        if self._counter is not None:
            self._counter.labels(reason).inc()
