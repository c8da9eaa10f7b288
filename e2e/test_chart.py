"""The Helm chart on a real cluster: `helm test`, restricted Pod Security, clean uninstall."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from e2e.harness import wait_for
from kubefaas import naming

if TYPE_CHECKING:
    from e2e.conftest import Deploy
    from e2e.harness import Release

pytestmark = pytest.mark.e2e

CRD = "functions.kubefaas.io"
# Namespaced kinds a release may create; ConfigMap kube-root-ca.crt is the namespace's own.
NAMESPACED_KINDS = (
    "deployments,replicasets,pods,services,serviceaccounts,secrets,configmaps,"
    "persistentvolumeclaims,networkpolicies,roles,rolebindings"
)


def test_helm_test_passes(release: Release) -> None:
    result = release.cluster.helm(
        "test", release.name, "-n", release.namespace, "--timeout=180s", timeout=240
    )
    assert "Phase:          Succeeded" in result.stdout, result.stdout


def _running(pod: dict[str, Any]) -> bool:
    return bool(pod["status"].get("phase") == "Running")


def test_every_pod_passes_restricted_pod_security(release: Release, deploy: Deploy) -> None:
    name = deploy("hello")
    assert release.gateway.invoke(name, {}).status_code == 200

    for namespace in (release.namespace, release.functions_namespace):
        labels = release.cluster.json("get", "namespace", namespace)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        # Re-applying the label server-side re-checks every existing pod against the level.
        check = release.cluster.kubectl(
            "label", "--dry-run=server", "--overwrite", "namespace", namespace,
            "pod-security.kubernetes.io/enforce=restricted",
        )  # fmt: skip
        assert "violate" not in check.stderr, check.stderr
        refused = release.cluster.items(
            "events", "-n", namespace, "--field-selector", "reason=FailedCreate"
        )
        assert not refused, [e.get("message") for e in refused]

    # The pods under test run (other tests' pods may be on their way out).
    platform = [
        pod
        for pod in release.pods(release.namespace, f"app.kubernetes.io/instance={release.name}")
        if pod["metadata"]["labels"].get("app.kubernetes.io/component") in ("gateway", "operator")
    ]
    function = release.function_pods(name)
    assert len(platform) >= 2, [p["metadata"]["name"] for p in platform]
    assert all(_running(p) for p in [*platform, *function]), [
        (p["metadata"]["name"], p["status"].get("phase")) for p in [*platform, *function]
    ]
    pod = function[0]
    container = pod["spec"]["containers"][0]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    tmp = next(v for v in pod["spec"]["volumes"] if v.get("emptyDir") is not None)
    assert tmp["emptyDir"].get("sizeLimit"), "the writable /tmp is bounded"


@pytest.mark.uninstall
def test_uninstall_leaves_no_kubefaas_objects(release: Release, deploy: Deploy) -> None:
    name = deploy("hello")
    assert release.gateway.invoke(name, {}).status_code == 200

    release.uninstall()

    instance = f"app.kubernetes.io/instance={release.name}"

    def leftovers() -> list[str]:
        namespaced = release.cluster.items(NAMESPACED_KINDS, "-n", release.namespace)
        cluster_wide = release.cluster.items("clusterroles,clusterrolebindings", "-l", instance)
        return [
            f"{item['kind']}/{item['metadata']['name']}"
            for item in [*namespaced, *cluster_wide]
            if item["metadata"]["name"] != "kube-root-ca.crt"
            and not (item["kind"] == "ServiceAccount" and item["metadata"]["name"] == "default")
        ]

    wait_for(
        "helm uninstall to leave nothing of the release",
        lambda: not leftovers(),
        timeout=120,
        explain=lambda: str(leftovers()),
    )
    # Helm never deletes what it installed from crds/ (it would delete every Function in
    # the cluster with it), so the CRD stays and so do the user's Functions.
    assert release.cluster.kubectl("get", "crd", CRD).returncode == 0
    # Without the operator, deleting a Function still removes its children: they are
    # garbage-collected through their owner references, and no finalizer waits on us.
    release.cluster.kubectl("delete", "function", name, "-n", release.functions_namespace)

    def function_objects() -> list[str]:
        found = release.cluster.items(
            NAMESPACED_KINDS, "-n", release.functions_namespace,
            "-l", f"{naming.FUNCTION_LABEL}={name}",
        )  # fmt: skip
        return [f"{item['kind']}/{item['metadata']['name']}" for item in found]

    wait_for(
        f"the children of Function {name} to go without the operator",
        lambda: not function_objects(),
        timeout=120,
        explain=lambda: str(function_objects()),
    )
