"""The gateway's pure warm-pool state: which pool pods may be claimed, and a retired pod is
never routed again (docs/warm-pool.md)."""

from __future__ import annotations

from typing import Any

from kubefaas import naming
from kubefaas.pool import POOL_LABEL, SPECIALISED_LABEL
from kubefaas_gateway.backends.pool_claim import label_path
from kubefaas_gateway.backends.pool_pods import PoolPods, pool_pod_view
from kubefaas_gateway.discovery import Discovery, pod_view


def pool_pod(
    name: str, *, ready: bool = True, memory: str = "256Mi", ns: str = "team-a"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "labels": {POOL_LABEL: "python3.11"},
        },
        "spec": {"containers": [{"name": "function", "resources": {"limits": {"memory": memory}}}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_only_ready_running_pool_pods_with_an_address_are_candidates() -> None:
    view = pool_pod_view(pool_pod("a", memory="512Mi"))
    assert view is not None
    assert (view.runtime, view.ip, view.port, view.memory_mib) == (
        "python3.11",
        "10.0.0.7",
        8080,
        512,
    )
    assert pool_pod_view(pool_pod("b", ready=False)) is None
    terminating = pool_pod("c")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pool_pod_view(terminating) is None
    claimed = pool_pod("d")
    del claimed["metadata"]["labels"][POOL_LABEL]
    assert pool_pod_view(claimed) is None


def test_candidates_match_namespace_runtime_and_size_and_leave_when_claimed() -> None:
    pods = PoolPods()
    pods.resync([pool_pod("small", memory="128Mi"), pool_pod("big", memory="1Gi")], namespace=None)
    pods.event("ADDED", pool_pod("elsewhere", ns="team-b"))
    assert {p.name for p in pods.candidates("team-a", "python3.11", memory_mib=256)} == {"big"}
    assert pods.largest("team-a", "python3.11") == 1024
    assert pods.largest("team-a", "python3.12") is None
    # The claim patch takes the pool label off: the watch reports it as gone.
    relabelled = pool_pod("big")
    del relabelled["metadata"]["labels"][POOL_LABEL]
    pods.event("MODIFIED", relabelled)
    assert pods.candidates("team-a", "python3.11", memory_mib=256) == []
    pods.resync([], namespace="team-a")
    assert [p.name for p in pods.candidates("team-b", "python3.11", memory_mib=0)] == ["elsewhere"]


def test_label_keys_are_json_pointer_escaped() -> None:
    assert label_path("kubefaas.io/pool") == "/metadata/labels/kubefaas.io~1pool"


def function_pod(name: str, *, specialised: bool) -> dict[str, Any]:
    labels = {naming.FUNCTION_LABEL: "hello", naming.COMPONENT_LABEL: naming.FUNCTION_COMPONENT}
    if specialised:
        labels[SPECIALISED_LABEL] = "true"
    return {
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "labels": labels},
        "status": {"phase": "Running", "podIP": "10.0.0.9"},
    }


def test_a_retired_pod_is_never_routed_or_probed_again() -> None:
    discovery = Discovery()
    view = pod_view(function_pod("pool-x", specialised=True))
    assert view is not None
    assert view.specialised
    discovery.apply(view, 1.0)
    assert discovery.probed(view.uid, 1.0) == {"team-a/hello"}
    (instance,) = discovery.ready("team-a/hello")
    assert instance.specialised
    assert discovery.retire(view.uid) == {"team-a/hello"}
    assert discovery.ready("team-a/hello") == []
    assert not discovery.needs_probe(view.uid)
    assert discovery.probed(view.uid, 2.0) == set()
    assert discovery.evict(instance, 2.0) == set()
    assert discovery.ready("team-a/hello") == []
