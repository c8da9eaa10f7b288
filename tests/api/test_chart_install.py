"""`helm install` on a real API server: every object is admitted, RBAC holds, uninstall is clean.

The API tier has no kubelet, so pods never run; but the ReplicaSet controller still creates
them, and the PodSecurity admission of a namespace enforcing "restricted" refuses any pod
that breaks the standard. A pod that exists was admitted.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubefaas_cluster.binaries import BinaryCache, MissingBinary
from kubefaas_cluster.pytest_plugin import KubeApi

pytestmark = pytest.mark.api

CHART = Path(__file__).resolve().parents[2] / "charts" / "kubefaas"
HELM_TIMEOUT_SECONDS = 120.0
SETTLE_SECONDS = 60.0
RESTRICTED = (
    "pod-security.kubernetes.io/enforce=restricted",
    "pod-security.kubernetes.io/enforce-version=latest",
)
NAMESPACED_KINDS = (
    "deployments,replicasets,pods,services,serviceaccounts,secrets,configmaps,"
    "persistentvolumeclaims,networkpolicies"
)


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    kube_api: KubeApi

    @property
    def fullname(self) -> str:
        return f"{self.name}-kubefaas"

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            helm = BinaryCache.default().binary("helm")
        except MissingBinary as exc:
            pytest.fail(str(exc), pytrace=False)
        argv = [str(helm), f"--kubeconfig={self.kube_api.kubeconfig}", "-n", self.namespace]
        result = subprocess.run(
            [*argv, *args],
            capture_output=True,
            text=True,
            timeout=HELM_TIMEOUT_SECONDS,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def objects(self, kinds: str, *, namespaced: bool = True) -> list[str]:
        """`kind/name` of this release's objects (by the instance label) of these kinds."""
        scope = ["-n", self.namespace] if namespaced else []
        found = self.kube_api.kubectl_json(
            "get", kinds, *scope, "-l", f"app.kubernetes.io/instance={self.name}"
        )
        return [f"{item['kind']}/{item['metadata']['name']}" for item in found["items"]]


@pytest.fixture
def release(kube_api: KubeApi) -> Iterator[Release]:
    """A namespace enforcing the restricted Pod Security Standard, and a unique release name."""
    suffix = uuid.uuid4().hex[:8]
    result = Release(name=f"kf{suffix}", namespace=f"kf-{suffix}", kube_api=kube_api)
    kube_api.kubectl("create", "namespace", result.namespace)
    kube_api.kubectl("label", "namespace", result.namespace, *RESTRICTED)
    yield result
    result.helm("uninstall", result.name, "--wait", check=False)
    kube_api.kubectl("delete", "namespace", result.namespace, "--wait=false", check=False)


def wait_for(
    what: str,
    condition: Callable[[], bool],
    *,
    explain: Callable[[], str] = str,
    timeout: float = SETTLE_SECONDS,
) -> None:
    """Poll `condition`; on timeout fail with `what` and whatever `explain` finds then."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{explain()}")
        time.sleep(0.5)


def pods_of(release: Release, component: str) -> list[dict[str, object]]:
    found = release.kube_api.kubectl_json(
        "get",
        "pods",
        "-n",
        release.namespace,
        "-l",
        f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component={component}",
    )
    items: list[dict[str, object]] = found["items"]
    return items


def has_pods(release: Release, component: str) -> bool:
    return bool(pods_of(release, component))


def replica_set_failures(release: Release) -> str:
    """Why the ReplicaSet controller could not create pods (PodSecurity refusals show here)."""
    events = release.kube_api.kubectl_json(
        "get", "events", "-n", release.namespace, "--field-selector", "reason=FailedCreate"
    )
    return "\n".join(e.get("message", "") for e in events["items"])


def can_i(release: Release, component: str, *args: str) -> bool:
    account = f"system:serviceaccount:{release.namespace}:{release.fullname}-{component}"
    result = release.kube_api.kubectl("auth", "can-i", *args, f"--as={account}", check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def test_install_is_admitted_under_restricted_pod_security(release: Release) -> None:
    out = release.helm("install", release.name, str(CHART))
    assert "STATUS: deployed" in out.stdout, out.stdout
    # The notes say function pods of every namespace get a policy (from the operator).
    assert "Every Function, in whatever namespace, gets a NetworkPolicy" in out.stdout, out.stdout
    assert "would violate PodSecurity" not in out.stderr, out.stderr

    for component in ("operator", "gateway"):
        wait_for(
            f"the ReplicaSet controller to create the {component} pod",
            functools.partial(has_pods, release, component),
            explain=lambda: replica_set_failures(release),
        )
    assert not replica_set_failures(release)

    # The helm test hook is a bare Pod: create it through admission without running it.
    hooks = release.helm("get", "hooks", release.name).stdout
    dry_run = release.kube_api.kubectl(
        "create", "-n", release.namespace, "--dry-run=server", "-f", "-", input=hooks, check=False
    )
    assert dry_run.returncode == 0, dry_run.stderr

    crd = release.kube_api.kubectl_json("get", "crd", "functions.kubefaas.io")
    assert crd["spec"]["names"]["shortNames"] == ["fn"]
    service = release.kube_api.kubectl_json(
        "get", "service", f"{release.fullname}-gateway", "-n", release.namespace
    )
    assert service["spec"]["ports"][0]["port"] == 80


def test_service_accounts_get_exactly_the_access_they_need(release: Release) -> None:
    release.helm("install", release.name, str(CHART))
    ns = ["-n", "default"]
    assert can_i(release, "gateway", "watch", "functions.kubefaas.io", *ns)
    assert can_i(release, "gateway", "patch", "deployments.apps", "--subresource=scale", *ns)
    assert not can_i(release, "gateway", "delete", "deployments.apps", *ns)
    assert can_i(release, "operator", "create", "deployments.apps", *ns)
    assert can_i(release, "operator", "patch", "functions.kubefaas.io", "--subresource=status")
    # The gateway reads invoke keys by name (token/jwt auth, docs/security.md), never
    # lists or watches Secrets; the operator cannot read one at all.
    assert can_i(release, "gateway", "get", "secrets", *ns)
    assert not can_i(release, "operator", "get", "secrets", *ns)
    for component in ("operator", "gateway"):
        assert not can_i(release, component, "list", "secrets", "-A"), component
        assert not can_i(release, component, "watch", "secrets", *ns), component
        assert not can_i(release, component, "create", "clusterroles"), component


def test_uninstall_leaves_no_kubefaas_objects(release: Release) -> None:
    release.helm("install", release.name, str(CHART), "--set", "networkPolicy.enabled=true")
    assert release.objects(NAMESPACED_KINDS)
    assert len(release.objects("clusterroles,clusterrolebindings", namespaced=False)) == 4

    release.helm("uninstall", release.name, "--wait")

    def gone() -> bool:
        left = release.objects(NAMESPACED_KINDS)
        left += release.objects("clusterroles,clusterrolebindings", namespaced=False)
        return not left

    wait_for("the release's objects to be deleted", gone)
    history = release.kube_api.kubectl_json(
        "get", "secrets", "-n", release.namespace, "-l", f"owner=helm,name={release.name}"
    )
    assert history["items"] == [], json.dumps(history["items"])[:500]
