"""Pure builder of a Function's NetworkPolicy (docs/architecture.md, "Function network
policies").

One NetworkPolicy ``<name>`` a Function, in its namespace, controlled by it like the
Deployment and the Service: it selects exactly that Function's pods (the Deployment's
selector labels), admits only the release's gateway pods on the runtime port, so nobody
bypasses auth, throttling and the async queue by calling a pod directly, and lets the pods
reach DNS, the gateway (functions call functions through it) and the configured egress
rules. Because the operator creates it next to every Function, it covers every namespace
the operator watches, including the ones nobody listed at install time.

No I/O here (an import-linter contract keeps it so); `apply` sends it, `reconcile` decides
when, `drift` compares it with the live object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from kubefaas import naming, wire
from kubefaas.api import Function
from kubefaas.pool import POOL_COMPONENT
from kubefaas_operator import children
from kubefaas_operator.config import OperatorConfig

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
"""The label the API server puts on every namespace, holding its name."""
GATEWAY_PORT_NAME: Final = "http"
"""The gateway container's port name (charts/kubefaas gateway-deployment.yaml); a named
port resolves on the destination pod, so the gateway's own port number may change."""
DNS_PORT: Final = 53


def gateway_peer(
    gateway_namespace: str | None, gateway_labels: Mapping[str, str]
) -> dict[str, Any]:
    """The gateway pods as a NetworkPolicy peer: in `gateway_namespace` (None: any)."""
    namespaces: dict[str, Any] = (
        {"matchLabels": {NAMESPACE_NAME_LABEL: gateway_namespace}} if gateway_namespace else {}
    )
    return {
        "namespaceSelector": namespaces,
        "podSelector": {"matchLabels": dict(gateway_labels)},
    }


def _spec(
    pod_labels: Mapping[str, str], gateway: dict[str, Any], egress: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Pods with `pod_labels`: ingress from `gateway` on the runtime port; egress DNS, the
    gateway and `egress`."""
    rules: list[dict[str, Any]] = [
        # DNS, wherever the cluster serves it (CoreDNS pods or a node-local cache).
        {
            "ports": [
                {"port": DNS_PORT, "protocol": "UDP"},
                {"port": DNS_PORT, "protocol": "TCP"},
            ]
        },
        {"ports": [{"port": GATEWAY_PORT_NAME, "protocol": "TCP"}], "to": [gateway]},
    ]
    rules.extend(_plain(rule) for rule in egress)
    return {
        "podSelector": {"matchLabels": dict(pod_labels)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "ports": [{"port": wire.RUNTIME_PORT, "protocol": "TCP"}],
                "from": [gateway],
            }
        ],
        "egress": rules,
    }


def build_network_policy(
    fn: Function,
    *,
    gateway_namespace: str | None,
    gateway_labels: Mapping[str, str],
    egress: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The NetworkPolicy of `fn`'s pods: ingress from the gateway only, egress DNS, the
    gateway and `egress` (extra NetworkPolicy egress rules, e.g. ipBlocks)."""
    gateway = gateway_peer(gateway_namespace, gateway_labels)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": fn.name,
            "namespace": fn.namespace,
            "labels": children.function_labels(fn),
            "ownerReferences": [children.owner_reference(fn)],
        },
        "spec": _spec(children.selector_labels(fn), gateway, egress),
    }


POOL_POLICY_NAME: Final = "kubefaas-pool"
POOL_POLICY_LABELS: Final = {
    naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
    naming.COMPONENT_LABEL: POOL_COMPONENT,
}
"""Warm-pool pods of every runtime, claimed ones included until they become function pods
(docs/warm-pool.md, "Security"): the specialisation endpoint takes code."""


def build_pool_network_policy(
    namespace: str,
    *,
    gateway_namespace: str | None,
    gateway_labels: Mapping[str, str],
    egress: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The NetworkPolicy of the warm-pool pods in `namespace`: the function pods' rules."""
    gateway = gateway_peer(gateway_namespace, gateway_labels)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": POOL_POLICY_NAME,
            "namespace": namespace,
            "labels": {**POOL_POLICY_LABELS, children.PART_OF_LABEL: children.PART_OF},
        },
        "spec": _spec(POOL_POLICY_LABELS, gateway, egress),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def for_config(config: OperatorConfig, fn: Function) -> dict[str, Any]:
    """The NetworkPolicy of `fn` with the operator's gateway and egress settings."""
    return build_network_policy(
        fn,
        gateway_namespace=config.gateway_namespace,
        gateway_labels=config.gateway_labels,
        egress=config.function_egress,
    )


def pool_policy_for_config(config: OperatorConfig, namespace: str) -> dict[str, Any]:
    """The warm-pool pods' NetworkPolicy in `namespace` with the operator's settings."""
    return build_pool_network_policy(
        namespace,
        gateway_namespace=config.gateway_namespace,
        gateway_labels=config.gateway_labels,
        egress=config.function_egress,
    )
