"""The function log store of local mode: what instances printed, kept in SQLite.

See docs/logs.md and docs/architecture.md, "Logs and metering".
The local backend hands every line an instance writes to `append` (instances write JSON
lines: `kubefaas_runtime.logs`); lines are buffered in memory and written in batches by
`flush`, which the observability task calls a few times a second, so the invoke path never
waits on the disk. The store is bounded: past `max_lines` the oldest lines are dropped.
Lines that are not JSON (a subprocess writing to the inherited stderr) are kept too, with
the function and instance the gateway knows, and no invocation id.

Reads (`query`, `attempt_tails`) flush first, so a line an instance wrote before its answer
is readable as soon as the caller has the answer and the output has been relayed.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "function-logs.sqlite3"
DEFAULT_MAX_LINES = 200_000
# Per attempt of an async invocation, `GET /invocations/{id}` shows at most this much.
TAIL_LINES = 50
TAIL_BYTES = 16 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    instance TEXT NOT NULL,
    invocation TEXT,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_function ON lines (namespace, function, seq);
CREATE INDEX IF NOT EXISTS lines_invocation ON lines (invocation, seq);
"""


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    ts: float
    function: str  # ns/name
    instance: str
    invocation: str | None
    line: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "function": self.function,
            "instance": self.instance,
            "invocationId": self.invocation,
            "line": self.line,
        }


class FunctionLogStore:
    """Bounded SQLite store of function output, one row per line."""

    def __init__(self, path: Path, *, max_lines: int = DEFAULT_MAX_LINES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._buffer: list[tuple[float, str, str, str, str | None, str]] = []
        self._max_lines = max_lines

    def append(self, function_key: str, instance: str, lines: list[str]) -> None:
        """Buffer lines an instance of `function_key` (ns/name) wrote (cheap, no I/O)."""
        namespace, _, name = function_key.partition("/")
        now = time.time()
        rows = [
            (now, namespace, name, instance, _invocation_of(line), line) for line in lines if line
        ]
        with self._lock:
            self._buffer.extend(rows)

    def flush(self) -> int:
        """Write the buffered lines in one transaction; drop the oldest past the bound."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO lines (ts, namespace, function, instance, invocation, line) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                batch,
            )
            last = self._db.execute("SELECT MAX(seq) FROM lines").fetchone()[0] or 0
            if last > self._max_lines:
                self._db.execute("DELETE FROM lines WHERE seq <= ?", (last - self._max_lines,))
            self._db.execute("COMMIT")
            return len(batch)

    def query(
        self,
        function_key: str,
        *,
        invocation: str | None = None,
        since: float | None = None,
        after: int | None = None,
        limit: int = 1000,
    ) -> list[LogLine]:
        """Lines of one function, oldest first: of one invocation, newer than `since`
        (epoch seconds), after sequence number `after` (to follow); at most `limit`, the
        newest ones when there are more (the start of a follow is the tail)."""
        self.flush()
        namespace, _, name = function_key.partition("/")
        where = ["namespace = ?", "function = ?"]
        args: list[Any] = [namespace, name]
        if invocation is not None:
            where.append("invocation = ?")
            args.append(invocation)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if after is not None:
            where.append("seq > ?")
            args.append(after)
        sql = (
            "SELECT seq, ts, namespace, function, instance, invocation, line FROM lines "
            f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_row(row) for row in reversed(rows)]

    def attempt_tails(self, invocation: str) -> list[list[str]]:
        """The lines of each attempt of `invocation`, in order (an attempt ends with its
        REPORT line); each bounded to the last TAIL_LINES lines and TAIL_BYTES bytes."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                "SELECT line FROM lines WHERE invocation = ? ORDER BY seq", (invocation,)
            ).fetchall()
        attempts: list[list[str]] = [[]]
        for (line,) in rows:
            attempts[-1].append(line)
            if '"REPORT"' in line:
                attempts.append([])
        if not attempts[-1]:
            attempts.pop()
        return [_bounded(lines) for lines in attempts]

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()


# The runtime writes `"requestId": "<id>"` with json.dumps' default separators; inside a
# string value (a message quoting it) the quotes are escaped, so this cannot match there.
# A search costs a microsecond where parsing every line would cost ten.
_REQUEST_ID = re.compile(r'"requestId": "([^"\\]*)"')


def _invocation_of(line: str) -> str | None:
    if not line.startswith("{"):
        return None
    found = _REQUEST_ID.search(line)
    return found.group(1) if found else None


def _bounded(lines: list[str]) -> list[str]:
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-TAIL_LINES:]):
        size += len(line.encode()) + 1
        if size > TAIL_BYTES:
            break
        kept.append(line)
    kept.reverse()
    return kept


def _row(row: tuple[Any, ...]) -> LogLine:
    seq, ts, namespace, name, instance, invocation, line = row
    return LogLine(
        seq=seq,
        ts=ts,
        function=f"{namespace}/{name}",
        instance=instance,
        invocation=invocation,
        line=line,
    )
