"""FastAPI dependencies for the shared objects: `Annotated[X, Depends(get_x)]` aliases.

Routes declare what they use (`invoker: InvokerDep`); tests swap any of them with
`app.dependency_overrides[get_x] = ...`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from kubefaas_gateway.backends.base import Backend
from kubefaas_gateway.invoker import Invoker
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.state import GatewayState
from kubefaas_gateway.tracker import Tracker


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_registry(state: StateDep) -> FunctionRegistry:
    return state.registry


def get_backend(state: StateDep) -> Backend:
    return state.backend


def get_tracker(state: StateDep) -> Tracker:
    return state.tracker


def get_metrics(state: StateDep) -> Metrics:
    return state.metrics


def get_invoker(state: StateDep) -> Invoker:
    if state.invoker is None:
        raise HTTPException(status_code=503, detail="the gateway is not started")
    return state.invoker


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[FunctionRegistry, Depends(get_registry)]
BackendDep = Annotated[Backend, Depends(get_backend)]
TrackerDep = Annotated[Tracker, Depends(get_tracker)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
InvokerDep = Annotated[Invoker, Depends(get_invoker)]
