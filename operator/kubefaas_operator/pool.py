"""Pure builders of the warm pools: one Deployment of generic runtime pods per runtime and
watched namespace (docs/warm-pool.md, "Pool Deployments").

A pool Deployment is built by the function Deployment builder (`children.build_deployment`)
from a stand-in Function of the pool's size, then stripped of everything that belongs to a
function: no code volume, no function identity in the env (only ``KUBEFAAS_POOL=1``), no
owner, and the pool's labels instead of a function's. What stays is the function pods' pod:
the runtime image, resources, the restricted security context, no service-account token,
the readiness probe on ``/healthz`` and the drain grace. A unit test keeps the two equal.

The operator writes only ``replicas = size`` on them (no autoscaler); the ReplicaSet refills
the pool when a gateway claims a pod (the claimed pod stops matching the selector).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubefaas import limits, naming
from kubefaas.api import parse_function
from kubefaas.pool import POOL_COMPONENT, POOL_ENV, POOL_LABEL, pool_deployment_name
from kubefaas_operator import children

# The instance's own variables a pool runtime needs (the rest arrives with specialisation).
_INSTANCE_ENV: Final = ("PORT", "TMPDIR")


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    """The chart's ``warmPool`` values (docs/warm-pool.md)."""

    size: int = 0
    """Ready pool pods per runtime and namespace; 0 turns the pools off."""
    max_per_namespace: int = 4
    """All runtimes' pool pods together, per namespace."""
    memory: str = limits.MEMORY_DEFAULT
    """A pool pod's memory (request = limit); larger functions cold start as without a pool."""

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.max_per_namespace > 0


def pool_labels(runtime: str) -> dict[str, str]:
    """Labels on a pool Deployment and its pods (the selector is the first two)."""
    return {
        POOL_LABEL: runtime,
        naming.COMPONENT_LABEL: POOL_COMPONENT,
        naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
        children.PART_OF_LABEL: children.PART_OF,
    }


POOL_SELECTOR: Final = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY},{POOL_LABEL}"
"""Every pool Deployment the operator keeps (to find the ones to delete)."""


def pool_sizes(runtimes: Sequence[str], settings: PoolSettings) -> dict[str, int]:
    """Replicas per runtime in one namespace: `size` each, in name order, until
    `max_per_namespace` is used up; runtimes left with 0 get no pool."""
    sizes: dict[str, int] = {}
    budget = settings.max_per_namespace if settings.enabled else 0
    for runtime in sorted(runtimes):
        count = min(settings.size, budget)
        budget -= count
        if count > 0:
            sizes[runtime] = count
    return sizes


def _stand_in(runtime: str, namespace: str, memory: str) -> Any:
    """A Function of the pool's runtime and size, only to feed the Deployment builder."""
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "pool", "namespace": namespace, "uid": "pool", "generation": 1},
            "spec": {"runtime": runtime, "memory": memory, "code": {"inline": {"main.py": ""}}},
        }
    )


def build_pool_deployment(
    runtime: str,
    *,
    namespace: str,
    replicas: int,
    settings: PoolSettings,
    image_for_runtime: Mapping[str, str],
) -> dict[str, Any]:
    """The Deployment ``kubefaas-pool-<runtime>`` in `namespace` (see the module docstring).
    Raises `children.UnknownRuntimeError` when the runtime has no image."""
    fn = _stand_in(runtime, namespace, settings.memory)
    deployment = copy.deepcopy(
        children.build_deployment(fn, image_for_runtime=image_for_runtime, replicas_hint=replicas)
    )
    labels = pool_labels(runtime)
    deployment["metadata"] = {
        "name": pool_deployment_name(runtime),
        "namespace": namespace,
        "labels": labels,
    }
    spec = deployment["spec"]
    spec["replicas"] = replicas
    selector = {POOL_LABEL: runtime, naming.COMPONENT_LABEL: POOL_COMPONENT}
    spec["selector"] = {"matchLabels": selector}
    template = spec["template"]
    template["metadata"] = {"labels": labels}
    pod = template["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != children.CODE_VOLUME]
    (container,) = pod["containers"]
    container["volumeMounts"] = [
        m for m in container["volumeMounts"] if m["name"] != children.CODE_VOLUME
    ]
    instance = [e for e in container["env"] if e["name"] in _INSTANCE_ENV]
    container["env"] = [*instance, {"name": POOL_ENV, "value": "1"}]
    # A pool pod may become any function of its size: the longest timeout's drain grace.
    pod["terminationGracePeriodSeconds"] = limits.TIMEOUT_MAX + children.DRAIN_GRACE_SECONDS
    return deployment


def pool_drift(live: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """What of a live pool Deployment differs from the wanted one (replicas, template)."""
    found = []
    live_spec, wanted_spec = live.get("spec") or {}, wanted["spec"]
    if live_spec.get("replicas") != wanted_spec["replicas"]:
        found.append("replicas")
    live_pod = (live_spec.get("template") or {}).get("spec") or {}
    (want_container,) = wanted_spec["template"]["spec"]["containers"]
    live_containers = live_pod.get("containers") or [{}]
    live_container = live_containers[0]
    for field in ("image", "env"):
        if live_container.get(field) != want_container[field]:
            found.append(field)
    live_memory = ((live_container.get("resources") or {}).get("limits") or {}).get("memory")
    if live_memory != want_container["resources"]["limits"]["memory"]:
        found.append("memory")
    return found
