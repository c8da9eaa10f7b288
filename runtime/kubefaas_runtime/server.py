"""uvicorn around the app, with an of-watchdog style graceful drain on SIGTERM/SIGINT.

Why the drain has three steps: when Kubernetes deletes a pod it sends SIGTERM and, at
the same time, starts removing the pod from Endpoints; gateways learn of the removal a
moment later and keep sending requests until then. So on the first signal:

1. /healthz turns 503 at once (readiness fails, the endpoint goes away) while the
   socket keeps accepting for ``KUBEFAAS_DRAIN_GRACE_SECONDS`` (default 2 s), so
   requests already routed here are still served;
2. then the listening socket closes and idle keep-alive connections are closed;
3. in-flight invocations get up to ``KUBEFAAS_TIMEOUT_SECONDS`` to finish (their own
   deadlines end them by then anyway); how many were left is logged; exit 0.

A second signal skips what is left of the drain. Sync handler calls that overran their
deadline cannot be stopped (see ``execute.py``); if any is still running at exit, the
process leaves with ``os._exit(0)`` rather than wait for it forever.

uvicorn runs with uvloop and httptools, without access log, lifespan, websockets or
proxy-header rewriting: each of those costs time on every request (docs/architecture.md,
"Raw ASGI on the hot paths").
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import sys
import time
from types import FrameType

from kubefaas_runtime.app import RuntimeApp
from kubefaas_runtime.config import Settings
from kubefaas_runtime.lean_uvicorn import Config, Server
from kubefaas_runtime.logs import LOGGER_NAME, adopt_root_logger
from kubefaas_runtime.pool import PoolApp

# docs/warm-pool.md: a generic instance that waits to be specialised into one function.
POOL_ENV = "KUBEFAAS_POOL"

log = logging.getLogger(LOGGER_NAME)

# Longer than the idle timeout of any client pool in front of us (aiohttp's is 15 s), so
# the client closes an idle connection first and never sends a request on a connection
# the runtime is closing at that very moment.
KEEP_ALIVE_SECONDS = 75
# After the runtime's own wait for in-flight calls, how long uvicorn may still take to
# flush and close connections.
_CLOSE_SECONDS = 1


class RuntimeServer(Server):
    """``uvicorn.Server`` whose first exit signal starts a drain instead of a stop."""

    def __init__(self, config: Config, *, app: RuntimeApp | PoolApp, settings: Settings) -> None:
        super().__init__(config)
        self._app = app
        self._settings = settings
        self._drain_signal: int | None = None
        self._drain_started: float | None = None
        self._drain_announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only set flags here, log from on_tick.
        if self._drain_started is None and not self.should_exit:
            self._drain_signal = sig
            self._drain_started = time.monotonic()
            self._app.begin_drain()
            return
        self.should_exit = True
        self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started is not None and not self.should_exit:
            if not self._drain_announced:
                self._drain_announced = True
                log.info(
                    "draining",
                    extra={
                        "signal": self._drain_signal,
                        "graceSeconds": self._settings.drain_grace_seconds,
                        "inflight": self._app.inflight,
                    },
                )
            if time.monotonic() - self._drain_started >= self._settings.drain_grace_seconds:
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting and close idle keep-alive connections (a busy one closes after
        # its response), then wait for in-flight calls ourselves so we can say how many
        # were left; uvicorn's own shutdown then finds little to do.
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        started = time.monotonic()
        left = await self._app.wait_idle(
            seconds=self._settings.timeout_seconds, stop=lambda: self.force_exit
        )
        log.info(
            "drained" if left == 0 else "drain timed out",
            extra={
                "inflightLeft": left,
                "waitedMs": round((time.monotonic() - started) * 1000, 1),
                "forced": self.force_exit,
            },
        )
        await super().shutdown(sockets)
        self._app.close()
        abandoned = self._app.abandoned
        if abandoned:
            log.warning(
                "exiting with timed-out handler calls still running", extra={"abandoned": abandoned}
            )
            logging.shutdown()
            sys.stderr.flush()
            os._exit(0)


def build_server(settings: Settings, app: RuntimeApp | PoolApp) -> RuntimeServer:
    """The uvicorn server for ``app``, configured for speed (see the module docstring)."""
    config = Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        interface="asgi3",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=_CLOSE_SECONDS,
    )
    return RuntimeServer(config, app=app, settings=settings)


def run(settings: Settings) -> None:
    """Serve until drained. Init runs alongside startup so /healthz answers during it."""
    app: RuntimeApp | PoolApp = (
        PoolApp(settings) if os.environ.get(POOL_ENV) == "1" else RuntimeApp(settings)
    )
    server = build_server(settings, app)

    async def main() -> None:
        async def init() -> None:
            await app.initialize()
            adopt_root_logger()
            # What init built (modules, clients, caches) lives as long as the instance:
            # move it out of the cyclic GC's sight so full collections during traffic
            # only walk objects made by invocations.
            gc.collect()
            gc.freeze()

        init_task = asyncio.create_task(init())
        try:
            await server.serve()
        finally:
            if not init_task.done():
                init_task.cancel()

    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(main())
