"""Usage kept in Redis, shared by every gateway replica (docs/logs.md, "Usage across
replicas"; docs/architecture.md, "Logs and metering").

When the async queue is in Redis (`KUBEFAAS_REDIS_URL`), the metered per-minute sums go to
the same Redis instead of each replica's `usage.sqlite3`, so `GET /system/usage` on any
replica answers for all of them. The interface is `metering.UsageStore`'s (`add`,
`totals`, `close`), called from worker threads, hence the synchronous client.

Key layout (the queue's hash tag `{<prefix>}`, so a Redis Cluster keeps them in one slot
and each flush is one MULTI/EXEC):

    {prefix}:usage:m:<minute epoch>   hash   "<ns>/<fn>|r" requests, "|m" MiB-ms, "|c" cold starts
    {prefix}:usage:minutes            zset   the minutes that have a hash (score = minute)

A flush is `HINCRBY`s of the pending sums, atomic per flush; a read is one `ZRANGEBYSCORE`
and one pipelined `HGETALL` per minute with data. Minutes older than `RETENTION_SECONDS`
expire. A flush that fails (Redis unreachable) raises, and `Metering.flush` keeps the sums
for the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

RETENTION_SECONDS = 400 * 86400
_FIELDS = {b"r": 0, b"m": 1, b"c": 2}


class RedisUsageStore:
    """Per-minute usage sums in Redis (see the module docstring)."""

    def __init__(self, url: str, *, prefix: str) -> None:
        self._client: Any = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._base = "{" + prefix + "}:usage"

    def _minute_key(self, minute: int) -> str:
        return f"{self._base}:m:{minute}"

    def add(self, rows: Sequence[tuple[int, str, str, int, int, int]]) -> None:
        """Add `(minute, namespace, function, requests, mib_ms, cold_starts)` rows."""
        if not rows:
            return
        pipe = self._client.pipeline(transaction=True)
        minutes = set()
        for minute, namespace, function, requests, mib_ms, cold in rows:
            key = self._minute_key(minute)
            field = f"{namespace}/{function}|"
            pipe.hincrby(key, field + "r", requests)
            pipe.hincrby(key, field + "m", mib_ms)
            if cold:
                pipe.hincrby(key, field + "c", cold)
            minutes.add(minute)
        for minute in minutes:
            pipe.expire(self._minute_key(minute), RETENTION_SECONDS)
        index = f"{self._base}:minutes"
        pipe.zadd(index, {str(minute): minute for minute in minutes})
        pipe.zremrangebyscore(index, "-inf", f"({max(minutes) - RETENTION_SECONDS}")
        pipe.execute()

    def totals(
        self, *, start: float, end: float, namespace: str | None
    ) -> list[tuple[str, str, int, int, int]]:
        """`(namespace, function, requests, mib_ms, cold_starts)` summed over the minutes
        that start in [start, end), as `metering.UsageStore.totals`."""
        first = int(start // 60) * 60
        minutes = self._client.zrangebyscore(f"{self._base}:minutes", first, f"({end}")
        if not minutes:
            return []
        pipe = self._client.pipeline(transaction=False)
        for minute in minutes:
            pipe.hgetall(self._minute_key(int(minute)))
        sums: dict[tuple[str, str], list[int]] = {}
        for found in pipe.execute():
            for field, value in found.items():
                key, _, kind = field.rpartition(b"|")
                ns, _, name = key.decode().partition("/")
                if namespace is not None and ns != namespace:
                    continue
                position = _FIELDS.get(kind)
                if position is not None:
                    sums.setdefault((ns, name), [0, 0, 0])[position] += int(value)
        return [(ns, name, *sums[(ns, name)]) for ns, name in sorted(sums)]  # type: ignore[misc]

    def close(self) -> None:
        self._client.close()
