"""The gateway's shared objects, built once by `app.create_app` and kept on `app.state`.

Routes reach them through the dependencies in `dependencies.py`; the raw invoke route
holds the `GatewayState` itself. Objects that need a running event loop (the pooled HTTP
session, the invoker using it, background tasks) are filled in by the app's lifespan and
are None outside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from kubefaas_gateway.auth import Authenticator
from kubefaas_gateway.backends.base import Backend
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.invoker import Invoker
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.observe import Observability
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.secrets import SecretReader
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.signals import ScalingSignals
from kubefaas_gateway.tracker import Tracker
from kubefaas_gateway.triggers.board import TriggerBoard


@dataclass(eq=False)
class GatewayState:
    settings: Settings
    registry: FunctionRegistry
    backend: Backend
    tracker: Tracker
    metrics: Metrics
    signals: ScalingSignals
    delivery: AsyncDelivery
    triggers: TriggerBoard
    auth: Authenticator
    secrets: SecretReader
    observe: Observability | None = None
    # Set while the lifespan runs.
    session: aiohttp.ClientSession | None = None
    invoker: Invoker | None = None
    ready: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


# A coroutine factory started with the app and cancelled at shutdown (`app.create_app`).
BackgroundTask = Callable[[GatewayState], Awaitable[None]]
