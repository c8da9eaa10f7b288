"""The cluster autoscaler: the one writer of function Deployments' replicas.

Every `limits.AUTOSCALER_TICK_SECONDS` it reads every gateway's stats (`gateway_stats`),
runs the pure decider `kubefaas.scaling.decide` per function, sets the function
Deployment's `/scale` and records `status.desiredReplicas` on the Function. See
docs/architecture.md ("Autoscaling").

`run_autoscaler` takes all its I/O as arguments (list the gateways, read one gateway's
stats, list the functions with their Deployments' replica counts, scale, write status), so
the loop is tested with fakes. `FunctionScaler` does the Kubernetes side through the
operator's API door (`kube_sync.Kube`); `run_default_autoscaler` wires both to the
operator's `Kube` and `OperatorConfig`.

Only a Deployment the Function controls (its ownerReference names the Function's uid,
kind and apiVersion) is ever scaled: one that merely has the same name and labels is
someone else's and is left alone.

Racing the gateway's activation (it raises a Deployment from 0 to 1 itself when a request
arrives): replicas are read (with the Deployment's resourceVersion) *before* the stats, and
the scale is written with that resourceVersion. If a gateway activated the function in
between, the write conflicts and is skipped; the next tick sees the pending request and
never decides below it.

When a gateway does not answer, the figures are incomplete and could be too low, so that
tick only scales up: the autoscaler never removes instances on missing data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubefaas import limits, naming
from kubefaas.api import Function, InvalidFunction
from kubefaas.kubeapi import ApiError
from kubefaas.objects import function_from_object, object_key
from kubefaas.provisioned import provisioned_min_scale
from kubefaas.scaling import (
    DEFAULT_TUNING,
    Decision,
    Observation,
    ScalingState,
    Tuning,
    decide,
    initial_state,
)
from kubefaas_operator import trigger_status
from kubefaas_operator.apply import FUNCTION_GROUP_VERSION, function_path
from kubefaas_operator.config import OperatorConfig
from kubefaas_operator.drift import controlled_by
from kubefaas_operator.gateway_stats import (
    STATS_TIMEOUT_SECONDS,
    FunctionStats,
    GatewayFeed,
    ListGateways,
    ReadStats,
    combine,
    read_all,
)
from kubefaas_operator.kube_sync import Kube, cluster, namespaced

log = logging.getLogger(__name__)

# The function Deployments the operator made (children.function_labels): a server-side
# narrowing of the list; ownership (`drift.controlled_by`) decides.
FUNCTION_SELECTOR = f"{naming.COMPONENT_LABEL}={naming.FUNCTION_COMPONENT}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleTarget:
    """A Function and its Deployment's replica counts, read before the stats each tick.

    `resource_version` is the Deployment's, so the scale write fails if anything (the
    gateway's activation) changed it since.
    """

    function: Function
    replicas: int
    ready: int
    resource_version: str | None = None
    desired_replicas: int | None = None
    """The Function's `status.desiredReplicas` as listed, so an unchanged value is not
    written again every tick."""
    trigger_status: tuple[Mapping[str, Any], ...] = ()
    """The Function's `status.triggers` as listed, for the same reason."""


GetFunctions = Callable[[], Awaitable[Sequence[ScaleTarget]]]
# Returns False when the write was refused because the Deployment changed (a conflict).
ScaleDeployment = Callable[[ScaleTarget, int], Awaitable[bool]]
# Records the replicas the autoscaler set (and why) on the Function's status.
WriteStatus = Callable[[Function, int, Decision], Awaitable[None]]
# Records what the gateways last saw of the Function's triggers (`status.triggers`).
WriteTriggerStatus = Callable[[Function, list[dict[str, Any]]], Awaitable[None]]


def observation_for(stats: FunctionStats | None, target: ScaleTarget, now: float) -> Observation:
    """The decider's input for one function from the combined gateway figures."""
    stats = stats or FunctionStats()
    return Observation(
        stable_concurrency=stats.stable_concurrency,
        panic_concurrency=stats.panic_concurrency,
        in_flight=stats.in_flight,
        pending=stats.pending,
        queued=stats.queued,
        ready=target.ready,
        last_activity=None if stats.idle_seconds is None else now - stats.idle_seconds,
    )


async def autoscale_once(
    states: dict[str, ScalingState],
    *,
    list_gateway_endpoints: ListGateways,
    read_stats: ReadStats,
    get_functions: GetFunctions,
    scale_deployment: ScaleDeployment,
    write_status: WriteStatus | None = None,
    write_trigger_status: WriteTriggerStatus | None = None,
    now: Callable[[], float] = time.time,
    tuning: Tuning = DEFAULT_TUNING,
) -> dict[str, Decision]:
    """One tick for every function; updates `states` in place and returns the decisions.

    Order matters (see the module docstring): functions and replicas first, stats second.
    """
    targets = await get_functions()
    endpoints = await list_gateway_endpoints()
    reports, complete = await read_all(endpoints, read_stats)
    if not endpoints:
        # No gateway at all: nothing can have traffic, but nothing can be measured either;
        # hold everything rather than scale to zero on no data.
        complete = False
    combined = combine(reports)
    moment = now()
    decisions: dict[str, Decision] = {}
    for target in targets:
        fn = target.function
        state = states.get(fn.key) or initial_state(moment, replicas=target.replicas)
        observation = observation_for(combined.get(fn.key), target, moment)
        decision = decide(
            state,
            observation,
            moment,
            scaling=fn.spec.scaling,
            tuning=tuning,
            provisioned=provisioned_min_scale(fn.spec.scaling.provisioned, moment),
        )
        replicas = decision.replicas
        if not complete and replicas < target.replicas:
            replicas = target.replicas  # never scale down on partial data
        states[fn.key] = decision.state
        decisions[fn.key] = decision
        if replicas != target.replicas:
            try:
                applied = await scale_deployment(target, replicas)
            except Exception as exc:
                log.warning("scaling %s to %d failed: %s", fn.key, replicas, exc)
                continue
            if applied:
                log.info(
                    "scaled %s from %d to %d (%s)",
                    fn.key,
                    target.replicas,
                    replicas,
                    decision.reason,
                )
            else:
                log.info("%s changed while deciding; deciding again next tick", fn.key)
        if write_status is not None and target.desired_replicas != replicas:
            try:
                await write_status(fn, replicas, decision)
            except Exception as exc:
                log.warning("writing the status of %s failed: %s", fn.key, exc)
        reported = combined.get(fn.key)
        if write_trigger_status is not None and reported is not None and reported.triggers:
            entries = trigger_status.status_entries(reported.triggers)
            if entries != [dict(e) for e in target.trigger_status]:
                try:
                    await write_trigger_status(fn, entries)
                except Exception as exc:
                    log.warning("writing the trigger status of %s failed: %s", fn.key, exc)
    for gone in set(states) - {t.function.key for t in targets}:
        del states[gone]
    return decisions


async def run_autoscaler(
    stop: asyncio.Event,
    *,
    list_gateway_endpoints: ListGateways,
    read_stats: ReadStats,
    get_functions: GetFunctions,
    scale_deployment: ScaleDeployment,
    now: Callable[[], float] = time.time,
    write_status: WriteStatus | None = None,
    write_trigger_status: WriteTriggerStatus | None = None,
    tuning: Tuning = DEFAULT_TUNING,
) -> None:
    """Run `autoscale_once` every tick until `stop` is set; one failing tick is logged and
    the loop goes on (an API server hiccup must not end autoscaling)."""
    states: dict[str, ScalingState] = {}
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        try:
            await autoscale_once(
                states,
                list_gateway_endpoints=list_gateway_endpoints,
                read_stats=read_stats,
                get_functions=get_functions,
                scale_deployment=scale_deployment,
                write_status=write_status,
                write_trigger_status=write_trigger_status,
                now=now,
                tuning=tuning,
            )
        except Exception:
            log.exception("autoscaler tick failed")
        pause = max(0.0, tuning.tick_seconds - (loop.time() - started))
        try:
            async with asyncio.timeout(pause):
                await stop.wait()
        except TimeoutError:
            pass


# -- the Kubernetes side, through the operator's API door -----------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionScaler:
    """Lists the Functions with their Deployments, writes `/scale` and the Function status.

    `namespaces` empty: every namespace (a cluster-wide operator); else only these, as the
    operator's `--namespace` flags say.
    """

    kube: Kube
    namespaces: Sequence[str] = ()

    def _collections(self, group_version: str, plural: str) -> list[str]:
        if not self.namespaces:
            return [cluster(group_version, plural)]
        return [namespaced(group_version, plural, ns) for ns in self.namespaces]

    def _list(self, group_version: str, plural: str, selector: str | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for path in self._collections(group_version, plural):
            items.extend(self.kube.list_all(path, label_selector=selector))
        return items

    async def get_functions(self) -> list[ScaleTarget]:
        """Every valid Function with its Deployment's replicas, in two list calls per tick
        (per watched namespace) whatever the number of functions. A Function without a
        Deployment it controls is skipped: the operator has not created it yet, or the
        Deployment of that name belongs to someone else."""
        listed, deployments = await asyncio.gather(
            asyncio.to_thread(self._list, FUNCTION_GROUP_VERSION, limits.PLURAL, None),
            asyncio.to_thread(self._list, "apps/v1", "deployments", FUNCTION_SELECTOR),
        )
        by_key = {object_key(d): d for d in deployments}
        targets = []
        for doc in listed:
            try:
                fn = function_from_object(doc)
            except InvalidFunction as exc:
                log.debug("skipping an invalid Function: %s", exc)
                continue
            deployment = by_key.get(fn.key)
            if deployment is None or not controlled_by(deployment, fn):
                continue
            status = deployment.get("status") or {}
            desired = (doc.get("status") or {}).get("desiredReplicas")
            listed_triggers = (doc.get("status") or {}).get("triggers")
            targets.append(
                ScaleTarget(
                    function=fn,
                    replicas=int(deployment.get("spec", {}).get("replicas") or 0),
                    ready=int(status.get("readyReplicas") or 0),
                    resource_version=deployment["metadata"].get("resourceVersion"),
                    desired_replicas=desired if isinstance(desired, int) else None,
                    trigger_status=trigger_status.parse(listed_triggers),
                )
            )
        return targets

    async def scale_deployment(self, target: ScaleTarget, replicas: int) -> bool:
        """PUT the Deployment's `/scale` guarded by its resourceVersion; False on conflict."""
        fn = target.function
        path = namespaced("apps/v1", "deployments", fn.namespace, fn.name)
        try:
            await asyncio.to_thread(
                self.kube.replace_scale,
                path,
                replicas=replicas,
                resource_version=target.resource_version,
            )
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        return True

    async def write_status(self, fn: Function, replicas: int, decision: Decision) -> None:
        """Merge-patch `status.desiredReplicas` on the Function (the status subresource)."""
        path = function_path(fn.namespace, fn.name)
        await asyncio.to_thread(self.kube.patch_status, path, {"desiredReplicas": replicas})

    async def write_trigger_status(self, fn: Function, entries: list[dict[str, Any]]) -> None:
        """Merge-patch `status.triggers` and `status.triggersSummary` (docs/triggers.md,
        "Visibility")."""
        path = function_path(fn.namespace, fn.name)
        patch = trigger_status.status_patch(entries)
        await asyncio.to_thread(self.kube.patch_status, path, patch)


async def run_default_autoscaler(
    kube: Kube, config: OperatorConfig, stop: asyncio.Event, **overrides: Any
) -> None:
    """`run_autoscaler` against the cluster `kube` talks to: gateways are the pods matching
    `config.gateway_selector` in `config.gateway_namespace` (None: every namespace), and
    Functions are those of `config.namespaces`. Keyword overrides replace any of
    `run_autoscaler`'s arguments."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=STATS_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        feed = GatewayFeed(
            kube=kube,
            session=session,
            selector=config.gateway_selector,
            namespace=config.gateway_namespace,
            token=config.gateway_stats_token,
        )
        scaler = FunctionScaler(kube=kube, namespaces=config.namespaces)
        wiring: dict[str, Any] = {
            "list_gateway_endpoints": feed.list_gateway_endpoints,
            "read_stats": feed.read_stats,
            "get_functions": scaler.get_functions,
            "scale_deployment": scaler.scale_deployment,
            "write_status": scaler.write_status,
            "write_trigger_status": scaler.write_trigger_status,
        }
        await run_autoscaler(stop, **{**wiring, **overrides})
