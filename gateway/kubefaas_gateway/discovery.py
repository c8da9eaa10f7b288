"""What the gateway learns from the cluster's watches: pure state, no I/O (docs/architecture.md,
"Components" and "Autoscaling").

`FunctionMirror` keeps the `FunctionRegistry` equal to the valid Function objects (read
with the core's one rule, `kubefaas.objects.function_from_object`); a Function the Python
model rejects is logged (once per generation) and not served.
`Discovery` holds which function pods the gateway may route to.

The Kubernetes backend feeds this module Pod objects from its watch (`pod_view`), the
results of its own health probes (`probed`) and the invoker's connection failures
(`evict`); it reads back which pods are ready per function and which ones to probe. All
the rules live here so they are unit-tested without a cluster:

- An *instance* is a pod of a function (label `naming.FUNCTION_LABEL`) that has an IP,
  is Pending or Running, and is not terminating (no `deletionTimestamp`). Pending is
  included because the pod has its IP, and its container may answer, before the kubelet
  reports Running: a 200 from the runtime itself proves it is up.
- An instance is *ready* (routed to) once the gateway's own `GET /healthz` answered 200,
  or the kubelet reports the pod Ready, whichever comes first. The gateway probes new pods
  itself because the kubelet's readiness only reaches the API server after a readiness
  period plus a status update, which would add directly to every cold start.
- An instance stops being ready when it terminates, is deleted, when the kubelet reports
  Ready=False after having reported True (it is the kubelet's call from then on), or when
  the invoker could not connect to it (`evict`); an evicted pod needs a fresh 200 from
  the probe to be routed again. A container restart (restartCount grows) starts over.

Methods take `now` (monotonic seconds) rather than reading a clock, and return the
function keys whose ready set changed, so the caller knows whom to wake.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubefaas import naming, wire
from kubefaas.api import InvalidFunction
from kubefaas.objects import function_from_object, object_key
from kubefaas.pool import SPECIALISED_LABEL
from kubefaas_gateway.backends.base import Instance, least_inflight
from kubefaas_gateway.registry import FunctionRegistry

log = logging.getLogger("kubefaas.gateway.discovery")

# Phases in which a pod with an IP may be serving (see the module docstring).
LIVE_PHASES = frozenset({"Pending", "Running"})


class Probe(enum.Enum):
    """What the gateway's own health probe last found for a pod."""

    UNKNOWN = "unknown"  # not probed yet, or the container restarted since
    OK = "ok"  # answered 200
    EVICTED = "evicted"  # the invoker could not connect: needs a fresh 200
    RETIRED = "retired"  # a specialised pool pod handed over: never routed again


@dataclass(frozen=True, slots=True)
class PodView:
    """The parts of a Pod that routing depends on."""

    uid: str
    namespace: str
    name: str
    function: str
    ip: str | None
    port: int
    phase: str
    terminating: bool
    kubelet_ready: bool
    restarts: int
    # A claimed warm-pool pod (docs/warm-pool.md): retired once the function's own is ready.
    specialised: bool = False

    @property
    def key(self) -> str:
        """The function's key, `namespace/name`, as the registry and tracker use it."""
        return f"{self.namespace}/{self.function}"

    @property
    def instance_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def candidate(self) -> bool:
        """Could serve: has an IP, is Pending or Running, and is not terminating."""
        return bool(self.ip) and self.phase in LIVE_PHASES and not self.terminating


def pod_view(obj: Mapping[str, Any]) -> PodView | None:
    """Reduce a Pod (as the API sends it) to a `PodView`; None if it is no function pod."""
    metadata = obj.get("metadata") or {}
    function = (metadata.get("labels") or {}).get(naming.FUNCTION_LABEL)
    uid = metadata.get("uid")
    if not function or not uid:
        return None
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    restarts = sum(int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or [])
    return PodView(
        uid=str(uid),
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        function=str(function),
        ip=status.get("podIP") or None,
        port=runtime_port(obj),
        phase=str(status.get("phase") or "Pending"),
        terminating=metadata.get("deletionTimestamp") is not None,
        kubelet_ready=ready,
        restarts=restarts,
        specialised=(metadata.get("labels") or {}).get(SPECIALISED_LABEL) == "true",
    )


def runtime_port(obj: Mapping[str, Any]) -> int:
    """The container port named `http` (what the operator declares), else the runtime
    contract's port (`wire.RUNTIME_PORT`); reading the declared port keeps a custom image that
    declares another one reachable.
    """
    for container in (obj.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == naming.RUNTIME_PORT_NAME and port.get("containerPort"):
                return int(port["containerPort"])
    return wire.RUNTIME_PORT


@dataclass(eq=False)
class PodInstance(Instance):
    """An `Instance` that is a pod; `uid` ties it back to the pod's state."""

    uid: str = ""
    specialised: bool = False


def _instance(view: PodView) -> PodInstance:
    return PodInstance(
        id=view.instance_id,
        function_key=view.key,
        host=view.ip or "",
        port=view.port,
        uid=view.uid,
        specialised=view.specialised,
    )


@dataclass(eq=False, slots=True)
class _PodState:
    view: PodView
    instance: PodInstance
    probe: Probe = Probe.UNKNOWN
    kubelet_was_ready: bool = False

    @property
    def kubelet_dropped(self) -> bool:
        """The kubelet said Ready and now says not: it has taken the pod out."""
        return self.kubelet_was_ready and not self.view.kubelet_ready

    @property
    def routable(self) -> bool:
        if not self.view.candidate or self.kubelet_dropped:
            return False
        if self.probe in (Probe.EVICTED, Probe.RETIRED):
            return False
        return self.probe is Probe.OK or self.view.kubelet_ready

    @property
    def needs_probe(self) -> bool:
        if self.probe is Probe.RETIRED:
            return False
        return self.view.candidate and not self.routable and not self.kubelet_dropped


@dataclass(eq=False)
class _Function:
    pods: dict[str, _PodState] = field(default_factory=dict)  # by uid
    ready: list[PodInstance] = field(default_factory=list)


class Discovery:
    """Every function pod the gateway knows, by function key; see the module docstring."""

    def __init__(self) -> None:
        self._functions: dict[str, _Function] = {}
        self._by_uid: dict[str, _PodState] = {}
        self._turns = itertools.count()

    # -- reads ---------------------------------------------------------------------------

    def ready(self, key: str) -> list[PodInstance]:
        """Ready instances of function `key`, in the order they became ready."""
        function = self._functions.get(key)
        return function.ready if function is not None else []

    def instances(self, key: str) -> list[PodInstance]:
        """Every instance of function `key`: ready or waiting for its first 200."""
        function = self._functions.get(key)
        if function is None:
            return []
        return [state.instance for state in function.pods.values() if state.view.candidate]

    def choose(self, key: str, inflight: Callable[[str], int]) -> PodInstance | None:
        """The least busy ready instance of `key`, or None if none is ready."""
        ready = self.ready(key)
        if not ready:
            return None
        return least_inflight(ready, inflight, next(self._turns))

    def to_probe(self) -> dict[str, PodInstance]:
        """uid -> instance for every pod the gateway should be probing now."""
        return {uid: state.instance for uid, state in self._by_uid.items() if state.needs_probe}

    def needs_probe(self, uid: str) -> bool:
        state = self._by_uid.get(uid)
        return state is not None and state.needs_probe

    def instance(self, uid: str) -> PodInstance | None:
        """The instance of pod `uid`, if the pod is known."""
        state = self._by_uid.get(uid)
        return state.instance if state is not None else None

    def keys(self) -> set[str]:
        return set(self._functions)

    # -- changes -------------------------------------------------------------------------

    def apply(self, view: PodView, now: float) -> set[str]:
        """A pod was added or changed; returns the function keys whose ready set changed."""
        changed: set[str] = set()
        state = self._by_uid.get(view.uid)
        if state is not None and state.view.key != view.key:
            changed |= self.delete(view.uid)  # relabelled to another function
            state = None
        if state is None:
            state = _PodState(view=view, instance=_instance(view))
            self._by_uid[view.uid] = state
            self._functions.setdefault(view.key, _Function()).pods[view.uid] = state
        else:
            if view.restarts > state.view.restarts and state.probe is not Probe.RETIRED:
                # A new container: whatever was known about the old one no longer holds.
                state.probe = Probe.UNKNOWN
                state.kubelet_was_ready = False
            if (view.ip or "") != state.instance.host:
                # The pod got its IP (it never changes after): never routed before, so a
                # new instance object replaces the address-less one.
                changed |= {view.key} if self._unroute(self._functions[view.key], state) else set()
                state.instance = _instance(view)
            state.view = view
        state.kubelet_was_ready = state.kubelet_was_ready or view.kubelet_ready
        return changed | self._settle(state, now)

    def delete(self, uid: str) -> set[str]:
        """A pod is gone; returns the affected function key, if it was routed to."""
        state = self._by_uid.pop(uid, None)
        if state is None:
            return set()
        key = state.view.key
        function = self._functions[key]
        del function.pods[uid]
        changed = self._unroute(function, state)
        if not function.pods:
            del self._functions[key]
        return {key} if changed else set()

    def resync(self, views: Iterable[PodView], now: float, *, namespace: str | None) -> set[str]:
        """Replace what is known (in `namespace`, or everywhere) with a fresh list."""
        fresh = {view.uid: view for view in views}
        changed: set[str] = set()
        for uid, state in list(self._by_uid.items()):
            if uid not in fresh and namespace in (None, state.view.namespace):
                changed |= self.delete(uid)
        for view in fresh.values():
            changed |= self.apply(view, now)
        return changed

    def probed(self, uid: str, now: float) -> set[str]:
        """The gateway's probe of pod `uid` answered 200."""
        state = self._by_uid.get(uid)
        if state is None or state.probe is Probe.RETIRED:
            return set()
        state.probe = Probe.OK
        return self._settle(state, now)

    def evict(self, instance: Instance, now: float) -> set[str]:
        """The invoker could not connect to `instance`: unroute it until a probe passes."""
        if not isinstance(instance, PodInstance):
            return set()
        state = self._by_uid.get(instance.uid)
        if state is None or state.instance is not instance or state.probe is Probe.RETIRED:
            return set()
        state.probe = Probe.EVICTED
        return self._settle(state, now)

    def retire(self, uid: str) -> set[str]:
        """Stop routing to pod `uid` for good (a specialised pool pod handed over)."""
        state = self._by_uid.get(uid)
        if state is None:
            return set()
        state.probe = Probe.RETIRED
        return self._settle(state, 0.0)  # never routable again: `now` is not read

    def _settle(self, state: _PodState, now: float) -> set[str]:
        """Make the ready list agree with the pod's state; report a change."""
        function = self._functions[state.view.key]
        if state.routable:
            if state.instance.ready:
                return set()
            state.instance.ready = True
            state.instance.ready_at = now
            function.ready.append(state.instance)
            return {state.view.key}
        return {state.view.key} if self._unroute(function, state) else set()

    @staticmethod
    def _unroute(function: _Function, state: _PodState) -> bool:
        if not state.instance.ready:
            return False
        state.instance.ready = False
        state.instance.ready_at = None
        function.ready.remove(state.instance)
        return True


# -- Functions: the registry follows the watch --------------------------------------------


class FunctionMirror:
    """Keeps a `FunctionRegistry` equal to the valid Functions the watch reports.

    Replaces a registry entry only when the spec or generation changed, so the operator's
    frequent status updates do not churn the objects readers hold.
    """

    def __init__(self, registry: FunctionRegistry) -> None:
        self._registry = registry
        # key -> generation last reported as invalid, so a rejected Function is logged
        # once per change rather than on every status update.
        self._rejected: dict[str, int | None] = {}

    def put(self, obj: Mapping[str, Any]) -> None:
        key = object_key(obj)
        try:
            fn = function_from_object(obj)
        except InvalidFunction as exc:
            generation = (obj.get("metadata") or {}).get("generation")
            if self._rejected.get(key, -1) != generation:
                log.error("%s; it is not served", exc)
            self._rejected[key] = generation
            if self._registry.remove(key) is not None:
                log.info("function %s is no longer served", key)
            return
        self._rejected.pop(key, None)
        old = self._registry.get(key)
        if (
            old is not None
            and old.spec == fn.spec
            and old.metadata.generation == fn.metadata.generation
        ):
            return
        self._registry.put(fn)
        log.info("function %s %s", key, "updated" if old is not None else "added")

    def delete(self, obj: Mapping[str, Any]) -> None:
        key = object_key(obj)
        self._rejected.pop(key, None)
        if self._registry.remove(key) is not None:
            log.info("function %s removed", key)

    def resync(self, items: Iterable[Mapping[str, Any]], *, namespace: str | None) -> None:
        """A fresh list of the Functions in `namespace` (None: all): forget the others."""
        items = list(items)
        present = {object_key(obj) for obj in items}
        for fn in self._registry:
            if fn.key not in present and namespace in (None, fn.namespace):
                self._registry.remove(fn.key)
                log.info("function %s removed (not in a fresh list)", fn.key)
        for obj in items:
            self.put(obj)

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        if kind == "DELETED":
            self.delete(obj)
        elif kind in ("ADDED", "MODIFIED"):
            self.put(obj)
