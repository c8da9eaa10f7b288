"""Logs and metering put together: `attach(...)` wires them into one gateway.

See docs/logs.md and docs/architecture.md, "Logs and metering".
`create_app` calls `attach` once; it returns an `Observability` holding the function log
store (a backend with an `output_sink`: local instances whose output the gateway captures,
or on a cluster the logs of function pods as they end, `backends.pod_logs`) and the
metering, plus `run`, the background task that flushes both to SQLite in the state dir and
closes them at shutdown. Settings `function_logs` and `metering` (`KUBEFAAS_FUNCTION_LOGS`,
`KUBEFAAS_METERING`) turn either off (the benchmark compares both ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass

from kubefaas_gateway import logstore, metering
from kubefaas_gateway.backends.base import Backend
from kubefaas_gateway.logstore import FunctionLogStore
from kubefaas_gateway.metering import Metering, UsageSink, UsageStore
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.usage_redis import RedisUsageStore

log = logging.getLogger("kubefaas.gateway.observe")

FLUSH_INTERVAL_SECONDS = 0.25
# Usage is written less often than logs: a restart loses at most this much if it is a
# crash (a clean stop flushes).
USAGE_FLUSH_SECONDS = 1.0


@dataclass(eq=False)
class Observability:
    logs: FunctionLogStore | None
    meter: Metering | None

    async def run(self) -> None:
        """Flush logs every FLUSH_INTERVAL_SECONDS and usage every USAGE_FLUSH_SECONDS
        until cancelled; then flush both a last time."""
        loop = asyncio.get_running_loop()
        last_usage = loop.time()
        failing = False  # a store that is down is logged once, with its trace, not each second
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
                try:
                    if self.logs is not None:
                        await asyncio.to_thread(self.logs.flush)
                    if self.meter is not None and loop.time() - last_usage >= USAGE_FLUSH_SECONDS:
                        last_usage = loop.time()
                        await asyncio.to_thread(self.meter.flush)
                except Exception as exc:
                    if not failing:
                        log.exception("could not write function logs or usage (kept for later)")
                    else:
                        log.debug("still cannot write function logs or usage: %s", exc)
                    failing = True
                else:
                    if failing:
                        log.info("function logs and usage are written again")
                    failing = False
        finally:
            self.flush()

    def flush(self) -> None:
        """Write whatever is buffered (called at shutdown)."""
        with contextlib.suppress(Exception):
            if self.logs is not None:
                self.logs.flush()
        with contextlib.suppress(Exception):
            if self.meter is not None:
                self.meter.flush()


def attach(settings: Settings, backend: Backend, metrics: Metrics) -> Observability:
    """Build the log store and metering for one app and hook them in."""
    logs = None
    if settings.function_logs and hasattr(backend, "output_sink"):
        logs = FunctionLogStore(settings.state_dir / logstore.FILE_NAME)
        backend.output_sink = logs.append
    meter = None
    if settings.metering:
        store: UsageSink | None = None
        try:
            if settings.redis_url:
                # Shared by every replica (docs/logs.md, "Usage across replicas").
                store = RedisUsageStore(settings.redis_url, prefix=settings.redis_prefix)
            else:
                store = UsageStore(settings.state_dir / metering.FILE_NAME)
        except (OSError, sqlite3.Error) as exc:
            # Counters still work; only the durable usage API has nothing to read.
            log.warning("usage is not kept: cannot open %s (%s)", settings.state_dir, exc)
        meter = Metering(metrics.registry, store)
        metrics.meter = meter
    return Observability(logs=logs, meter=meter)
