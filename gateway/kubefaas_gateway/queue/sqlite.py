"""SQLite backend of the async queue: the embedded default (one gateway replica, one file).

Durability. The database runs in WAL mode with `synchronous=FULL`: every commit fsyncs the
write-ahead log before the 202 is sent, so an acknowledged event survives a kill -9 of the
gateway *and* a power cut or kernel crash of its node. `synchronous=NORMAL` (also safe
against a process crash in WAL mode) can lose the last commits on power loss, which would
break the "acknowledged only after it is stored". The fsync cost is shared by
group commit: every operation waiting at the moment runs inside one transaction (each in
its own SAVEPOINT, so one failing operation does not undo the others), and one fsync
acknowledges them all.

Threading. sqlite3 blocks, so one dedicated thread owns the connection and runs every
operation; the event loop only awaits futures. One writer thread also means no lock
contention inside the process (`busy_timeout` covers another process on the same file,
such as a CLI inspecting it).

Persisted format (`PRAGMA user_version` = 1; a newer file is refused, not guessed at):

    invocations                   one row per async invocation
      id TEXT PRIMARY KEY         invocation id (also X-Invocation-Id)
      function TEXT               "namespace/name"
      status TEXT                 queued | running | succeeded | failed | dead
      body BLOB NULL              request body; NULL once succeeded or purged
      headers TEXT                JSON object of forwarded request headers
      query TEXT                  raw query string
      callback_url TEXT NULL      X-Callback-Url of the request
      created_at REAL             epoch seconds of the enqueue
      updated_at REAL
      series INTEGER              0, +1 per redrive
      series_started_at REAL      enqueue or last redrive; max event age counts from here
      visible_at REAL NULL        queued: when it may be leased; running: lease expiry;
                                  NULL when terminal
      lease_token TEXT NULL       token of the live lease (fences stale workers)
      result TEXT NULL            JSON result when <= RESULT_MAX_BYTES
      result_truncated INTEGER    1 when the result was too large to keep
      error TEXT NULL             JSON of the last attempt's error
      dead_reason TEXT NULL, dead_message TEXT NULL, dead_at REAL NULL
      expires_at REAL NULL        terminal records: when they are purged (record TTL)
    attempts                      one row per attempt, kept with the record
      invocation_id TEXT, number INTEGER  (PRIMARY KEY together; number is 1-based)
      series INTEGER, started_at REAL, finished_at REAL NULL
      status TEXT                 running | succeeded | failed | abandoned | expired
      error TEXT NULL             JSON {kind, type, message, statusCode}

Indexes: `invocations_due (function, visible_at) WHERE status IN ('queued','running')`
serves leasing and stats, `invocations_dead (dead_at) WHERE status = 'dead'` the
dead-letter list, `invocations_expiry (expires_at) WHERE expires_at IS NOT NULL` the TTL
sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from kubefaas_gateway.queue.base import (
    ABANDONED_ERROR,
    RECORD_TTL_DEFAULT_SECONDS,
    Attempt,
    AttemptError,
    DeadLetterPage,
    InvocationQueue,
    InvocationRecord,
    Lease,
    NewInvocation,
    QueueStats,
    decode_cursor,
    encode_result,
)

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
log = logging.getLogger("kubefaas.gateway.async")

DB_FILE_NAME: Final = "async-queue.sqlite3"
QUEUE_FILE_MODE: Final = 0o600
# Operations folded into one transaction at most; bounds the latency one fsync adds.
MAX_BATCH: Final = 256
BUSY_TIMEOUT_MS: Final = 10_000

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS invocations (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    status TEXT NOT NULL,
    body BLOB,
    headers TEXT NOT NULL,
    query TEXT NOT NULL,
    callback_url TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    series INTEGER NOT NULL DEFAULT 0,
    series_started_at REAL NOT NULL,
    visible_at REAL,
    lease_token TEXT,
    result TEXT,
    result_truncated INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    dead_reason TEXT,
    dead_message TEXT,
    dead_at REAL,
    expires_at REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS invocations_due ON invocations (function, visible_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS invocations_dead ON invocations (dead_at, id)
    WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS invocations_expiry ON invocations (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    invocation_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    series INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (invocation_id, number)
) WITHOUT ROWID;
"""

_RECORD_COLUMNS: Final = (
    "id, function, status, created_at, updated_at, series, series_started_at, visible_at, "
    "result, result_truncated, error, dead_reason, dead_message, dead_at, callback_url"
)


class _Op:
    __slots__ = ("fn", "future")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.future = future


class SQLiteQueue(InvocationQueue):
    """The queue in one SQLite file, `<state dir>/async-queue.sqlite3`."""

    def __init__(
        self, path: Path, *, record_ttl_seconds: float = RECORD_TTL_DEFAULT_SECONDS
    ) -> None:
        self.path = path
        self.record_ttl_seconds = record_ttl_seconds
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        self._thread_id: int | None = None

    @classmethod
    def in_state_dir(
        cls, state_dir: Path, *, record_ttl_seconds: float = RECORD_TTL_DEFAULT_SECONDS
    ) -> SQLiteQueue:
        return cls(state_dir / DB_FILE_NAME, record_ttl_seconds=record_ttl_seconds)

    # -- plumbing -------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="async-queue")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connect_or_set_aside)

    def _connect_or_set_aside(self) -> None:
        """Open the queue; a file that is not a usable SQLite database (a torn disk, a
        stray file) is moved aside with a log line and a new queue started, so the gateway
        still serves (docs/security.md, failure modes)."""
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            log.error(
                "async queue %s is unreadable (%s): moved aside to %s, starting an empty "
                "queue; the events in it are not delivered",
                self.path,
                exc,
                aside,
            )
            self._connect()

    def _connect(self) -> None:
        self._thread_id = threading.get_ident()
        # Events hold callers' bodies: owner-only, and SQLite gives its -wal and -shm files
        # the database file's mode (docs/security.md).
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, QUEUE_FILE_MODE))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", QUEUE_FILE_MODE)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self.path}: could not switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer kubefaas (queue format {version}, "
                    f"this gateway reads {SCHEMA_VERSION}); upgrade the gateway or use "
                    "another --state-dir"
                )
            conn.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._executor is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the queue's thread, in a transaction shared with its neighbours."""
        if self._executor is None:
            raise RuntimeError("the SQLite queue is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Op(fn, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                assert self._executor is not None
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._apply, batch)
                except BaseException as exc:  # the COMMIT itself failed: nothing is stored
                    for op in batch:
                        if not op.future.done():
                            op.future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for op, (ok, value) in zip(batch, outcomes, strict=True):
                    if op.future.done():  # the caller went away; the work is still stored
                        continue
                    if ok:
                        op.future.set_result(value)
                    else:
                        op.future.set_exception(value)
        finally:
            self._flusher = None

    def _apply(self, batch: list[_Op]) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        outcomes: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = op.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((False, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((True, value))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    # -- the queue --------------------------------------------------------------------

    async def enqueue(self, invocation: NewInvocation, *, now: float) -> None:
        await self._enqueue(invocation, now=now, once=False)

    async def enqueue_once(self, invocation: NewInvocation, *, now: float) -> bool:
        return await self._enqueue(invocation, now=now, once=True)

    async def _enqueue(self, invocation: NewInvocation, *, now: float, once: bool) -> bool:
        headers = json.dumps(dict(invocation.headers), separators=(",", ":"))
        # An idempotent enqueue keeps the row stored first (docs/architecture.md, "Triggers").
        verb = "INSERT OR IGNORE" if once else "INSERT"

        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"{verb} INTO invocations (id, function, status, body, headers, query, "
                "callback_url, created_at, updated_at, series, series_started_at, visible_at) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    invocation.id,
                    invocation.function,
                    invocation.body,
                    headers,
                    invocation.query,
                    invocation.callback_url,
                    now,
                    now,
                    now,
                    now,
                ),
            )
            return cursor.rowcount == 1

        return await self._run(op)

    async def lease(self, function: str, *, now: float, lease_seconds: float) -> Lease | None:
        token = secrets.token_hex(16)

        def op(conn: sqlite3.Connection) -> Lease | None:
            row = conn.execute(
                "SELECT id, status, body, headers, query, callback_url, created_at, series, "
                "series_started_at FROM invocations "
                "WHERE function = ? AND status IN ('queued', 'running') AND visible_at <= ? "
                "ORDER BY visible_at LIMIT 1",
                (function, now),
            ).fetchone()
            if row is None:
                return None
            inv_id, status, body, headers, query, callback_url, created_at, series, started = row
            if status == "running":  # the previous holder's lease ran out
                conn.execute(
                    "UPDATE attempts SET status = 'abandoned', finished_at = ?, error = ? "
                    "WHERE invocation_id = ? AND status = 'running'",
                    (now, json.dumps(ABANDONED_ERROR), inv_id),
                )
            attempts = _load_attempts(conn, inv_id)
            attempt = Attempt(
                number=len(attempts) + 1, series=series, started_at=now, status="running"
            )
            conn.execute(
                "INSERT INTO attempts (invocation_id, number, series, started_at, status) "
                "VALUES (?, ?, ?, ?, 'running')",
                (inv_id, attempt.number, series, now),
            )
            expires = now + lease_seconds
            conn.execute(
                "UPDATE invocations SET status = 'running', visible_at = ?, lease_token = ?, "
                "updated_at = ? WHERE id = ?",
                (expires, token, now, inv_id),
            )
            return Lease(
                id=inv_id,
                function=function,
                token=token,
                body=bytes(body or b""),
                headers=json.loads(headers),
                query=query,
                callback_url=callback_url,
                created_at=created_at,
                series_started_at=started,
                expires_at=expires,
                attempt=attempt,
                previous=tuple(a for a in attempts if a.series == series),
            )

        return await self._run(op)

    def _finish_attempt(
        self,
        conn: sqlite3.Connection,
        lease: Lease,
        *,
        now: float,
        status: str,
        error: dict[str, Any] | None,
    ) -> bool:
        """Close the lease's attempt; False when the lease is no longer this worker's."""
        held = conn.execute(
            "SELECT 1 FROM invocations WHERE id = ? AND status = 'running' AND lease_token = ?",
            (lease.id, lease.token),
        ).fetchone()
        if held is None:
            return False
        conn.execute(
            "UPDATE attempts SET status = ?, finished_at = ?, error = ? "
            "WHERE invocation_id = ? AND number = ?",
            (status, now, _dumps(error), lease.id, lease.attempt.number),
        )
        return True

    async def complete(self, lease: Lease, *, now: float, result: Any) -> InvocationRecord | None:
        text, truncated = encode_result(result)

        def op(conn: sqlite3.Connection) -> InvocationRecord | None:
            if not self._finish_attempt(conn, lease, now=now, status="succeeded", error=None):
                return None
            conn.execute(
                "UPDATE invocations SET status = 'succeeded', body = NULL, visible_at = NULL, "
                "lease_token = NULL, result = ?, result_truncated = ?, error = NULL, "
                "updated_at = ?, expires_at = ? WHERE id = ?",
                (text, int(truncated), now, now + self.record_ttl_seconds, lease.id),
            )
            return _load_record(conn, lease.id)

        return await self._run(op)

    async def retry(self, lease: Lease, *, now: float, error: AttemptError, at: float) -> bool:
        err = error.to_json()

        def op(conn: sqlite3.Connection) -> bool:
            if not self._finish_attempt(conn, lease, now=now, status="failed", error=err):
                return False
            conn.execute(
                "UPDATE invocations SET status = 'queued', visible_at = ?, lease_token = NULL, "
                "error = ?, updated_at = ? WHERE id = ?",
                (at, json.dumps(err), now, lease.id),
            )
            return True

        return await self._run(op)

    async def dead_letter(
        self,
        lease: Lease,
        *,
        now: float,
        error: AttemptError,
        reason: str,
        message: str,
        expired: bool = False,
    ) -> InvocationRecord | None:
        err = error.to_json()
        status = "expired" if expired else "failed"

        def op(conn: sqlite3.Connection) -> InvocationRecord | None:
            if not self._finish_attempt(conn, lease, now=now, status=status, error=err):
                return None
            conn.execute(
                "UPDATE invocations SET status = 'dead', visible_at = NULL, lease_token = NULL, "
                "error = ?, dead_reason = ?, dead_message = ?, dead_at = ?, updated_at = ? "
                "WHERE id = ?",
                (json.dumps(err), reason, message, now, now, lease.id),
            )
            return _load_record(conn, lease.id)

        return await self._run(op)

    async def dead_letter_aged(
        self,
        function: str,
        *,
        started_before: float,
        now: float,
        error: AttemptError,
        reason: str,
        message: str,
    ) -> list[InvocationRecord]:
        err = error.to_json()

        def op(conn: sqlite3.Connection) -> list[InvocationRecord]:
            rows = conn.execute(
                "SELECT id, status, series FROM invocations INDEXED BY invocations_due "
                "WHERE function = ? AND status IN ('queued', 'running') "
                "AND (status = 'queued' OR visible_at <= ?) AND series_started_at < ?",
                (function, now, started_before),
            ).fetchall()
            records = []
            for inv_id, status, series in rows:
                if status == "running":  # the previous holder's lease ran out
                    conn.execute(
                        "UPDATE attempts SET status = 'abandoned', finished_at = ?, error = ? "
                        "WHERE invocation_id = ? AND status = 'running'",
                        (now, json.dumps(ABANDONED_ERROR), inv_id),
                    )
                number = len(_load_attempts(conn, inv_id)) + 1
                conn.execute(
                    "INSERT INTO attempts (invocation_id, number, series, started_at, "
                    "finished_at, status, error) VALUES (?, ?, ?, ?, ?, 'expired', ?)",
                    (inv_id, number, series, now, now, json.dumps(err)),
                )
                conn.execute(
                    "UPDATE invocations SET status = 'dead', visible_at = NULL, "
                    "lease_token = NULL, error = ?, dead_reason = ?, dead_message = ?, "
                    "dead_at = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(err), reason, message, now, now, inv_id),
                )
                record = _load_record(conn, inv_id)
                if record is not None:
                    records.append(record)
            return records

        return await self._run(op)

    async def get(self, invocation_id: str) -> InvocationRecord | None:
        return await self._run(lambda conn: _load_record(conn, invocation_id))

    async def list_dead_letters(
        self, *, function: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> DeadLetterPage:
        offset = decode_cursor(cursor)

        def op(conn: sqlite3.Connection) -> DeadLetterPage:
            where = "status = 'dead'" + (" AND function = ?" if function else "")
            params: tuple[Any, ...] = (function,) if function else ()
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM invocations INDEXED BY invocations_dead WHERE {where} "
                    "ORDER BY dead_at, id LIMIT ? OFFSET ?",
                    (*params, limit + 1, offset),
                )
            ]
            more = len(ids) > limit
            records = [_load_record(conn, i) for i in ids[:limit]]
            return DeadLetterPage(
                items=tuple(r for r in records if r is not None),
                next_cursor=str(offset + limit) if more else None,
            )

        return await self._run(op)

    async def dead_letter_counts(self) -> dict[str, int]:
        def op(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT function, COUNT(*) FROM invocations INDEXED BY invocations_dead "
                "WHERE status = 'dead' GROUP BY function"
            ).fetchall()
            return {fn: int(count) for fn, count in rows}

        return await self._run(op)

    async def redrive(self, invocation_id: str, *, now: float) -> InvocationRecord | None:
        def op(conn: sqlite3.Connection) -> InvocationRecord | None:
            changed = conn.execute(
                "UPDATE invocations SET status = 'queued', series = series + 1, "
                "series_started_at = ?, visible_at = ?, dead_reason = NULL, "
                "dead_message = NULL, dead_at = NULL, error = NULL, updated_at = ? "
                "WHERE id = ? AND status = 'dead'",
                (now, now, now, invocation_id),
            ).rowcount
            return _load_record(conn, invocation_id) if changed else None

        return await self._run(op)

    def _purge_where(
        self, conn: sqlite3.Connection, where: str, params: tuple[Any, ...], now: float
    ) -> int:
        return conn.execute(
            "UPDATE invocations SET status = 'failed', body = NULL, updated_at = ?, "
            f"expires_at = ? WHERE status = 'dead' AND {where}",
            (now, now + self.record_ttl_seconds, *params),
        ).rowcount

    async def purge(self, invocation_id: str, *, now: float) -> bool:
        return bool(
            await self._run(lambda conn: self._purge_where(conn, "id = ?", (invocation_id,), now))
        )

    async def purge_all(self, *, now: float, function: str | None = None) -> int:
        if function is None:
            return await self._run(lambda conn: self._purge_where(conn, "1", (), now))
        return await self._run(
            lambda conn: self._purge_where(conn, "function = ?", (function,), now)
        )

    async def stats(self, *, now: float) -> list[QueueStats]:
        def op(conn: sqlite3.Connection) -> list[QueueStats]:
            rows = conn.execute(
                "SELECT function, "
                "SUM(status = 'queued' OR visible_at <= :now), "
                "SUM(status = 'running' AND visible_at > :now), "
                "MIN(series_started_at) "
                "FROM invocations INDEXED BY invocations_due "
                "WHERE status IN ('queued', 'running') GROUP BY function ORDER BY function",
                {"now": now},
            ).fetchall()
            return [
                QueueStats(
                    function=fn,
                    depth=int(depth),
                    in_flight=int(in_flight),
                    oldest_age_seconds=max(0.0, now - oldest),
                )
                for fn, depth, in_flight, oldest in rows
            ]

        return await self._run(op)

    async def purge_expired(self, *, now: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            conn.execute(
                "DELETE FROM attempts WHERE invocation_id IN "
                "(SELECT id FROM invocations WHERE expires_at <= ?)",
                (now,),
            )
            return conn.execute("DELETE FROM invocations WHERE expires_at <= ?", (now,)).rowcount

        return await self._run(op)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _load_attempts(conn: sqlite3.Connection, invocation_id: str) -> list[Attempt]:
    return [
        Attempt(
            number=number,
            series=series,
            started_at=started,
            finished_at=finished,
            status=status,
            error=None if error is None else json.loads(error),
        )
        for number, series, started, finished, status, error in conn.execute(
            "SELECT number, series, started_at, finished_at, status, error FROM attempts "
            "WHERE invocation_id = ? ORDER BY number",
            (invocation_id,),
        )
    ]


def _load_record(conn: sqlite3.Connection, invocation_id: str) -> InvocationRecord | None:
    row = conn.execute(
        f"SELECT {_RECORD_COLUMNS} FROM invocations WHERE id = ?", (invocation_id,)
    ).fetchone()
    if row is None:
        return None
    (
        inv_id,
        function,
        status,
        created_at,
        updated_at,
        series,
        series_started_at,
        visible_at,
        result,
        truncated,
        error,
        dead_reason,
        dead_message,
        dead_at,
        callback_url,
    ) = row
    return InvocationRecord(
        id=inv_id,
        function=function,
        status=status,
        created_at=created_at,
        updated_at=updated_at,
        series=series,
        series_started_at=series_started_at,
        attempts=tuple(_load_attempts(conn, inv_id)),
        result=None if result is None else json.loads(result),
        result_truncated=bool(truncated),
        error=None if error is None else json.loads(error),
        dead_reason=dead_reason,
        dead_message=dead_message,
        dead_at=dead_at,
        next_attempt_at=visible_at if status == "queued" else None,
        callback_url=callback_url,
    )
