"""Keeps the warm pools (docs/warm-pool.md, "Pool Deployments"): one pass every few seconds.

Each pass, for every namespace the pools serve (the watched namespaces, or with a
cluster-wide operator every namespace holding a Function), creates or repairs
``kubefaas-pool-<runtime>`` with ``replicas = size`` (`pool.pool_sizes`) and deletes pool
Deployments no longer wanted (size 0, a runtime gone from the image map, a namespace without
Functions). A loop rather than a watch: pools change only with the operator's settings, and
a claimed pod is replaced by the pool's ReplicaSet, not by the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kubefaas import limits
from kubefaas.pool import POOL_LABEL
from kubefaas_operator.apply import FUNCTION_GROUP_VERSION
from kubefaas_operator.config import OperatorConfig
from kubefaas_operator.kube_sync import Kube, cluster, namespaced
from kubefaas_operator.network_policy import (
    POOL_POLICY_LABELS,
    POOL_POLICY_NAME,
    pool_policy_for_config,
)
from kubefaas_operator.pool import POOL_SELECTOR, build_pool_deployment, pool_drift, pool_sizes

logger = logging.getLogger(__name__)

# The ReplicaSets refill the pools; a pass only picks up new namespaces and repairs edits.
DEFAULT_POOL_SECONDS = 30.0


def pool_namespaces(kube: Kube, config: OperatorConfig) -> list[str]:
    """The watched namespaces, or every namespace with a Function when cluster-wide."""
    if config.namespaces:
        return list(config.namespaces)
    functions = kube.list_all(cluster(FUNCTION_GROUP_VERSION, limits.PLURAL))
    return sorted({str(f["metadata"]["namespace"]) for f in functions})


def _live_pools(kube: Kube, config: OperatorConfig) -> dict[tuple[str, str], dict[str, Any]]:
    paths = (
        [namespaced("apps/v1", "deployments", ns) for ns in config.namespaces]
        if config.namespaces
        else [cluster("apps/v1", "deployments")]
    )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        for item in kube.list_all(path, label_selector=POOL_SELECTOR):
            meta = item["metadata"]
            found[(str(meta["namespace"]), str(meta["name"]))] = item
    return found


def sync_pools_once(kube: Kube, config: OperatorConfig) -> list[str]:
    """One pass; returns what it did (``created ns/name``, ``updated ...``, ``deleted ...``)."""
    settings = config.pool
    live = _live_pools(kube, config)
    wanted: dict[tuple[str, str], dict[str, Any]] = {}
    if settings.enabled:
        sizes = pool_sizes(list(config.runtime_images), settings)
        for namespace in pool_namespaces(kube, config):
            for runtime, replicas in sizes.items():
                deployment = build_pool_deployment(
                    runtime,
                    namespace=namespace,
                    replicas=replicas,
                    settings=settings,
                    image_for_runtime=config.runtime_images,
                )
                wanted[(namespace, deployment["metadata"]["name"])] = deployment
    done: list[str] = []
    for (namespace, name), deployment in wanted.items():
        current = live.get((namespace, name))
        path = namespaced("apps/v1", "deployments", namespace)
        if current is None:
            kube.create(path, deployment)
            done.append(f"created {namespace}/{name}")
        elif drift := pool_drift(current, deployment):
            kube.patch(f"{path}/{name}", {"spec": deployment["spec"]})
            done.append(f"updated {namespace}/{name} ({', '.join(drift)})")
    for (namespace, name), current in live.items():
        if (namespace, name) in wanted or POOL_LABEL not in current["metadata"]["labels"]:
            continue
        kube.delete(namespaced("apps/v1", "deployments", namespace, name))
        done.append(f"deleted {namespace}/{name}")
    done.extend(_sync_pool_policies(kube, config, {ns for ns, _ in wanted}))
    for line in done:
        logger.info("warm pool: %s", line)
    return done


POOL_POLICY_SELECTOR = ",".join(f"{k}={v}" for k, v in POOL_POLICY_LABELS.items())


def _sync_pool_policies(kube: Kube, config: OperatorConfig, namespaces: set[str]) -> list[str]:
    """With function NetworkPolicies on, every namespace with a pool gets the pool pods'
    policy (only gateways may reach a pool pod); elsewhere it is removed."""
    wanted = namespaces if config.network_policy else set()
    paths = (
        [namespaced("networking.k8s.io/v1", "networkpolicies", ns) for ns in config.namespaces]
        if config.namespaces
        else [cluster("networking.k8s.io/v1", "networkpolicies")]
    )
    live: dict[str, dict[str, Any]] = {}
    for path in paths:
        for item in kube.list_all(path, label_selector=POOL_POLICY_SELECTOR):
            if item["metadata"]["name"] == POOL_POLICY_NAME:
                live[str(item["metadata"]["namespace"])] = item
    done: list[str] = []
    for namespace in sorted(wanted):
        policy = pool_policy_for_config(config, namespace)
        path = namespaced("networking.k8s.io/v1", "networkpolicies", namespace)
        current = live.get(namespace)
        if current is None:
            kube.create(path, policy)
            done.append(f"created networkpolicy {namespace}/{POOL_POLICY_NAME}")
        elif current.get("spec") != policy["spec"]:
            kube.patch(f"{path}/{POOL_POLICY_NAME}", {"spec": policy["spec"]})
            done.append(f"updated networkpolicy {namespace}/{POOL_POLICY_NAME}")
    for namespace in sorted(set(live) - wanted):
        kube.delete(
            namespaced("networking.k8s.io/v1", "networkpolicies", namespace, POOL_POLICY_NAME)
        )
        done.append(f"deleted networkpolicy {namespace}/{POOL_POLICY_NAME}")
    return done


async def run_forever(
    kube: Kube, config: OperatorConfig, *, interval: float, stop: asyncio.Event
) -> None:
    """`sync_pools_once` now and then every `interval` seconds, until `stop` is set."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(sync_pools_once, kube, config)
        except Exception:  # the next pass may well succeed; never kill the operator
            logger.exception("warm pool pass failed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
