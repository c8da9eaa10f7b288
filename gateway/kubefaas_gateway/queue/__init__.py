"""Durable storage for asynchronous invocations: SQLite (embedded) or Redis (shared).

`open_queue` picks the backend from the gateway's settings: a Redis URL wins, otherwise
the SQLite file lives in the state directory.
"""

from __future__ import annotations

from pathlib import Path

from kubefaas_gateway.queue.base import (
    RECORD_TTL_DEFAULT_SECONDS,
    RESULT_MAX_BYTES,
    Attempt,
    AttemptError,
    DeadLetterPage,
    InvocationQueue,
    InvocationRecord,
    Lease,
    NewInvocation,
    QueueStats,
)

__all__ = [
    "RECORD_TTL_DEFAULT_SECONDS",
    "RESULT_MAX_BYTES",
    "Attempt",
    "AttemptError",
    "DeadLetterPage",
    "InvocationQueue",
    "InvocationRecord",
    "Lease",
    "NewInvocation",
    "QueueStats",
    "make_queue",
]


def make_queue(
    *,
    state_dir: Path | None,
    redis_url: str | None,
    record_ttl_seconds: float = RECORD_TTL_DEFAULT_SECONDS,
    redis_prefix: str | None = None,
) -> InvocationQueue:
    """The configured backend, not yet opened (call `await queue.open()`)."""
    if redis_url:
        from kubefaas_gateway.queue.redis import DEFAULT_PREFIX, RedisQueue

        return RedisQueue(
            redis_url,
            prefix=redis_prefix or DEFAULT_PREFIX,
            record_ttl_seconds=record_ttl_seconds,
        )
    if state_dir is None:
        raise ValueError("the async queue needs a state directory or a Redis URL")
    from kubefaas_gateway.queue.sqlite import SQLiteQueue

    return SQLiteQueue.in_state_dir(state_dir, record_ttl_seconds=record_ttl_seconds)
