"""Function instances as pods in a Kubernetes cluster: `kubefaas gateway`.

The operator turns each Function into a Deployment whose pods carry
`naming.FUNCTION_LABEL`; this backend only reads what exists and, to activate a function
scaled to zero, raises its Deployment from 0 to 1. It keeps two watches per namespace
scope (every namespace, or each of `KUBEFAAS_NAMESPACES`):

- Functions, feeding the `FunctionRegistry`: added, changed and deleted Functions are
  served, re-read and forgotten; one the Python model rejects is logged and not served.
- Function pods, feeding `discovery.Discovery` (the routing rules live there). New pods
  are probed directly on `GET /healthz` until they answer 200, so a cold start does not
  wait for the kubelet's readiness to reach the API server.

Each watch (`watches.run_watch`) lists first, then watches from the list's
resourceVersion, and lists again when the version expires. `start` returns once every
watch has listed, so the gateway is ready only when it knows its functions and pods.

Activation (`activation.scale_from_zero`): `acquire` for a function with no ready pod
raises its Deployment from 0 to 1, with the read resourceVersion as a precondition, and
never lowers anything; it is the only replica count this gateway writes (the operator
sets every other). All requests waiting for the same function share one such scale-up
and wake together when a pod becomes ready.

Concurrency: everything runs on the gateway's event loop. Watch handlers and probe results
update `Discovery` synchronously (no await between reading and writing its state), so a
request never sees half an update. Waiters sleep on a per-function event that is set and
replaced on every change (a broadcast), then re-check the ready set themselves.

The API server is reached through `kube_async.Kube` (a `KubeClient` unless a test passes a
fake); the rules deciding what is served and routed live in `discovery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from yarl import URL

from kubefaas import limits, naming
from kubefaas.api import Function
from kubefaas.pool import POOL_LABEL
from kubefaas_gateway.backends.activation import (
    ACTIVATION_RECHECK_SECONDS,
    Activation,
    scale_from_zero,
)
from kubefaas_gateway.backends.base import Acquired, Instance
from kubefaas_gateway.backends.pod_logs import OutputSink, PodLogKeeper
from kubefaas_gateway.backends.pool_claim import PoolClaimer, PoolPods
from kubefaas_gateway.backends.pool_sweep import run_sweeper
from kubefaas_gateway.backends.watches import Source, run_watch
from kubefaas_gateway.discovery import Discovery, FunctionMirror, PodInstance, pod_view
from kubefaas_gateway.errors import InvocationTimeout, NoCapacity
from kubefaas_gateway.kube_async import ApiError, Kube, KubeClient, collection_path
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.tracker import Tracker

log = logging.getLogger("kubefaas.gateway.kubernetes")

# How long `start` waits for the first list of every watch.
START_SYNC_TIMEOUT_SECONDS = 60.0
# Probing a new pod starts at `instance_probe_interval_seconds` and slows down by this
# factor up to the maximum: fast during a cold start, cheap for a pod that never comes up.
PROBE_BACKOFF_FACTOR = 1.2
PROBE_MAX_INTERVAL_SECONDS = 0.5
# ... but not during the first seconds, when a cold start's runtime usually comes up: the
# backoff had grown to ~150 ms by the time a loaded node's runtime answered, which the
# caller waited on top (docs/architecture.md, "Cold start"). Each probe is one connection
# to a pod on the node: cheap next to the wait it saves.
FAST_PROBE_SECONDS = 3.0
FAST_PROBE_MAX_INTERVAL_SECONDS = 0.02
PROBE_TIMEOUT_SECONDS = 1.0

POD_SELECTOR = f"{naming.FUNCTION_LABEL},{naming.COMPONENT_LABEL}={naming.FUNCTION_COMPONENT}"


# -- the backend ---------------------------------------------------------------------------


ProbeFn = Callable[[PodInstance], Awaitable[bool]]


class KubernetesBackend:
    """Routes to function pods and activates Deployments (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        registry: FunctionRegistry,
        kube: Kube | None = None,
        probe: ProbeFn | None = None,
    ) -> None:
        """`kube` defaults to a `KubeClient` connected at `start`; `probe` (one health
        check of a pod, True on 200) defaults to `GET http://<podIP>:<port>/healthz`."""
        self._settings = settings
        self._registry = registry
        self._functions = FunctionMirror(registry)
        self._kube = kube
        self._owns_kube = kube is None
        self._probe_once = probe or self._http_probe
        self._http_probing = probe is None
        self._probe_session: aiohttp.ClientSession | None = None
        self._tracker = Tracker()
        self._discovery = Discovery()
        self._activations: dict[str, Activation] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._watches: list[asyncio.Task[None]] = []
        self._stopping = False
        # The warm pool (docs/warm-pool.md): pool pods from one more watch, claimed for an
        # eligible function with no ready instance, beside its activation.
        self.pool = PoolClaimer(pods=PoolPods(), kube=lambda: self._kube, claimed=self._claimed)
        # Set by `observe.attach` when the gateway keeps function logs: ending pods' logs
        # are streamed into it (`pod_logs`, docs/logs.md).
        self.output_sink: OutputSink | None = None
        self._log_keeper: PodLogKeeper | None = None

    @property
    def discovery(self) -> Discovery:
        return self._discovery

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def kube(self) -> Kube | None:
        """The API client once started (invoke auth reads Secrets through it)."""
        return self._kube

    async def start(self, *, tracker: Tracker) -> None:
        """Connect, list Functions and pods, and keep watching them."""
        self._tracker = tracker
        self._stopping = False
        if self._kube is None:
            try:
                self._kube = await KubeClient.connect()
            except Exception as exc:  # the loaders raise several types, all fatal here
                raise RuntimeError(
                    "no Kubernetes API to talk to: not in a pod with a service account, "
                    f"and no usable kubeconfig ($KUBECONFIG or ~/.kube/config): {exc}"
                ) from exc
        if self.output_sink is not None and hasattr(self._kube, "pod_log_lines"):
            self._log_keeper = PodLogKeeper(self._kube, self.output_sink)  # type: ignore[arg-type]
        if self._http_probing:
            self._probe_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, use_dns_cache=False),
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS),
            )
        loop = asyncio.get_running_loop()
        if self._settings.warm_pool:
            sweeper = run_sweeper(lambda: self._kube, self._settings.namespaces)
            self._watches.append(loop.create_task(sweeper))
        synced: list[asyncio.Future[None]] = []
        for source in self._sources():
            first_list: asyncio.Future[None] = loop.create_future()
            synced.append(first_list)
            self._watches.append(loop.create_task(run_watch(self._kube, source, first_list)))
        try:
            async with asyncio.timeout(START_SYNC_TIMEOUT_SECONDS):
                await asyncio.gather(*synced)
        except BaseException as exc:
            for first_list in synced:  # several watches may have failed; one is reported
                if first_list.done() and not first_list.cancelled():
                    first_list.exception()
            await self.stop()
            if isinstance(exc, ApiError):
                raise RuntimeError(
                    f"the gateway cannot read from the Kubernetes API: {exc} (check the "
                    "Function CRD is installed and the gateway's RBAC allows list/watch "
                    "on functions.kubefaas.io and pods)"
                ) from exc
            if isinstance(exc, TimeoutError):
                raise RuntimeError(
                    f"the Kubernetes API did not answer within {START_SYNC_TIMEOUT_SECONDS:g}s"
                ) from exc
            raise
        log.info(
            "watching Functions and function pods in %s: %d function(s)",
            ", ".join(self._settings.namespaces) or "all namespaces",
            len(self._registry),
        )

    async def stop(self) -> None:
        """Cancel watches, probes and scale-ups, release waiters, close the clients."""
        self._stopping = True
        tasks = [*self._watches, *self._probes.values()]
        tasks += [a.task for a in self._activations.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watches = []
        self._probes = {}
        await self.pool.stop()
        if self._log_keeper is not None:
            await self._log_keeper.stop()
            self._log_keeper = None
        for activation in self._activations.values():
            activation.notify()
        if self._probe_session is not None:
            await self._probe_session.close()
            self._probe_session = None
        if self._owns_kube and self._kube is not None:
            await self._kube.close()
            self._kube = None

    def _sources(self) -> list[Source]:
        scopes: list[str | None] = list(self._settings.namespaces) or [None]
        sources = []
        for namespace in scopes:
            sources.append(
                Source(
                    what="Functions",
                    path=collection_path(
                        f"{limits.API_GROUP}/{limits.API_VERSION}", limits.PLURAL, namespace
                    ),
                    namespace=namespace,
                    label_selector=None,
                    resync=functools.partial(self._functions.resync, namespace=namespace),
                    event=self._functions.event,
                )
            )
            sources.append(
                Source(
                    what="function pods",
                    path=collection_path("v1", "pods", namespace),
                    namespace=namespace,
                    label_selector=POD_SELECTOR,
                    resync=functools.partial(self._resync_pods, namespace=namespace),
                    event=self._pod_event,
                )
            )
            if not self._settings.warm_pool:
                continue
            sources.append(
                Source(
                    what="warm pool pods",
                    path=collection_path("v1", "pods", namespace),
                    namespace=namespace,
                    label_selector=POOL_LABEL,
                    resync=functools.partial(self.pool.pods.resync, namespace=namespace),
                    event=self.pool.pods.event,
                )
            )
        return sources

    # -- the invoke path -------------------------------------------------------------------

    async def acquire(self, fn: Function, deadline: float) -> Acquired:
        chosen = self._discovery.choose(fn.key, self._tracker.instance_inflight)
        if chosen is not None:
            return Acquired(chosen, False)
        return await self._wait_for_instance(fn, deadline)

    async def _wait_for_instance(self, fn: Function, deadline: float) -> Acquired:
        """Activate `fn` (shared with every concurrent caller) and wait for a ready pod."""
        key = fn.key
        activation = self._activations.get(key)
        if activation is None:
            activation = self._activations[key] = Activation()
        loop = asyncio.get_running_loop()
        while True:
            chosen = self._discovery.choose(key, self._tracker.instance_inflight)
            if chosen is not None:
                return Acquired(chosen, True)
            if self._stopping:
                raise NoCapacity("the gateway is shutting down")
            if self._settings.warm_pool:
                self.pool.maybe_claim(fn)
            idle = activation.task is None or activation.task.done()
            now = loop.time()
            if (
                idle
                and activation.refused is not None
                and now - activation.refused_at < ACTIVATION_RECHECK_SECONDS
            ):
                raise NoCapacity(activation.refused)
            if idle and now - activation.started >= ACTIVATION_RECHECK_SECONDS:
                activation.refused = None
                activation.started = now
                assert self._kube is not None
                activation.task = loop.create_task(scale_from_zero(self._kube, fn, activation))
            remaining = deadline - time.time()
            if remaining <= 0:
                raise self._not_ready(fn, activation)
            # Woken by a pod becoming ready or the scale-up finishing; otherwise look again
            # after the recheck interval in case the function was scaled back to zero.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    activation.changed.wait(), min(remaining, ACTIVATION_RECHECK_SECONDS)
                )

    def _not_ready(self, fn: Function, activation: Activation) -> Exception:
        if activation.missing:
            return NoCapacity(
                f"function {fn.key} has no Deployment yet (is the kubefaas operator running?)"
            )
        return InvocationTimeout(
            f"no instance of function {fn.key} became ready within its timeout "
            f"({fn.spec.timeout_seconds}s)"
        )

    def evict(self, instance: Instance) -> None:
        changed = self._discovery.evict(instance, time.monotonic())
        if isinstance(instance, PodInstance):
            self._changed(changed, [instance.uid])

    # -- what stats and metrics read --------------------------------------------------

    def instances(self, fn: Function) -> list[Instance]:
        return list(self._discovery.instances(fn.key))

    def ready_count(self, fn: Function) -> int:
        return len(self._discovery.ready(fn.key))

    # -- watches ---------------------------------------------------------------------------

    def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        view = pod_view(obj)
        if view is None:
            return
        if kind == "DELETED":
            changed = self._discovery.delete(view.uid)
        elif kind in ("ADDED", "MODIFIED"):
            if self._log_keeper is not None:
                self._log_keeper.pod_changed(view)
            changed = self._discovery.apply(view, time.monotonic())
        else:
            return
        self._changed(changed, [view.uid])

    def _resync_pods(self, items: list[dict[str, Any]], namespace: str | None) -> None:
        views = [view for view in map(pod_view, items) if view is not None]
        changed = self._discovery.resync(views, time.monotonic(), namespace=namespace)
        self._changed(changed, [*self._probes, *self._discovery.to_probe()])

    def _changed(self, keys: Iterable[str], uids: Iterable[str]) -> None:
        """Wake the waiters of functions whose ready set changed; start or stop probes;
        retire specialised pool pods once a function's own pod is ready."""
        for key in keys:
            activation = self._activations.get(key)
            if activation is not None:
                activation.notify()
            fn = self._registry.get(key)
            if fn is not None:
                self.pool.hand_over(fn, self._discovery, self._tracker.instance_inflight)
        for uid in uids:
            self._sync_probe(uid)

    def _claimed(self, pod: dict[str, Any]) -> None:
        """A pool pod answered its specialisation: route to it now (docs/warm-pool.md)."""
        view = pod_view(pod)
        if view is None:
            return
        now = time.monotonic()
        changed = self._discovery.apply(view, now) | self._discovery.probed(view.uid, now)
        self._changed(changed, [view.uid])

    # -- probing ---------------------------------------------------------------------------

    def _sync_probe(self, uid: str) -> None:
        """Probe pod `uid` exactly while discovery says it needs one."""
        running = self._probes.get(uid)
        wanted = not self._stopping and self._discovery.needs_probe(uid)
        if wanted and running is None:
            instance = self._discovery.instance(uid)
            if instance is not None:
                task = asyncio.get_running_loop().create_task(self._probe(uid, instance))
                self._probes[uid] = task
        elif not wanted and running is not None:
            del self._probes[uid]
            running.cancel()

    async def _probe(self, uid: str, instance: PodInstance) -> None:
        """Probe until the pod answers 200, then route to it (cancelled when moot)."""
        began = time.monotonic()
        interval = self._settings.instance_probe_interval_seconds
        try:
            while not await self._probe_once(instance):
                await asyncio.sleep(interval)
                fast = time.monotonic() - began < FAST_PROBE_SECONDS
                ceiling = FAST_PROBE_MAX_INTERVAL_SECONDS if fast else PROBE_MAX_INTERVAL_SECONDS
                interval = min(interval * PROBE_BACKOFF_FACTOR, max(ceiling, interval))
        finally:
            if self._probes.get(uid) is asyncio.current_task():
                del self._probes[uid]
        log.info(
            "pod %s of %s answered its health probe after %.0f ms",
            instance.id,
            instance.function_key,
            (time.monotonic() - began) * 1000,
        )
        self._changed(self._discovery.probed(uid, time.monotonic()), [uid])

    async def _http_probe(self, instance: PodInstance) -> bool:
        assert self._probe_session is not None
        url = URL.build(scheme="http", host=instance.host, port=instance.port, path="/healthz")
        try:
            async with self._probe_session.get(url) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
