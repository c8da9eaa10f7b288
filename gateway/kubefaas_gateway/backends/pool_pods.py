"""The warm-pool pods a gateway may claim, as its pool-pod watch reports them (pure state;
docs/warm-pool.md, "Specialisation by the gateway"). `backends.pool_claim` claims them."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubefaas.pool import POOL_LABEL
from kubefaas.quantity import mebibytes
from kubefaas_gateway.discovery import runtime_port
from kubefaas_gateway.kube_async import collection_path


@dataclass(frozen=True, slots=True)
class PoolPod:
    uid: str
    namespace: str
    name: str
    runtime: str
    ip: str
    port: int
    memory_mib: int

    @property
    def path(self) -> str:
        return collection_path("v1", "pods", self.namespace, self.name)


def pool_pod_view(obj: Mapping[str, Any]) -> PoolPod | None:
    """A Ready, running pool pod with an address; None for anything else."""
    metadata = obj.get("metadata") or {}
    runtime = (metadata.get("labels") or {}).get(POOL_LABEL)
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    if not runtime or not ready or metadata.get("deletionTimestamp") or not status.get("podIP"):
        return None
    if status.get("phase") != "Running":
        return None
    containers = (obj.get("spec") or {}).get("containers") or [{}]
    limit = ((containers[0].get("resources") or {}).get("limits") or {}).get("memory")
    try:
        memory = mebibytes(str(limit)) if limit else 0
    except ValueError:
        memory = 0
    return PoolPod(
        uid=str(metadata.get("uid")),
        namespace=str(metadata.get("namespace")),
        name=str(metadata.get("name")),
        runtime=str(runtime),
        ip=str(status["podIP"]),
        port=runtime_port(obj),
        memory_mib=memory,
    )


class PoolPods:
    """The Ready pool pods the watch reports, by uid (pure state, fed by the watch)."""

    def __init__(self) -> None:
        self._pods: dict[str, PoolPod] = {}
        self._namespace_of: dict[str, str] = {}

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        view = pool_pod_view(obj) if kind != "DELETED" else None
        if view is None:
            self._pods.pop(uid, None)
        else:
            self._pods[uid] = view

    def resync(self, items: Iterable[Mapping[str, Any]], *, namespace: str | None) -> None:
        for uid, pod in list(self._pods.items()):
            if namespace in (None, pod.namespace):
                del self._pods[uid]
        for obj in items:
            self.event("ADDED", obj)

    def discard(self, uid: str) -> None:
        """Claimed (by us or someone else): not a candidate any more."""
        self._pods.pop(uid, None)

    def candidates(self, namespace: str, runtime: str, *, memory_mib: int) -> list[PoolPod]:
        found = [
            p
            for p in self._pods.values()
            if p.namespace == namespace and p.runtime == runtime and p.memory_mib >= memory_mib
        ]
        random.shuffle(found)  # two gateways rarely start with the same pod
        return found

    def largest(self, namespace: str, runtime: str) -> int | None:
        """The memory of the largest pool pod of `runtime` in `namespace` (None: no pool)."""
        sizes = [
            p.memory_mib
            for p in self._pods.values()
            if p.namespace == namespace and p.runtime == runtime
        ]
        return max(sizes) if sizes else None
