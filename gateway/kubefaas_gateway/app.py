"""`create_app(settings, backend, registry)`: the one place the gateway is put together.

Construction builds the pure parts (tracker, metrics, routes); the lifespan builds what
needs the event loop, in order: the pooled upstream session, the backend, the invoker,
then the background tasks; shutdown reverses it, so no instance outlives the app.

Extension seams:
- `ROUTERS`: FastAPI routers to include (async invoke and admin routers go here);
- `background`: coroutine factories `(state) -> Awaitable[None]` started with the app and
  cancelled at shutdown (local mode passes its autoscaler's loop; cluster mode none, as
  the operator sets replicas there);
- `GatewayApp` hands `/function/...` to the raw `InvokeRoute` before FastAPI's own
  middleware and routing run (they would cost more than the proxy hop, docs/architecture.md,
  "Measured facts");
  everything else is plain FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import Receive, Scope, Send

from kubefaas_gateway import console, proxy
from kubefaas_gateway.auth import Authenticator
from kubefaas_gateway.backends.base import Backend
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.invoker import Invoker
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.observe import attach as attach_observability
from kubefaas_gateway.queue import InvocationQueue, make_queue
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.routers import admin, async_invoke, health, observe, scrape, stats, triggers
from kubefaas_gateway.routers.json_errors import EXCEPTION_HANDLERS
from kubefaas_gateway.routers.sync_invoke import InvokeRoute, is_invoke_path
from kubefaas_gateway.secrets import CachedSecrets, SecretReader, secrets_for
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.signals import ScalingSignals
from kubefaas_gateway.state import BackgroundTask, GatewayState
from kubefaas_gateway.tracker import Tracker
from kubefaas_gateway.triggers.board import TriggerBoard

log = logging.getLogger("kubefaas.gateway")


class GatewayApp(FastAPI):
    """FastAPI with the sync invoke route answered first, as raw ASGI.

    A subclass rather than a middleware: `/function/...` then skips every layer FastAPI
    and Starlette put in front of user middleware (error and telemetry wrappers, body
    limit), which on the hot path cost more than the routing decision itself.
    """

    def __init__(self, *, invoke_route: InvokeRoute, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.invoke_route = invoke_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_invoke_path(scope["path"]):
            await self.invoke_route(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    scrape.router,
    stats.router,
    async_invoke.router,
    admin.router,
    triggers.router,
    observe.router,
)


def create_app(
    settings: Settings,
    backend: Backend,
    registry: FunctionRegistry,
    *,
    tracker: Tracker | None = None,
    background: tuple[BackgroundTask, ...] = (),
    queue: InvocationQueue | None = None,
    secrets: SecretReader | None = None,
) -> FastAPI:
    """The gateway app over `backend`, serving the functions in `registry`.

    `tracker` lets a test drive the clock; `background` are the tasks run beside the app
    (none by default); `queue` replaces the async queue the settings choose (SQLite in
    `state_dir`, or Redis at `redis_url`); `secrets` is where invoke auth and queue triggers
    read Secrets (default: the `secrets_dir` folder, else none).
    """
    tracker = tracker if tracker is not None else Tracker()
    if settings.console_enabled:  # docs/architecture.md, "Console"
        background = (*background, console.record_history)
    signals = ScalingSignals()
    metrics = Metrics(functions=lambda: registry, tracker=tracker, backend=backend, signals=signals)
    if queue is None:
        queue = make_queue(
            state_dir=settings.state_dir,
            redis_url=settings.redis_url,
            record_ttl_seconds=settings.async_record_ttl_seconds,
            redis_prefix=settings.redis_prefix,
        )
    delivery = AsyncDelivery(
        settings=settings,
        registry=registry,
        metrics=AsyncMetrics(metrics.registry),
        queue=queue,
        signals=signals,
    )
    secret_reader = CachedSecrets(
        secrets or secrets_for(settings.secrets_dir), ttl=settings.secret_cache_seconds
    )
    state = GatewayState(
        settings=settings,
        registry=registry,
        backend=backend,
        tracker=tracker,
        metrics=metrics,
        signals=signals,
        delivery=delivery,
        triggers=TriggerBoard(metrics.registry),
        secrets=secret_reader,
        observe=attach_observability(settings, backend, metrics),
        auth=Authenticator(
            default_mode=settings.auth_default,
            secrets=secret_reader,
            session=lambda: state.session,
        ),
    )
    background = (*background, _observability_task)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.session = proxy.create_session(settings)
        try:
            await backend.start(tracker=tracker)
            try:
                state.invoker = _invoker(
                    backend=backend,
                    tracker=tracker,
                    metrics=state.metrics,
                    session=state.session,
                    settings=settings,
                )
                # The async delivery stops before the invoker and backend it runs on.
                await delivery.start(invoker=state.invoker, session=state.session)
                loop = asyncio.get_running_loop()
                state.tasks = [loop.create_task(_supervised(task, state)) for task in background]
                state.ready = True
                yield
            finally:
                state.ready = False
                for task in state.tasks:
                    task.cancel()
                await asyncio.gather(*state.tasks, return_exceptions=True)
                state.tasks = []
                await delivery.stop()
                state.invoker = None
                await backend.stop()
        finally:
            await state.session.close()
            state.session = None

    app = GatewayApp(
        invoke_route=InvokeRoute(state=state),
        title="kubefaas gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.gateway = state
    for router in ROUTERS:
        app.include_router(router)
    if settings.console_enabled:
        app.include_router(console.router)
    return app


# Measured on the warm invoke path (bench/gateway_overhead.py, 64 connections): each
# request holds a few dozen container objects while in flight, so with many in flight the
# default gen-0 threshold (700) fires ~200 collections a second whose survivors climb to
# full collections: 8-10 % of the CPU and most of the p99. At 20,000 collections become
# rare under that load (cycles are still collected, later); freezing what startup created
# keeps the old generations the full collections scan small.
GC_THRESHOLDS = (20_000, 50, 100)


def tune_garbage_collector() -> None:
    """Process-wide GC settings for a gateway process; call once, just before serving."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


def _invoker(**kwargs: Any) -> Invoker:
    """The plain invoker, or the traced one when OTLP export is configured (tracing.py)."""
    settings: Settings = kwargs["settings"]
    if settings.otlp_endpoint:
        from kubefaas_gateway.tracing import TracedInvoker, build_tracer

        return TracedInvoker(tracer=build_tracer(settings), **kwargs)
    return Invoker(**kwargs)


async def _observability_task(state: GatewayState) -> None:
    assert state.observe is not None
    await state.observe.run()


async def _supervised(task: BackgroundTask, state: GatewayState) -> None:
    """Run a background task; a crash is logged, never silently lost."""
    try:
        await task(state)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task %s stopped", getattr(task, "__name__", task))
