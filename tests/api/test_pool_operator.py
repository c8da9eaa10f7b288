"""The operator keeps the warm pools (docs/warm-pool.md, "Pool Deployments") on a real API
server with the controller-manager (no kubelet: pool pods are created, never run)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubefaas import naming
from kubefaas.pool import POOL_LABEL
from kubefaas_cluster.pytest_plugin import KubeApi
from tests.operator_process import OperatorProcess

POOL = "kubefaas-pool-python3-11"
WAIT_SECONDS = 60.0
T = TypeVar("T")


def wait(what: str, check: Callable[[], T | None], operator: OperatorProcess) -> T:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{operator.logs()}", pytrace=False)
        time.sleep(0.25)


def get(kube_api: KubeApi, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kube_api.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def pool_pods(kube_api: KubeApi, ns: str) -> list[dict[str, Any]]:
    found = kube_api.kubectl_json("get", "pods", "-n", ns, "-l", f"{POOL_LABEL}=python3.11")
    return list(found["items"])


def operator(kube_api: KubeApi, ns: str, tmp_path: Path, **env: str) -> OperatorProcess:
    return OperatorProcess(
        kubeconfig=kube_api.kubeconfig,
        log_path=tmp_path / "operator.log",
        namespaces=[ns],
        env={"KUBEFAAS_OPERATOR_RESYNC_SECONDS": "0", **env},
    ).start()


def test_a_pool_is_kept_at_its_size_refilled_when_a_pod_is_claimed_and_deleted_at_size_0(
    kube_api: KubeApi, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    first = operator(kube_api, ns, tmp_path, KUBEFAAS_POOL_SIZE="2", KUBEFAAS_POOL_MEMORY="192Mi")
    try:
        deployment = wait("the pool Deployment", lambda: get(kube_api, ns, "deploy", POOL), first)
        spec = deployment["spec"]
        assert spec["replicas"] == 2
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert {"name": "KUBEFAAS_POOL", "value": "1"} in container["env"]
        assert not any(e["name"].startswith("KUBEFAAS_FUNCTION") for e in container["env"])
        assert pod["automountServiceAccountToken"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["limits"]["memory"] == "192Mi"
        assert all(v["name"] != "code" for v in pod["volumes"])
        labels = spec["template"]["metadata"]["labels"]
        assert labels[POOL_LABEL] == "python3.11"
        assert naming.FUNCTION_LABEL not in labels

        # The Deployment controller made the pods (no kubelet runs them here).
        pods = wait("2 pool pods", lambda: len(p := pool_pods(kube_api, ns)) == 2 and p, first)
        # A gateway's claim takes the pool label off a pod: the ReplicaSet lets it go and
        # makes a new one, so the pool is full again.
        claimed = pods[0]["metadata"]["name"]
        kube_api.kubectl(
            "label", "pod", claimed, "-n", ns, f"{POOL_LABEL}-",
            f"{naming.FUNCTION_LABEL}=somebody",
        )  # fmt: skip
        wait(
            "the pool refilled",
            lambda: (
                {p["metadata"]["name"] for p in pool_pods(kube_api, ns)} - {claimed}
                and len(pool_pods(kube_api, ns)) == 2
            ),
            first,
        )
        # Someone scales the pool by hand: the operator sets it back to its size.
        kube_api.kubectl("scale", "deploy", POOL, "-n", ns, "--replicas=5")
        wait(
            "the size restored",
            lambda: (d := get(kube_api, ns, "deploy", POOL)) and d["spec"]["replicas"] == 2,
            first,
        )
    finally:
        first.stop()

    off = operator(kube_api, ns, tmp_path, KUBEFAAS_POOL_SIZE="0")
    try:
        wait("the pool deleted", lambda: get(kube_api, ns, "deploy", POOL) is None or None, off)
        assert "deleted" in off.logs()
    finally:
        off.stop()


def test_size_0_creates_no_pool(kube_api: KubeApi, namespace: str, tmp_path: Path) -> None:
    crd = Path(__file__).resolve().parents[2] / "crds" / "function.yaml"
    kube_api.kubectl("apply", "-f", str(crd))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )
    off = operator(kube_api, namespace, tmp_path)
    try:
        function = {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "plain", "namespace": namespace},
            "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1\n"}}},
        }
        kube_api.apply(json.dumps(function))
        # The pool pass runs before kopf starts: once a Function is reconciled it has run.
        wait("the Function's Deployment", lambda: get(kube_api, namespace, "deploy", "plain"), off)
        pools = kube_api.kubectl_json("get", "deploy", "-n", namespace, "-l", POOL_LABEL)
        assert pools["items"] == []
    finally:
        off.stop()


def test_with_network_policies_on_only_gateways_may_reach_pool_pods(
    kube_api: KubeApi, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    env = {
        "KUBEFAAS_POOL_SIZE": "1",
        "KUBEFAAS_FUNCTION_NETWORK_POLICY": "true",
        "KUBEFAAS_GATEWAY_NAMESPACE": "kubefaas-system",
    }
    first = operator(kube_api, ns, tmp_path, **env)
    try:
        policy = wait(
            "the pool pods' NetworkPolicy",
            lambda: get(kube_api, ns, "networkpolicy", "kubefaas-pool"),
            first,
        )
        selector = policy["spec"]["podSelector"]["matchLabels"]
        wait("a pool pod", lambda: pool_pods(kube_api, ns), first)
        # It selects the pool's pods (claimed ones too: they keep the component label).
        pod_labels = pool_pods(kube_api, ns)[0]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert POOL_LABEL not in selector
        [rule] = policy["spec"]["ingress"]
        [peer] = rule["from"]
        assert peer["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": "kubefaas-system"}
        }
        assert peer["podSelector"]["matchLabels"]
        # A hand edit that opens it is undone on the next pass.
        kube_api.kubectl(
            "patch", "networkpolicy", "kubefaas-pool", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"ingress": [{}]}}),
        )  # fmt: skip
    finally:
        first.stop()
    again = operator(kube_api, ns, tmp_path, **env)
    try:
        wait(
            "the policy repaired",
            lambda: (
                (p := get(kube_api, ns, "networkpolicy", "kubefaas-pool"))
                and p["spec"]["ingress"] == policy["spec"]["ingress"]
            ),
            again,
        )
    finally:
        again.stop()
    off = operator(kube_api, ns, tmp_path, KUBEFAAS_POOL_SIZE="0")
    try:
        wait(
            "the policy removed with the pool",
            lambda: get(kube_api, ns, "networkpolicy", "kubefaas-pool") is None or None,
            off,
        )
    finally:
        off.stop()
