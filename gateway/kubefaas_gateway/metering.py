"""Metering: requests, GB-seconds and cold starts per function, counted and kept.

See docs/logs.md and docs/architecture.md, "Logs and metering".
Every invocation the runtime answered is billed from its `X-Duration-Ms` header exactly as
the runtime's REPORT line bills it: the duration rounded up to the whole millisecond (at
least 1 ms), times the function's memory. Amounts are kept as integers, MiB x ms, so sums
never drift; GB-seconds are MiB-ms / 1024 / 1000 (GB meaning GiB, as on Lambda).

Counts go to Prometheus counters at once and to a per-minute table in SQLite
(`<state_dir>/usage.sqlite3`) by `flush`, which the observability task runs every second
and at shutdown, so usage survives a gateway restart. `usage()` flushes first, so it
includes every invocation answered before the call.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from kubefaas import wire
from kubefaas.api import Function
from kubefaas.quantity import mebibytes

FILE_NAME = "usage.sqlite3"
BUCKET_SECONDS = 60
MIB_MS_PER_GB_SECOND = 1024 * 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    minute INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    requests INTEGER NOT NULL,
    mib_ms INTEGER NOT NULL,
    cold_starts INTEGER NOT NULL,
    PRIMARY KEY (minute, namespace, function)
)
"""

_DURATION_LENGTH = len(wire.DURATION_MS)


def billed_milliseconds(duration_ms_text: bytes) -> int:
    """The runtime's rule (`kubefaas_runtime.logs.billed_milliseconds`, which the gateway
    does not import): the reported duration rounded up to the millisecond, at least 1."""
    return max(1, math.ceil(float(duration_ms_text)))


class UsageSink(Protocol):
    """Where the per-minute sums are kept: `UsageStore` (SQLite, one gateway) or
    `usage_redis.RedisUsageStore` (shared by every replica)."""

    def add(self, rows: Sequence[tuple[int, str, str, int, int, int]]) -> None: ...

    def totals(
        self, *, start: float, end: float, namespace: str | None
    ) -> list[tuple[str, str, int, int, int]]: ...

    def close(self) -> None: ...


class UsageStore:
    """Per-minute usage rows in SQLite; thread-safe (reads run in a worker thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def add(self, rows: Sequence[tuple[int, str, str, int, int, int]]) -> None:
        """Add `(minute, namespace, function, requests, mib_ms, cold_starts)` rows."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (minute, namespace, function) DO UPDATE SET "
                "requests = requests + excluded.requests, mib_ms = mib_ms + excluded.mib_ms, "
                "cold_starts = cold_starts + excluded.cold_starts",
                rows,
            )
            self._db.execute("COMMIT")

    def totals(
        self, *, start: float, end: float, namespace: str | None
    ) -> list[tuple[str, str, int, int, int]]:
        """`(namespace, function, requests, mib_ms, cold_starts)` summed over the minutes
        that start in [start, end)."""
        sql = (
            "SELECT namespace, function, SUM(requests), SUM(mib_ms), SUM(cold_starts) "
            "FROM usage WHERE minute >= ? AND minute < ?"
        )
        args: list[Any] = [_minute(start), end]
        if namespace is not None:
            sql += " AND namespace = ?"
            args.append(namespace)
        sql += " GROUP BY namespace, function ORDER BY namespace, function"
        with self._lock:
            return [tuple(row) for row in self._db.execute(sql, args)]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _minute(epoch: float) -> int:
    return int(epoch // BUCKET_SECONDS) * BUCKET_SECONDS


class Metering:
    """The counters and the pending per-minute sums; `bill` is on the invoke path."""

    def __init__(self, registry: CollectorRegistry, store: UsageSink | None) -> None:
        labels = ["namespace", "function"]
        self.requests = Counter(
            "kubefaas_usage_requests",
            "Invocations the function's runtime answered (billed requests).",
            labels,
            registry=registry,
        )
        self.gb_seconds = Counter(
            "kubefaas_usage_gb_seconds",
            "Memory (GiB) x billed duration (1 ms granularity), in GB-seconds.",
            labels,
            registry=registry,
        )
        self.billed_cold_starts = Counter(
            "kubefaas_usage_cold_starts",
            "Billed invocations that started an instance (a cold start).",
            labels,
            registry=registry,
        )
        self._store = store
        self._children: dict[str, tuple[Counter, Counter, Counter, int]] = {}
        self._pending: dict[tuple[int, str, str], list[int]] = {}
        self._lock = threading.Lock()

    def bill(self, fn: Function, headers: Sequence[tuple[bytes, bytes]], cold_start: bool) -> None:
        """Bill one answered invocation of `fn` from the runtime's response headers."""
        duration = None
        for name, value in headers:
            if len(name) == _DURATION_LENGTH and name.lower() == wire.DURATION_MS:
                duration = value
                break
        if duration is None:
            return
        try:
            billed = billed_milliseconds(duration)
        except ValueError:
            return
        children = self._children.get(fn.key)
        if children is None:
            children = self._children[fn.key] = (
                self.requests.labels(fn.namespace, fn.name),
                self.gb_seconds.labels(fn.namespace, fn.name),
                self.billed_cold_starts.labels(fn.namespace, fn.name),
                mebibytes(fn.spec.memory),
            )
        requests, gb_seconds, cold_starts, memory = children
        mib_ms = memory * billed
        requests.inc()
        gb_seconds.inc(mib_ms / MIB_MS_PER_GB_SECOND)
        if cold_start:
            cold_starts.inc()
        key = (_minute(time.time()), fn.namespace, fn.name)
        with self._lock:
            sums = self._pending.get(key)
            if sums is None:
                sums = self._pending[key] = [0, 0, 0]
            sums[0] += 1
            sums[1] += mib_ms
            sums[2] += cold_start

    def flush(self) -> None:
        """Write the pending sums to the store (no-op without one)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending and self._store is not None:
            try:
                self._store.add([(*key, *sums) for key, sums in pending.items()])  # type: ignore[misc]
            except Exception:
                # Keep the sums for the next flush (a shared store can be briefly away).
                with self._lock:
                    for key, sums in pending.items():
                        mine = self._pending.setdefault(key, [0, 0, 0])
                        for i, value in enumerate(sums):
                            mine[i] += value
                raise

    def usage(self, *, start: float, end: float, namespace: str | None) -> list[dict[str, Any]]:
        """Usage per function over [start, end), minute granularity (see `UsageStore`)."""
        self.flush()
        if self._store is None:
            return []
        return [
            {
                "namespace": ns,
                "function": name,
                "requests": requests,
                "gbSeconds": mib_ms / MIB_MS_PER_GB_SECOND,
                "mibMilliseconds": mib_ms,
                "coldStarts": cold,
            }
            for ns, name, requests, mib_ms, cold in self._store.totals(
                start=start, end=end, namespace=namespace
            )
        ]

    def close(self) -> None:
        self.flush()
        if self._store is not None:
            self._store.close()
