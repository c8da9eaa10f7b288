"""The log lines of a console test's invocation (docs/console.md, "Test"; docs/logs.md).

A sync test reads the lines the runtime wrote for the answered invocation from the local
mode's function log store; an async test waits (bounded) for its record to finish and reads
each attempt's log tail, as `GET /invocations/{id}` returns them (`observe.with_log_tails`).
The runtime's output reaches the store shortly after the answer, so both wait for the
attempt's REPORT line, at most `LOG_WAIT_SECONDS`. On a cluster the gateway keeps no logs:
the page then says how to read them (`kubefaas logs --cluster`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from kubefaas_gateway.routers.observe import with_log_tails
from kubefaas_gateway.state import GatewayState

LOG_WAIT_SECONDS = 3.0
ASYNC_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05
FINAL = frozenset({"succeeded", "dead", "failed"})


def shown(line: str) -> dict[str, str]:
    """One log line as the page shows it: level, logger and message (the raw line kept)."""
    try:
        data = json.loads(line)
    except ValueError:
        return {"level": "", "logger": "", "msg": line, "raw": line, "type": ""}
    if not isinstance(data, dict):
        return {"level": "", "logger": "", "msg": line, "raw": line, "type": ""}
    return {
        "level": str(data.get("level", "")),
        "logger": str(data.get("logger", "")),
        "msg": str(data.get("msg", line)),
        "raw": line,
        "type": str(data.get("type", "")),
    }


def _ended(lines: list[str]) -> bool:
    return any('"REPORT"' in line for line in lines)


async def sync_logs(state: GatewayState, invocation_id: str) -> list[dict[str, str]] | None:
    """The lines of one answered invocation, None when this gateway keeps no logs."""
    store = state.observe.logs if state.observe is not None else None
    if store is None:
        return None
    give_up = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        tails = await asyncio.to_thread(store.attempt_tails, invocation_id)
        lines = [line for attempt in tails for line in attempt]
        if _ended(lines) or time.monotonic() > give_up:
            return [shown(line) for line in lines]
        await asyncio.sleep(POLL_SECONDS)


async def async_outcome(
    state: GatewayState, invocation_id: str, *, wait_seconds: float = ASYNC_WAIT_SECONDS
) -> dict[str, Any] | None:
    """The record of an async test once it finished (or as it is after `wait_seconds`), each
    attempt with `logs` (shown lines; absent when the gateway keeps no logs)."""
    queue = state.delivery.queue
    keeps_logs = state.observe is not None and state.observe.logs is not None
    give_up = time.monotonic() + wait_seconds
    settled: float | None = None  # when the record was first seen finished (or given up on)
    while True:
        record = await queue.get(invocation_id)
        if record is None:
            return None
        now = time.monotonic()
        if record.status in FINAL or now > give_up:
            settled = now if settled is None else settled
            document = await with_log_tails(record.to_json(), state)
            attempts = [a for a in document.get("attempts") or [] if isinstance(a, dict)]
            logged = all(_ended(a.get("logs") or []) for a in attempts)
            if not keeps_logs or logged or now > settled + LOG_WAIT_SECONDS:
                for attempt in attempts:
                    if "logs" in attempt:
                        attempt["logs"] = [shown(line) for line in attempt["logs"]]
                return document
        await asyncio.sleep(POLL_SECONDS)
