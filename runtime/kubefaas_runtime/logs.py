"""Structured logs on stderr, one JSON object per line, tagged with the invocation id.

Pod logs are read by machines (``kubectl logs``, log shippers) more often than by eyes,
so every line is one JSON object and a multi-line traceback never splits into lines
that lose their context. The current invocation id lives in a ``ContextVar`` that the
server sets around each call; a log-record factory copies it onto every ``logging``
record as ``record.request_id``, so user code that logs through ``logging`` gets the id
for the cost of one ``ContextVar.get`` per record, and user formatters may use
``%(request_id)s``.

Line format::

    {"ts": "2024-05-01T12:00:00.123Z", "level": "INFO", "logger": "kubefaas_runtime",
     "msg": "ready", "function": "ns/name", "instance": "...", "requestId": "...",
     <extra fields>..., "exc": "Traceback ..."}

``function`` and ``instance`` appear once ``set_identity`` ran (``__main__`` does, from
the launch environment); ``requestId`` (the invocation id) only while an invocation is
running; ``exc`` only with exc_info.

What a handler ``print``s is tagged the same way: ``capture_std_streams`` replaces
``sys.stdout`` and ``sys.stderr`` with line writers that turn each complete line into one
JSON object (``logger`` ``stdout`` or ``stderr``). Each invocation ends with one
``REPORT`` line (``report_line``), Lambda's billing summary, which the gateway's metering
agrees with (docs/logs.md).
"""

from __future__ import annotations

import io
import json
import logging
import math
import resource
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any, TextIO

LOGGER_NAME = "kubefaas_runtime"

REQUEST_ID: ContextVar[str | None] = ContextVar("kubefaas_request_id", default=None)
"""Id of the invocation running in the current task or handler thread."""

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is
# emitted as a field of its own (except uvicorn's terminal-coloured copy of the message).
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "taskName", "color_message"}
)

log = logging.getLogger(LOGGER_NAME)

# Who is writing: `ns/name` and the instance id, set once at start (set_identity).
_IDENTITY: dict[str, str] = {}
# The process's real stderr, kept before capture_std_streams replaces sys.stderr.
_REAL_STDERR: TextIO = sys.stderr


def set_identity(*, function: str, instance: str) -> None:
    """Tag every line from now on with the function (``ns/name``) and the instance."""
    _IDENTITY.clear()
    _IDENTITY.update({"function": function, "instance": instance})


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_IDENTITY,
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["requestId"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def install_record_factory() -> None:
    """Tag every `logging` record with the current invocation id (idempotent)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_kubefaas", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    factory._kubefaas = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A stderr handler with the JSON formatter."""
    handler = logging.StreamHandler(stream if stream is not None else _REAL_STDERR)
    handler.setFormatter(JsonFormatter())
    return handler


def setup_runtime_logging() -> None:
    """Send the runtime's and uvicorn's own records to stderr as JSON lines.

    Called by ``__main__`` before the user module is imported. The root logger is left
    alone here so that a module calling ``logging.basicConfig()`` at import time still
    gets its own configuration; see ``adopt_root_logger``.
    """
    install_record_factory()
    handler = json_handler()
    for name in (LOGGER_NAME, "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def adopt_root_logger() -> None:
    """Give the root logger the JSON handler if the user code configured none.

    Called after init. The root level is not changed, so as in plain Python (and on
    Lambda) ``logging.info`` from user code is shown only if the user lowers the level.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(json_handler())


class LineStream(io.TextIOBase):
    """A text stream that writes each complete line to ``target`` as one JSON line.

    Partial lines wait, per thread, for their newline, so concurrent handler threads never
    interleave inside a line; each batch of lines is one ``write`` on the target.
    """

    def __init__(self, target: TextIO, name: str) -> None:
        super().__init__()
        self._target = target
        self._name = name
        self._local = threading.local()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def buffer(self) -> Any:
        """The real stream's bytes layer: what is written there is not tagged."""
        return self._target.buffer

    def write(self, text: str) -> int:
        pending: str = getattr(self._local, "pending", "") + text
        if "\n" not in pending:
            self._local.pending = pending
            return len(text)
        *lines, rest = pending.split("\n")
        self._local.pending = rest
        request_id = REQUEST_ID.get()
        now = _timestamp(time.time())
        out = "".join(self._json(line, request_id, now) for line in lines)
        self._target.write(out)
        self._target.flush()
        return len(text)

    def _json(self, line: str, request_id: str | None, now: str) -> str:
        document: dict[str, Any] = {
            "ts": now,
            "level": "INFO",
            "logger": self._name,
            "msg": line.rstrip("\r"),
            **_IDENTITY,
        }
        if request_id is not None:
            document["requestId"] = request_id
        return json.dumps(document, ensure_ascii=False) + "\n"

    def flush(self) -> None:
        self._target.flush()


def capture_std_streams() -> None:
    """Tag what user code prints (``sys.stdout``/``sys.stderr``) as JSON lines on stderr."""
    if isinstance(sys.stdout, LineStream):
        return
    sys.stdout = LineStream(_REAL_STDERR, "stdout")
    sys.stderr = LineStream(_REAL_STDERR, "stderr")


def billed_milliseconds(duration_ms_text: bytes) -> int:
    """Billed duration: the reported duration rounded up to the whole millisecond.

    Computed from the very text of ``X-Duration-Ms`` so the gateway's metering, which
    reads that header, bills exactly what the REPORT line says.
    """
    return max(1, math.ceil(float(duration_ms_text)))


def max_memory_used_mb() -> int:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def report_line(
    *,
    request_id: str,
    duration_ms_text: bytes,
    memory_mb: int,
    status: int,
    attempt: int,
    init_ms: float | None,
) -> str:
    """The REPORT line that ends one invocation (one JSON object, newline included)."""
    duration = duration_ms_text.decode("ascii")
    billed = billed_milliseconds(duration_ms_text)
    used = max_memory_used_mb()
    message = (
        f"REPORT RequestId: {request_id} Duration: {duration} ms Billed Duration: {billed} ms "
        f"Memory Size: {memory_mb} MB Max Memory Used: {used} MB"
    )
    document: dict[str, Any] = {
        "ts": _timestamp(time.time()),
        "level": "INFO",
        "logger": LOGGER_NAME,
        "msg": message,
        **_IDENTITY,
        "requestId": request_id,
        "type": "REPORT",
        "status": status,
        "attempt": attempt,
        "durationMs": float(duration),
        "billedDurationMs": billed,
        "memorySizeMB": memory_mb,
        "maxMemoryUsedMB": used,
    }
    if init_ms is not None:
        document["initDurationMs"] = init_ms
        document["msg"] = f"{message} Init Duration: {init_ms} ms"
    return json.dumps(document) + "\n"


def write_report(line: str) -> None:
    """Write a REPORT line to the real stderr in one call."""
    _REAL_STDERR.write(line)
    _REAL_STDERR.flush()
