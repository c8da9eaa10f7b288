"""The safety net: every few minutes, compare every Function with its children.

The children watch repairs drift as it happens; this pass catches what a watch can miss
(a child deleted while a stream was reconnecting, a Function left not ready), and picks
up edits of the ConfigMaps users keep their code in (the operator does not watch every
ConfigMap of the cluster). It costs four LIST calls (five with function NetworkPolicies
on) plus a reconcile of only the Functions
that need one, so it is cheap enough to run often. It needs no finalizer, unlike a kopf
timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping
from typing import Any

from kubefaas import limits, naming
from kubefaas.api import InvalidFunction
from kubefaas_operator import reconcile, status
from kubefaas_operator.apply import FUNCTION_GROUP_VERSION, NETWORK_POLICY_GROUP_VERSION
from kubefaas_operator.context import OperatorContext
from kubefaas_operator.handlers.child_events import CHILD_SELECTOR
from kubefaas_operator.kube_sync import cluster, namespaced

logger = logging.getLogger(__name__)

Key = tuple[str, str]


def _collection(context: OperatorContext, group_version: str, plural: str) -> list[str]:
    namespaces = context.config.namespaces
    if not namespaces:
        return [cluster(group_version, plural)]
    return [namespaced(group_version, plural, ns) for ns in namespaces]


def _children(context: OperatorContext, group_version: str, plural: str) -> dict[Key, Any]:
    found: dict[Key, Any] = {}
    for path in _collection(context, group_version, plural):
        for item in context.kube.list_all(path, label_selector=CHILD_SELECTOR):
            parent = reconcile.parent_of(item)
            if parent is not None:
                found[parent] = item
    return found


def why_reconcile(
    context: OperatorContext,
    body: Mapping[str, Any],
    *,
    deployment: Mapping[str, Any] | None,
    service: Mapping[str, Any] | None,
    config_map: Mapping[str, Any] | None,
    network_policy: Mapping[str, Any] | None = None,
) -> str | None:
    """Why this Function needs a reconcile now, or None when all is in line."""
    meta = body.get("metadata", {})
    current = body.get("status") or {}
    ready = status.ready_condition_of(current)
    if ready is None or ready.get("status") != "True":
        return "not ready"
    if current.get("observedGeneration") != meta.get("generation"):
        return "status is behind the spec"
    if deployment is None:
        return "Deployment missing"
    if service is None:
        return "Service missing"
    if context.config.network_policy and network_policy is None:
        return "NetworkPolicy missing"
    try:
        fn = reconcile.parse(body)
    except InvalidFunction:
        return "invalid spec"
    inline = fn.spec.code is not None and fn.spec.code.inline is not None
    if inline and config_map is None:
        return "code ConfigMap missing"
    if fn.spec.code is not None and fn.spec.code.config_map is not None:
        # Nothing watches the user's ConfigMap: its contents are compared here, so an edit
        # rolls the pods within one resync period.
        return "code in a ConfigMap of the user's"
    live = [("Deployment", deployment), ("Service", service)]
    if config_map is not None:
        live.append(("ConfigMap", config_map))
    if network_policy is not None:
        live.append(("NetworkPolicy", network_policy))
    for kind, child in live:
        found = reconcile.child_drift(kind, fn, child, context.config, status=current)
        if found:
            return f"{kind} drifted: {', '.join(found)}"
    return None


def _reconcile(context: OperatorContext, body: Mapping[str, Any]) -> reconcile.Outcome:
    return reconcile.reconcile(context.kube, context.config, body)


def resync_once(context: OperatorContext) -> list[tuple[Key, str]]:
    """One pass; returns the Functions reconciled and why."""
    functions: list[dict[str, Any]] = []
    for path in _collection(context, FUNCTION_GROUP_VERSION, limits.PLURAL):
        functions.extend(context.kube.list_all(path))
    deployments = _children(context, "apps/v1", "deployments")
    services = _children(context, "v1", "services")
    config_maps = _children(context, "v1", "configmaps")
    policies = (
        _children(context, NETWORK_POLICY_GROUP_VERSION, "networkpolicies")
        if context.config.network_policy
        else {}
    )
    done: list[tuple[Key, str]] = []
    for body in functions:
        meta = body.get("metadata", {})
        if meta.get("deletionTimestamp"):
            continue
        key = (str(meta.get("namespace")), str(meta.get("name")))
        own_code = naming.code_config_map_name(key[1])
        code_map = config_maps.get(key)
        if code_map is not None and code_map["metadata"]["name"] != own_code:
            code_map = None
        why = why_reconcile(
            context,
            body,
            deployment=deployments.get(key),
            service=services.get(key),
            config_map=code_map,
            network_policy=policies.get(key),
        )
        if why is None:
            continue
        logger.info("resync: reconciling Function %s/%s: %s", key[0], key[1], why)
        context.observed("resync", functools.partial(_reconcile, context, body))
        done.append((key, why))
    return done


async def run_forever(context: OperatorContext, *, interval: float, stop: asyncio.Event) -> None:
    """Run `resync_once` every `interval` seconds until `stop` is set.

    The pass runs in a thread: the API client blocks.
    """
    while not stop.is_set():
        # asyncio.timeout, not wait_for: wait_for wraps the wait in a new task, which kopf
        # would count as one of its own hung tasks and wait 5 s for at exit.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(resync_once, context)
        except Exception:  # the next pass may well succeed; never kill the operator
            logger.exception("resync pass failed")
