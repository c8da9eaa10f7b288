"""The cluster autoscaler: the one writer of function Deployments' replicas (DESIGN §6).

Every `limits.AUTOSCALER_TICK_SECONDS` it reads `GET /internal/stats` from every gateway pod,
sums the figures per function, runs the pure decider `kubefaas.scaling.decide`, sets the
function Deployment's `/scale` and records `status.desiredReplicas` on the Function.

`run_autoscaler` takes all its I/O as arguments (list the gateways, read one gateway's
stats, list the functions with their Deployments' replica counts, scale, write status), so
the loop is tested with fakes; `default_io` wires those to the Kubernetes API and aiohttp.

How figures from several gateways combine: in-flight, pending and both window averages are
per-gateway shares of one function's load, so they add up (the averages are over the same
windows); the async queue is shared by every gateway, so each reports the same depth and
the largest is taken; the function's idle time is the smallest any gateway reports. Times
cross process boundaries as durations ("idle for 12 s"), never as timestamps, so clock
skew between pods cannot make a function look idle.

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
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubefaas import limits, naming
from kubefaas.api import Function, InvalidFunction, parse_function
from kubefaas.scaling import (
    DEFAULT_TUNING,
    Decision,
    Observation,
    ScalingState,
    Tuning,
    decide,
    initial_state,
)

log = logging.getLogger(__name__)

GATEWAY_SELECTOR = f"{naming.COMPONENT_LABEL}={naming.GATEWAY_COMPONENT}"
# The function Deployments the operator made (builders.function_labels).
FUNCTION_SELECTOR = f"{naming.COMPONENT_LABEL}={naming.FUNCTION_COMPONENT}"
# The chart sets these on the operator so it reads its own release's gateways only.
GATEWAY_NAMESPACE_ENV = "KUBEFAAS_GATEWAY_NAMESPACE"
GATEWAY_SELECTOR_ENV = "KUBEFAAS_GATEWAY_SELECTOR"
STATS_PATH = "/internal/stats"
# A gateway that takes longer than this to answer counts as not answering this tick.
STATS_TIMEOUT_SECONDS = 1.0
DEFAULT_GATEWAY_PORT = 8080


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionStats:
    """One function's figures as one gateway (or the sum of all) reports them."""

    in_flight: int = 0
    pending: int = 0
    stable_concurrency: float = 0.0
    panic_concurrency: float = 0.0
    queued: int = 0
    idle_seconds: float | None = None  # None: no request seen

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FunctionStats:
        """Parse one entry of `/internal/stats`'s `functions` (camelCase, see routers/stats)."""
        idle = doc.get("idleSeconds")
        return cls(
            in_flight=max(0, int(doc.get("inFlight", 0))),
            pending=max(0, int(doc.get("pending", 0))),
            stable_concurrency=max(0.0, float(doc.get("stableConcurrency", 0.0))),
            panic_concurrency=max(0.0, float(doc.get("panicConcurrency", 0.0))),
            queued=max(0, int(doc.get("queued", 0))),
            idle_seconds=None if idle is None else max(0.0, float(idle)),
        )


def parse_stats(doc: Mapping[str, Any]) -> dict[str, FunctionStats]:
    """`/internal/stats` body -> figures per function key; bad entries are skipped."""
    functions = doc.get("functions")
    result: dict[str, FunctionStats] = {}
    if not isinstance(functions, Mapping):
        return result
    for key, entry in functions.items():
        if not isinstance(entry, Mapping):
            continue
        try:
            result[str(key)] = FunctionStats.from_json(entry)
        except (TypeError, ValueError):
            log.warning("ignoring malformed stats for %s: %r", key, entry)
    return result


def combine(reports: Sequence[Mapping[str, FunctionStats]]) -> dict[str, FunctionStats]:
    """Sum several gateways' figures per function (see the module docstring for why)."""
    combined: dict[str, FunctionStats] = {}
    for report in reports:
        for key, stats in report.items():
            seen = combined.get(key)
            if seen is None:
                combined[key] = stats
                continue
            idles = [i for i in (seen.idle_seconds, stats.idle_seconds) if i is not None]
            combined[key] = FunctionStats(
                in_flight=seen.in_flight + stats.in_flight,
                pending=seen.pending + stats.pending,
                stable_concurrency=seen.stable_concurrency + stats.stable_concurrency,
                panic_concurrency=seen.panic_concurrency + stats.panic_concurrency,
                queued=max(seen.queued, stats.queued),
                idle_seconds=min(idles) if idles else None,
            )
    return combined


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


ListGateways = Callable[[], Awaitable[Sequence[str]]]
ReadStats = Callable[[str], Awaitable[Mapping[str, Any]]]
GetFunctions = Callable[[], Awaitable[Sequence[ScaleTarget]]]
# Returns False when the write was refused because the Deployment changed (a conflict).
ScaleDeployment = Callable[[ScaleTarget, int], Awaitable[bool]]
# Records the replicas the autoscaler set (and why) on the Function's status.
WriteStatus = Callable[[Function, int, Decision], Awaitable[None]]


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


async def _read_all(
    endpoints: Sequence[str], read_stats: ReadStats
) -> tuple[list[dict[str, FunctionStats]], bool]:
    """Every gateway's figures, read concurrently; `complete` is False if any failed."""

    async def one(endpoint: str) -> dict[str, FunctionStats] | None:
        try:
            async with asyncio.timeout(STATS_TIMEOUT_SECONDS):
                return parse_stats(await read_stats(endpoint))
        except Exception as exc:  # a gateway restarting must not stop autoscaling
            log.warning("gateway %s did not report stats: %s", endpoint, exc)
            return None

    results = await asyncio.gather(*(one(e) for e in endpoints))
    reports = [r for r in results if r is not None]
    return reports, len(reports) == len(results)


async def autoscale_once(
    states: dict[str, ScalingState],
    *,
    list_gateway_endpoints: ListGateways,
    read_stats: ReadStats,
    get_functions: GetFunctions,
    scale_deployment: ScaleDeployment,
    write_status: WriteStatus | None = None,
    now: Callable[[], float] = time.time,
    tuning: Tuning = DEFAULT_TUNING,
) -> dict[str, Decision]:
    """One tick for every function; updates `states` in place and returns the decisions.

    Order matters (see the module docstring): functions and replicas first, stats second.
    """
    targets = await get_functions()
    endpoints = await list_gateway_endpoints()
    reports, complete = await _read_all(endpoints, read_stats)
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
        decision = decide(state, observation, moment, scaling=fn.spec.scaling, tuning=tuning)
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
        if write_status is not None and (
            fn.status is None or fn.status.desired_replicas != replicas
        ):
            try:
                await write_status(fn, replicas, decision)
            except Exception as exc:
                log.warning("writing the status of %s failed: %s", fn.key, exc)
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


# -- default wiring: the Kubernetes API (sync client, off the event loop) and aiohttp ------


@dataclass(frozen=True, slots=True)
class KubernetesIO:
    """The autoscaler's I/O against a real cluster; pass `io.kwargs()` to `run_autoscaler`.

    `api_client` is a `kubernetes.client.ApiClient` (in-cluster or kubeconfig); `session`
    an `aiohttp.ClientSession` for the gateways' stats.
    """

    api_client: Any
    session: Any
    gateway_selector: str = GATEWAY_SELECTOR
    gateway_namespace: str | None = None  # None: look in every namespace

    def kwargs(self) -> dict[str, Any]:
        return {
            "list_gateway_endpoints": self.list_gateway_endpoints,
            "read_stats": self.read_stats,
            "get_functions": self.get_functions,
            "scale_deployment": self.scale_deployment,
            "write_status": self.write_status,
        }

    async def list_gateway_endpoints(self) -> list[str]:
        """Base URLs of the ready gateway pods."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        if self.gateway_namespace is None:
            pods = await asyncio.to_thread(
                core.list_pod_for_all_namespaces, label_selector=self.gateway_selector
            )
        else:
            pods = await asyncio.to_thread(
                core.list_namespaced_pod,
                self.gateway_namespace,
                label_selector=self.gateway_selector,
            )
        return [url for pod in pods.items if (url := _gateway_url(pod)) is not None]

    async def read_stats(self, endpoint: str) -> Mapping[str, Any]:
        async with self.session.get(endpoint + STATS_PATH) as response:
            response.raise_for_status()
            body: Mapping[str, Any] = await response.json()
            return body

    async def get_functions(self) -> list[ScaleTarget]:
        """Every valid Function with its Deployment's replicas, in two list calls per tick
        whatever the number of functions (a Function without a Deployment yet is skipped:
        the operator has not created it)."""
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api_client)
        apps = client.AppsV1Api(self.api_client)
        listed, deployments = await asyncio.gather(
            asyncio.to_thread(
                custom.list_cluster_custom_object,
                limits.API_GROUP,
                limits.API_VERSION,
                limits.PLURAL,
            ),
            asyncio.to_thread(
                apps.list_deployment_for_all_namespaces, label_selector=FUNCTION_SELECTOR
            ),
        )
        listed_deployments: list[Any] = deployments.items
        by_key = {f"{d.metadata.namespace}/{d.metadata.name}": d for d in listed_deployments}
        items: list[Any] = listed.get("items", []) if isinstance(listed, dict) else []
        targets = []
        for doc in items:
            try:
                fn = parse_function(_api_fields(doc))
            except InvalidFunction as exc:
                log.debug("skipping an invalid Function: %s", exc)
                continue
            deployment = by_key.get(fn.key)
            if deployment is None:
                continue
            status = deployment.status
            targets.append(
                ScaleTarget(
                    function=fn,
                    replicas=deployment.spec.replicas or 0,
                    ready=(status.ready_replicas or 0) if status else 0,
                    resource_version=deployment.metadata.resource_version,
                )
            )
        return targets

    async def scale_deployment(self, target: ScaleTarget, replicas: int) -> bool:
        """PUT the Deployment's `/scale` guarded by its resourceVersion; False on conflict."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        apps = client.AppsV1Api(self.api_client)
        fn = target.function
        body = client.V1Scale(
            api_version="autoscaling/v1",
            kind="Scale",
            metadata=client.V1ObjectMeta(
                name=fn.name, namespace=fn.namespace, resource_version=target.resource_version
            ),
            spec=client.V1ScaleSpec(replicas=replicas),
        )
        try:
            await asyncio.to_thread(
                apps.replace_namespaced_deployment_scale, fn.name, fn.namespace, body
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def write_status(self, fn: Function, replicas: int, decision: Decision) -> None:
        """Merge-patch `status.desiredReplicas` on the Function (the status subresource)."""
        from kubernetes import client

        custom = client.CustomObjectsApi(self.api_client)
        await asyncio.to_thread(
            custom.patch_namespaced_custom_object_status,
            limits.API_GROUP,
            limits.API_VERSION,
            fn.namespace,
            limits.PLURAL,
            fn.name,
            {"status": {"desiredReplicas": replicas}},
        )


def _api_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A listed Function as `parse_function` accepts it: the model refuses unknown
    top-level fields, and status is kept so an unchanged desiredReplicas is not rewritten."""
    keep = ("apiVersion", "kind", "metadata", "spec", "status")
    return {k: v for k, v in doc.items() if k in keep}


def _gateway_url(pod: Any) -> str | None:
    """`http://<pod IP>:<port>` of a Ready gateway pod, else None."""
    status = pod.status
    if status is None or not status.pod_ip or pod.metadata.deletion_timestamp is not None:
        return None
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
    if not ready:
        return None
    port = DEFAULT_GATEWAY_PORT
    for container in pod.spec.containers or []:
        for declared in container.ports or []:
            if declared.name in (None, "http"):
                port = declared.container_port
                break
    host = f"[{status.pod_ip}]" if ":" in status.pod_ip else status.pod_ip
    return f"http://{host}:{port}"


async def run_default_autoscaler(stop: asyncio.Event, **overrides: Any) -> None:
    """`run_autoscaler` against the cluster the operator runs in (in-cluster config, else
    the kubeconfig). Gateways are the pods matching `$KUBEFAAS_GATEWAY_SELECTOR` (default
    `app.kubernetes.io/component=gateway`) in `$KUBEFAAS_GATEWAY_NAMESPACE` (default: every
    namespace). Keyword overrides replace any of `run_autoscaler`'s arguments."""
    import aiohttp
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    timeout = aiohttp.ClientTimeout(total=STATS_TIMEOUT_SECONDS)
    with client.ApiClient() as api_client:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            io = KubernetesIO(
                api_client=api_client,
                session=session,
                gateway_selector=os.environ.get(GATEWAY_SELECTOR_ENV) or GATEWAY_SELECTOR,
                gateway_namespace=os.environ.get(GATEWAY_NAMESPACE_ENV) or None,
            )
            await run_autoscaler(stop, **{**io.kwargs(), **overrides})
