"""The cluster autoscaler's Kubernetes I/O against a real API server (no kubelet).

The gateways' stats are faked (no pod can run here), everything else is real: the
Functions are listed from the API, the Deployment's `/scale` is written with its
resourceVersion, `status.desiredReplicas` lands on the Function, and gateway pods are
found by label once their status says Ready.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from kubefaas import naming
from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_operator.autoscaler import KubernetesIO, ScaleTarget, autoscale_once

CRD = Path(__file__).resolve().parents[2] / "crds" / "function.yaml"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


@pytest.fixture(scope="module")
def crd(kube_api: KubeApi) -> None:
    kube_api.kubectl("apply", "-f", str(CRD))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )


@pytest.fixture
def api_client(kube_api: KubeApi) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(kube_api.kubeconfig)) as api:
        yield api


def apply(kube_api: KubeApi, namespace: str, document: dict[str, Any]) -> None:
    kube_api.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))


def deploy_function(kube_api: KubeApi, namespace: str, name: str, replicas: int) -> None:
    """A Function and the Deployment the operator would have made for it."""
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
    apply(
        kube_api,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
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


async def test_load_scales_the_deployment_and_is_recorded_on_the_function(
    kube_api: KubeApi, crd: None, namespace: str, api_client: client.ApiClient
) -> None:
    deploy_function(kube_api, namespace, "api", replicas=1)
    busy = {"inFlight": 5, "pending": 0, "stableConcurrency": 5.0, "panicConcurrency": 5.0,
            "queued": 0, "idleSeconds": 0.0}  # fmt: skip
    gateways = FakeGateways({f"{namespace}/api": busy})
    io = KubernetesIO(api_client=api_client, session=None)

    async def this_namespace() -> list[ScaleTarget]:
        # The API server is shared by the session: leave other tests' Functions alone.
        return [t for t in await io.get_functions() if t.function.namespace == namespace]

    decisions = await autoscale_once(
        {},
        list_gateway_endpoints=gateways.list_gateway_endpoints,
        read_stats=gateways.read_stats,
        get_functions=this_namespace,
        scale_deployment=io.scale_deployment,
        write_status=io.write_status,
    )

    assert decisions[f"{namespace}/api"].replicas == 5
    assert get(kube_api, namespace, "deployment", "api")["spec"]["replicas"] == 5
    assert get(kube_api, namespace, "function", "api")["status"]["desiredReplicas"] == 5


async def test_a_scale_written_in_between_wins_over_the_stale_decision(
    kube_api: KubeApi, crd: None, namespace: str, api_client: client.ApiClient
) -> None:
    # The autoscaler read replicas 0, then a gateway activated the function (0 -> 1)
    # before the autoscaler wrote its decision: the stale write must not undo it.
    deploy_function(kube_api, namespace, "api", replicas=0)
    io = KubernetesIO(api_client=api_client, session=None)
    (target,) = [t for t in await io.get_functions() if t.function.namespace == namespace]
    assert target.replicas == 0
    kube_api.kubectl("scale", "deployment/api", "--replicas=1", "-n", namespace)

    applied = await io.scale_deployment(target, 0)

    assert applied is False
    assert get(kube_api, namespace, "deployment", "api")["spec"]["replicas"] == 1


async def test_gateway_pods_are_found_by_label_once_ready(
    kube_api: KubeApi, namespace: str, api_client: client.ApiClient
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
    io = KubernetesIO(api_client=api_client, session=None, gateway_namespace=namespace)
    assert await io.list_gateway_endpoints() == []  # not running: no IP, not Ready

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

    assert await io.list_gateway_endpoints() == ["http://10.1.2.3:8080"]
