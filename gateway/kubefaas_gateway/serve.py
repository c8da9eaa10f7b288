"""Running a gateway app on uvicorn: the one server configuration of both modes.

Local mode (`kubefaas local`) and cluster mode (`kubefaas gateway`) differ only in their
backend and registry; the HTTP server, its event loop, parser and GC tuning are the ones
measured in bench/gateway_overhead.py, so they are set here once.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from kubefaas_gateway.app import tune_garbage_collector
from kubefaas_gateway.http_limits import limited_protocol
from kubefaas_gateway.settings import Settings


def serve(app: FastAPI, settings: Settings, *, sockets: list[socket.socket] | None = None) -> bool:
    """Serve `app` until SIGTERM/SIGINT; True if the server had started.

    With `sockets`, serve on those already-bound listeners (local mode binds first, so a
    busy port is reported before any function is loaded); else on settings.host:port.
    """
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            # httptools with the header, URL and lingering-close limits (http_limits).
            http=limited_protocol(settings, _registry(app)),
            timeout_keep_alive=settings.keepalive_timeout_seconds,
            limit_concurrency=settings.max_connections,
            lifespan="on",
            access_log=False,
            server_header=False,
            # The invoke route sets X-Forwarded-For itself; uvicorn's proxy-header
            # rewriting would cost every request and trusts loopback callers.
            proxy_headers=False,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        )
    )
    tune_garbage_collector()
    server.run(sockets=sockets)
    return bool(server.started)


def _registry(app: FastAPI) -> CollectorRegistry | None:
    """The metrics registry of a gateway app (its refusals are counted there)."""
    state = getattr(app.state, "gateway", None)
    return state.metrics.registry if state is not None else None
