"""FastAPI dependencies for the shared objects: `Annotated[X, Depends(get_x)]` aliases.

Routes declare what they use (`delivery: DeliveryDep`); tests swap any of them with
`app.dependency_overrides[get_x] = ...`. Every one reads the app's `GatewayState`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from kubefaas_gateway.backends.base import Backend
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.errors import NoCapacity
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.signals import ScalingSignals
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


def get_signals(state: StateDep) -> ScalingSignals:
    return state.signals


def get_delivery(state: StateDep) -> AsyncDelivery:
    """The async delivery, once it and the gateway are started (503 before)."""
    delivery = state.delivery
    if not delivery.started or not state.ready:
        raise NoCapacity("async delivery is not started")
    return delivery


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[FunctionRegistry, Depends(get_registry)]
BackendDep = Annotated[Backend, Depends(get_backend)]
TrackerDep = Annotated[Tracker, Depends(get_tracker)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SignalsDep = Annotated[ScalingSignals, Depends(get_signals)]
DeliveryDep = Annotated[AsyncDelivery, Depends(get_delivery)]
