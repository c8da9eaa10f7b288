"""Events of a deleted function: dead-lettered when their age runs out (docs/security.md,
"Failure modes").

No dispatcher leases the events of a function that left the registry: they wait, and run
if it comes back. Once such an event is older than the longest `maxEventAgeSeconds` any
function may set (`kubefaas.limits.ASYNC_MAX_EVENT_AGE_MAX`), no policy the function had
could still run it, so it moves to the dead-letter store with reason `function_deleted`
(error type `FunctionDeleted`), where the admin routes list, redrive and purge it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kubefaas import limits
from kubefaas.retry import DeadReason
from kubefaas_gateway.queue import AttemptError, InvocationQueue, InvocationRecord, QueueStats
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics

log = logging.getLogger("kubefaas.gateway.async")

DELETED_FUNCTION_MAX_AGE_SECONDS: float = float(limits.ASYNC_MAX_EVENT_AGE_MAX)


async def dead_letter_deleted(
    *,
    queue: InvocationQueue,
    stats: Iterable[QueueStats],
    known: set[str],
    now: float,
    metrics: AsyncMetrics,
    max_age_seconds: float = DELETED_FUNCTION_MAX_AGE_SECONDS,
) -> list[InvocationRecord]:
    """Dead-letter the aged events of every function in `stats` that is not in `known`."""
    done: list[InvocationRecord] = []
    for entry in stats:
        if entry.function in known or entry.depth == 0:
            continue
        if entry.oldest_age_seconds < max_age_seconds:
            continue
        message = (
            f"function {entry.function} is not deployed and the event is older than "
            f"{max_age_seconds:g} s; not attempted"
        )
        records = await queue.dead_letter_aged(
            entry.function,
            started_before=now - max_age_seconds,
            now=now,
            error=AttemptError(kind="expired", type="FunctionDeleted", message=message),
            reason=DeadReason.FUNCTION_DELETED.value,
            message=message,
        )
        for _ in records:
            metrics.dead_letter(entry.function, DeadReason.FUNCTION_DELETED.value)
        if records:
            log.warning(
                "dead-lettered %d async events of deleted function %s (older than %g s)",
                len(records),
                entry.function,
                max_age_seconds,
            )
        done.extend(records)
    return done
