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
     "msg": "ready", "requestId": "...", <extra fields>..., "exc": "Traceback ..."}

``requestId`` appears only while an invocation is running; ``exc`` only with exc_info.
"""

from __future__ import annotations

import json
import logging
import sys
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


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
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
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
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
