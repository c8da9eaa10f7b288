"""Dead-letter retention: dead letters are purged once older than a retention time, and
the oldest of a function beyond a count (docs/architecture.md, "Queue semantics";
docs/security.md, "Failure modes").

A purge here is the admin purge (`DELETE /system/dead-letters/{id}`): the payload is
dropped and the record becomes `failed`, its history and dead-letter reason readable for
the record TTL. The sweep runs with the finished-record sweep of every gateway replica;
purging is idempotent in both backends, so replicas sharing a Redis only count what each
purged itself. Each purge is counted in `kubefaas_async_dead_letters_purged_total{reason}`
(`age` or `count`) and logged.
"""

from __future__ import annotations

import logging
from typing import Final

from prometheus_client import CollectorRegistry, Counter

from kubefaas_gateway.queue import InvocationQueue, InvocationRecord

log = logging.getLogger("kubefaas.gateway.async")

# Fourteen days, the longest an SQS dead-letter queue keeps a message.
RETENTION_DEFAULT_SECONDS: Final = 14 * 24 * 3600.0
# Dead letters read per page while sweeping, and purged per sweep at most (the next
# sweep continues), so one sweep never holds the queue for long.
PAGE: Final = 100
MAX_PER_SWEEP: Final = 10_000


class DeadLetterRetention:
    """Purges what is past `max_age_seconds` and, per function, beyond `max_per_function`."""

    def __init__(
        self,
        *,
        queue: InvocationQueue,
        registry: CollectorRegistry,
        max_age_seconds: float = RETENTION_DEFAULT_SECONDS,
        max_per_function: int | None = None,
    ) -> None:
        self.queue = queue
        self.max_age_seconds = max_age_seconds
        self.max_per_function = max_per_function
        self.purged = Counter(
            "kubefaas_async_dead_letters_purged",
            "Dead letters purged by the retention (reason: age or count).",
            ["namespace", "function", "reason"],
            registry=registry,
        )

    async def sweep(self, *, now: float) -> int:
        """One pass; returns how many dead letters it purged."""
        purged = await self._by_age(now)
        if self.max_per_function is not None:
            purged += await self._by_count(now, self.max_per_function, MAX_PER_SWEEP - purged)
        return purged

    async def _by_age(self, now: float) -> int:
        cutoff = now - self.max_age_seconds
        purged = 0
        while purged < MAX_PER_SWEEP:
            page = await self.queue.list_dead_letters(limit=PAGE)
            old = [r for r in page.items if r.dead_at is not None and r.dead_at < cutoff]
            done = await self._purge(old, now, "age")
            purged += done
            # Stop at the first young one, the end, or a page nothing could be purged of
            # (another replica got there first; the next sweep sees what is left).
            if len(old) < len(page.items) or page.next_cursor is None or not done:
                break
        return purged

    async def _by_count(self, now: float, keep: int, budget: int) -> int:
        purged = 0
        for function, count in sorted((await self.queue.dead_letter_counts()).items()):
            excess = count - keep
            while excess > 0 and purged < budget:
                limit = min(excess, PAGE, budget - purged)
                page = await self.queue.list_dead_letters(function=function, limit=limit)
                if not page.items:
                    break
                done = await self._purge(list(page.items), now, "count")
                purged += done
                excess -= len(page.items)
                if not done:  # another replica purges them meanwhile
                    break
        return purged

    async def _purge(self, records: list[InvocationRecord], now: float, reason: str) -> int:
        done = 0
        for record in records:
            if await self.queue.purge(record.id, now=now):
                done += 1
                namespace, _, name = record.function.partition("/")
                self.purged.labels(namespace, name, reason).inc()
        if done:
            why = (
                f"dead for more than {self.max_age_seconds:g} s"
                if reason == "age"
                else f"beyond the newest {self.max_per_function} of their function"
            )
            log.warning(
                "purged %d dead letters %s (dead-letter retention; their records stay "
                "readable as failed for the record TTL)",
                done,
                why,
            )
        return done
