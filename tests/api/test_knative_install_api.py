"""Knative Serving's rendered install is accepted by a real API server, and removed again.

No node runs in this tier, so the Deployments never become available; what is checked is
what the API server decides: every CRD is served, every object is valid and stored, the
autoscaler Service holds the fixed ClusterIP the activator's hosts entry names, Knative's
controller and activator accounts may do what they need, and `uninstall` takes it all
away. See docs/peers.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubefaas_cluster import knative, versions
from kubefaas_cluster.pytest_plugin import KubeApi

SYSTEM = knative.SYSTEM_NAMESPACE


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    cache = knative.KnativeCache.default()
    serving = knative._module_cache() / f"{versions.KNATIVE_MODULE}@{cache.version}"
    if not (serving / "config" / "core").is_dir():
        pytest.skip(
            f"{serving} is not in the Go module cache: python -m kubefaas_cluster knative build"
        )
    images = {cmd: knative.image_reference(cmd) for cmd in versions.KNATIVE_COMMANDS}
    return knative.render_install(knative.sources(cache), images)


@pytest.fixture(scope="module")
def applied(kube_api: KubeApi, documents: list[dict[str, Any]]) -> Iterator[knative.Kubectl]:
    kubectl = knative.Kubectl(kube_api.bin_dir / "kubectl", kube_api.kubeconfig)
    knative.apply(kubectl, documents)
    try:
        yield kubectl
    finally:
        knative.uninstall(kubectl, documents)


def _get(kubectl: knative.Kubectl, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kubectl("get", *args, "-o", "json").stdout)
    return result


def test_every_object_is_stored_as_rendered(
    applied: knative.Kubectl, documents: list[dict[str, Any]]
) -> None:
    for document in documents:
        kind, name = document["kind"], document["metadata"]["name"]
        namespace = document["metadata"].get("namespace")
        group = document["apiVersion"].split("/")[0] if "/" in document["apiVersion"] else ""
        resource = f"{kind.lower()}.{group}" if group else kind.lower()
        args = [resource, name] + (["-n", namespace] if namespace else [])
        assert _get(applied, *args)["metadata"]["name"] == name
    activator = _get(applied, "deployment", "activator", "-n", SYSTEM)
    pod = activator["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == knative.image_reference("activator")
    assert pod["containers"][0]["imagePullPolicy"] == "Never"
    service = _get(applied, "service", "autoscaler", "-n", SYSTEM)
    assert service["spec"]["clusterIP"] == knative.LOCAL_AUTOSCALER_IP
    assert pod["hostAliases"][0]["ip"] == knative.LOCAL_AUTOSCALER_IP
    autoscaler = _get(applied, "configmap", "config-autoscaler", "-n", SYSTEM)["data"]
    assert autoscaler["target-burst-capacity"] == "-1"


def test_knative_resources_are_served(applied: knative.Kubectl) -> None:
    resources = applied("api-resources", "--api-group=serving.knative.dev", "-o", "name").stdout
    assert {"services.serving.knative.dev", "revisions.serving.knative.dev"} <= set(
        resources.split()
    )
    internal = applied(
        "api-resources", "--api-group=networking.internal.knative.dev", "-o", "name"
    ).stdout.split()
    assert "serverlessservices.networking.internal.knative.dev" in internal
    assert "ingresses.networking.internal.knative.dev" in internal


@pytest.mark.parametrize(
    ("account", "verb", "resource"),
    [
        ("controller", "create", "deployments.apps"),
        ("controller", "update", "revisions.serving.knative.dev"),
        ("controller", "create", "ingresses.networking.internal.knative.dev"),
        ("activator", "watch", "endpoints"),
        ("activator", "get", "revisions.serving.knative.dev"),
    ],
)
def test_knative_accounts_may_do_what_they_need(
    applied: knative.Kubectl, account: str, verb: str, resource: str
) -> None:
    answer = applied(
        "auth", "can-i", verb, resource, "-A", f"--as=system:serviceaccount:{SYSTEM}:{account}",
        check=False,
    )  # fmt: skip
    assert answer.stdout.strip() == "yes", (account, verb, resource, answer.stdout, answer.stderr)


def test_uninstall_removes_the_crds_and_the_namespace(
    kube_api: KubeApi, documents: list[dict[str, Any]]
) -> None:
    kubectl = knative.Kubectl(kube_api.bin_dir / "kubectl", kube_api.kubeconfig)
    knative.apply(kubectl, documents)  # again: an apply over an install is fine
    knative.uninstall(kubectl, documents)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = kubectl("get", "crd", "-o", "name").stdout.split()
        namespace = kubectl("get", "namespace", SYSTEM, check=False)
        if not [c for c in left if "knative.dev" in c] and namespace.returncode != 0:
            break
        time.sleep(1)
    assert not [c for c in left if "knative.dev" in c]
    assert namespace.returncode != 0, namespace.stdout
    hooks = kubectl(
        "get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "-o", "name"
    ).stdout  # fmt: skip
    assert "knative" not in hooks
