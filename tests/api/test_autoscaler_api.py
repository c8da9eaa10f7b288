"""The cluster autoscaler's Kubernetes I/O against a real API server (no kubelet).

The gateways' stats are faked (no pod can run here), everything else is real and goes
through the operator's API door (`kube_sync.RestKube`): the Functions are listed from the
API, only a Deployment the Function owns is scaled, the Deployment's `/scale` is written
with its resourceVersion, `status.desiredReplicas` lands on the Function, and gateway pods
are found by label once their status says Ready.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from kubefaas import naming
from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_operator.autoscaler import FunctionScaler, autoscale_once
from kubefaas_operator.gateway_stats import GatewayFeed
from kubefaas_operator.kube_sync import RestKube

CRD = Path(__file__).resolve().parents[2] / "crds" / "function.yaml"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


@pytest.fixture(scope="module")
def crd(kube_api: KubeApi) -> None:
    kube_api.kubectl("apply", "-f", str(CRD))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )


@pytest.fixture
def kube(kube_api: KubeApi) -> Iterator[RestKube]:
    """The operator's API door, authenticated from the test cluster's kubeconfig."""
    api_client: client.ApiClient = config.new_client_from_config(
        config_file=str(kube_api.kubeconfig)
    )
    door = RestKube(api_client)
    yield door
    door.close()


def apply(kube_api: KubeApi, namespace: str, document: dict[str, Any]) -> None:
    kube_api.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))


def deploy_function(
    kube_api: KubeApi, namespace: str, name: str, replicas: int, *, owned: bool = True
) -> None:
    """A Function and a Deployment of its name and labels: the one the operator would have
    made for it (`owned`: controlled by the Function), or someone else's look-alike."""
    apply(
        kube_api,
        namespace,
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name},
            "spec": {
                "image": "example/fn:1",
                "scaling": {"targetConcurrency": 1, "maxScale": 50},
            },
        },
    )
    labels = {naming.FUNCTION_LABEL: name, naming.COMPONENT_LABEL: naming.FUNCTION_COMPONENT}
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if owned:
        uid = get(kube_api, namespace, "function", name)["metadata"]["uid"]
        metadata["ownerReferences"] = [
            {
                "apiVersion": "kubefaas.io/v1alpha1",
                "kind": "Function",
                "name": name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    apply(
        kube_api,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "fn", "image": PAUSE_IMAGE}]},
                },
            },
        },
    )


def get(kube_api: KubeApi, namespace: str, kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = kube_api.kubectl_json("get", kind, name, "-n", namespace)
    return found


class FakeGateways:
    """One gateway reporting a fixed load for some functions."""

    def __init__(self, functions: Mapping[str, Mapping[str, Any]]) -> None:
        self.functions = functions

    async def list_gateway_endpoints(self) -> Sequence[str]:
        return ["http://10.0.0.1:8080"]

    async def read_stats(self, endpoint: str) -> Mapping[str, Any]:
        return {"gateway": "fake", "time": time.time(), "functions": self.functions}


TICKS_TO_SETTLE = 10
TICK_PAUSE_SECONDS = 0.5
BUSY = {"inFlight": 5, "pending": 0, "stableConcurrency": 5.0, "panicConcurrency": 5.0,
        "queued": 0, "idleSeconds": 0.0}  # fmt: skip


async def tick(scaler: FunctionScaler, gateways: FakeGateways) -> dict[str, Any]:
    decisions: dict[str, Any] = await autoscale_once(
        {},
        list_gateway_endpoints=gateways.list_gateway_endpoints,
        read_stats=gateways.read_stats,
        get_functions=scaler.get_functions,
        scale_deployment=scaler.scale_deployment,
        write_status=scaler.write_status,
    )
    return decisions


async def test_load_scales_the_deployment_and_is_recorded_on_the_function(
    kube_api: KubeApi, crd: None, namespace: str, kube: RestKube
) -> None:
    deploy_function(kube_api, namespace, "api", replicas=1)
    # The API server is shared by the session: this test's namespace only.
    scaler = FunctionScaler(kube=kube, namespaces=[namespace])

    gateways = FakeGateways({f"{namespace}/api": BUSY})

    # The deployment controller writes the new Deployment's status meanwhile, which moves
    # its resourceVersion: a write guarded by the version read just before then conflicts
    # and is retried on the next tick, as in the operator.
    for _ in range(TICKS_TO_SETTLE):
        decisions = await tick(scaler, gateways)
        if get(kube_api, namespace, "deployment", "api")["spec"]["replicas"] != 1:
            break
        await asyncio.sleep(TICK_PAUSE_SECONDS)

    assert decisions[f"{namespace}/api"].replicas == 5
    assert get(kube_api, namespace, "deployment", "api")["spec"]["replicas"] == 5
    assert get(kube_api, namespace, "function", "api")["status"]["desiredReplicas"] == 5


async def test_a_deployment_the_function_does_not_own_is_never_scaled(
    kube_api: KubeApi, crd: None, namespace: str, kube: RestKube
) -> None:
    # Same name, same labels, but no ownerReference to the Function: someone else's.
    deploy_function(kube_api, namespace, "api", replicas=1, owned=False)
    scaler = FunctionScaler(kube=kube, namespaces=[namespace])
    assert await scaler.get_functions() == []

    decisions = await tick(scaler, FakeGateways({f"{namespace}/api": BUSY}))

    assert decisions == {}
    assert get(kube_api, namespace, "deployment", "api")["spec"]["replicas"] == 1
    assert "desiredReplicas" not in (
        get(kube_api, namespace, "function", "api").get("status") or {}
    )


async def test_a_scale_written_in_between_wins_over_the_stale_decision(
    kube_api: KubeApi, crd: None, namespace: str, kube: RestKube
) -> None:
    # The autoscaler read replicas 0, then a gateway activated the function (0 -> 1)
    # before the autoscaler wrote its decision: the stale write must not undo it.
    deploy_function(kube_api, namespace, "api", replicas=0)
    scaler = FunctionScaler(kube=kube, namespaces=[namespace])
    (target,) = await scaler.get_functions()
    assert target.replicas == 0
    kube_api.kubectl("scale", "deployment/api", "--replicas=1", "-n", namespace)

    applied = await scaler.scale_deployment(target, 0)

    assert applied is False
    assert get(kube_api, namespace, "deployment", "api")["spec"]["replicas"] == 1


async def test_gateway_pods_are_found_by_label_once_ready(
    kube_api: KubeApi, namespace: str, kube: RestKube
) -> None:
    labels = {naming.COMPONENT_LABEL: naming.GATEWAY_COMPONENT}
    apply(
        kube_api,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "gateway-0", "labels": labels},
            "spec": {
                "containers": [
                    {
                        "name": "gateway",
                        "image": PAUSE_IMAGE,
                        "ports": [{"name": "http", "containerPort": 8080}],
                    }
                ]
            },
        },
    )
    feed = GatewayFeed(
        kube=kube,
        session=None,
        selector=f"{naming.COMPONENT_LABEL}={naming.GATEWAY_COMPONENT}",
        namespace=namespace,
    )
    assert await feed.list_gateway_endpoints() == []  # not running: no IP, not Ready

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "status": {
            "phase": "Running",
            "podIP": "10.1.2.3",
            "podIPs": [{"ip": "10.1.2.3"}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }
    }
    kube_api.kubectl(
        "patch", "pod", "gateway-0", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip

    assert await feed.list_gateway_endpoints() == ["http://10.1.2.3:8080"]
