"""The chart's RBAC on a real API server: rights only where Functions live, and enough.

`helm template` renders the chart; its ServiceAccounts, Roles, ClusterRoles and bindings are
applied to the API server, and `kubectl auth can-i --as=system:serviceaccount:NS:SA` asks
what the operator and the gateway may do (docs/architecture.md, "Rights only where
Functions live"). Then the real operator and the real gateway, each holding only a token of
the chart's ServiceAccount, reconcile a Function in a watched namespace and activate it
from zero.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubefaas_cluster.binaries import BinaryCache, MissingBinary
from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_cluster.versions import KUBERNETES_VERSION
from tests.api.test_gateway_kubernetes_cluster import (
    apply_function,
    deploy_like_the_operator,
    gateway,
    replicas,
    service_account_kubeconfig,
)
from tests.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubefaas"
CRD = ROOT / "crds" / "function.yaml"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
HELM_TIMEOUT_SECONDS = 60.0
WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Install:
    """The chart's RBAC objects of one release, applied; namespaces watched and not."""

    kube_api: KubeApi
    release: str
    namespace: str  # the release namespace
    watched: str
    unwatched: str

    def account(self, component: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.release}-kubefaas-{component}"

    def can(self, component: str, *args: str) -> bool:
        result = self.kube_api.kubectl(
            "auth", "can-i", *args, f"--as={self.account(component)}", check=False
        )
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"


def helm_template(release: str, namespace: str, *sets: str) -> list[dict[str, Any]]:
    try:
        helm = BinaryCache.default().binary("helm")
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    argv = [str(helm), "template", release, str(CHART), "-n", namespace]
    argv += ["--kube-version", KUBERNETES_VERSION]
    for value in sets:
        argv += ["--set", value]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=HELM_TIMEOUT_SECONDS, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"helm template exited {result.returncode}:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def install_rbac(kube_api: KubeApi, *sets: str, watch: bool) -> Iterator[Install]:
    # can-i resolves "functions.kubefaas.io" through discovery: the CRD must be served.
    kube_api.kubectl("apply", "-f", str(CRD))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )
    suffix = uuid.uuid4().hex[:8]
    install = Install(
        kube_api=kube_api,
        release=f"rb{suffix}",
        namespace=f"rb-{suffix}",
        watched=f"rb-{suffix}-watched",
        unwatched=f"rb-{suffix}-other",
    )
    for ns in (install.namespace, install.watched, install.unwatched):
        kube_api.kubectl("create", "namespace", ns)
    values = [*sets, f"watchNamespaces={{{install.watched}}}"] if watch else list(sets)
    objects = [
        o
        for o in helm_template(install.release, install.namespace, *values)
        if o["kind"] in RBAC_KINDS
    ]
    for obj in objects:
        obj["metadata"].setdefault("namespace", install.namespace)
        if obj["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
            del obj["metadata"]["namespace"]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kube_api.kubectl("apply", "-f", "-", input=manifest)
    try:
        yield install
    finally:
        kube_api.kubectl("delete", "-f", "-", "--wait=false", input=manifest, check=False)
        for ns in (install.namespace, install.watched, install.unwatched):
            kube_api.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def watching(kube_api: KubeApi) -> Iterator[Install]:
    """The chart with watchNamespaces = [watched]."""
    yield from install_rbac(kube_api, watch=True)


@pytest.fixture
def watching_with_console(kube_api: KubeApi) -> Iterator[Install]:
    yield from install_rbac(kube_api, "console.enabled=true", watch=True)


@pytest.fixture
def everywhere(kube_api: KubeApi) -> Iterator[Install]:
    """The chart with watchNamespaces empty (every namespace)."""
    yield from install_rbac(kube_api, watch=False)


def test_the_operator_acts_only_in_watched_namespaces(watching: Install) -> None:
    watched, unwatched = ["-n", watching.watched], ["-n", watching.unwatched]
    for verb in ("create", "patch", "delete"):
        assert watching.can("operator", verb, "deployments.apps", *watched), verb
        assert not watching.can("operator", verb, "deployments.apps", *unwatched), verb
    assert watching.can("operator", "patch", "deployments.apps", "--subresource=scale", *watched)
    assert not watching.can(
        "operator", "patch", "deployments.apps", "--subresource=scale", *unwatched
    )
    assert watching.can("operator", "watch", "functions.kubefaas.io", *watched)
    assert not watching.can("operator", "watch", "functions.kubefaas.io", *unwatched)
    assert not watching.can("operator", "list", "functions.kubefaas.io", "-A")
    assert watching.can("operator", "patch", "functions.kubefaas.io/status", *watched)
    assert watching.can("operator", "create", "events", *watched)
    assert not watching.can("operator", "create", "events", *unwatched)
    assert not watching.can("operator", "create", "configmaps", *unwatched)
    # Each Function's NetworkPolicy, where Functions live and nowhere else.
    for verb in ("create", "get", "list", "watch", "patch", "delete"):
        assert watching.can("operator", verb, "networkpolicies.networking.k8s.io", *watched)
        assert not watching.can("operator", verb, "networkpolicies.networking.k8s.io", *unwatched)
    assert not watching.can("operator", "list", "networkpolicies.networking.k8s.io", "-A")
    # The autoscaler reads gateway pods in the release namespace, and only there.
    assert watching.can("operator", "list", "pods", "-n", watching.namespace)
    assert not watching.can("operator", "list", "pods", *unwatched)
    assert not watching.can("operator", "list", "pods", "-A")
    # What stays cluster-wide is read-only discovery for kopf.
    assert watching.can("operator", "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert watching.can("operator", "list", "namespaces")
    assert not watching.can("operator", "create", "namespaces")


def test_nobody_of_the_chart_reads_secrets_beyond_invoke_keys(watching: Install) -> None:
    for ns in (watching.watched, watching.unwatched, watching.namespace):
        assert not watching.can("operator", "get", "secrets", "-n", ns), ns
        assert not watching.can("gateway", "list", "secrets", "-n", ns), ns
        assert not watching.can("gateway", "watch", "secrets", "-n", ns), ns
    assert not watching.can("operator", "list", "secrets", "-A")
    # The gateway gets invoke keys by name where Functions live, nowhere else.
    assert watching.can("gateway", "get", "secrets", "-n", watching.watched)
    assert not watching.can("gateway", "get", "secrets", "-n", watching.unwatched)
    assert not watching.can("gateway", "get", "secrets", "-n", watching.namespace)


def test_the_gateway_reads_and_activates_but_cannot_deploy(watching: Install) -> None:
    watched, unwatched = ["-n", watching.watched], ["-n", watching.unwatched]
    assert watching.can("gateway", "watch", "functions.kubefaas.io", *watched)
    assert watching.can("gateway", "watch", "pods", *watched)
    assert watching.can("gateway", "patch", "deployments.apps", "--subresource=scale", *watched)
    assert not watching.can("gateway", "watch", "functions.kubefaas.io", *unwatched)
    assert not watching.can("gateway", "watch", "pods", *unwatched)
    assert not watching.can(
        "gateway", "patch", "deployments.apps", "--subresource=scale", *unwatched
    )
    for verb in ("create", "patch", "delete", "get"):
        assert not watching.can("gateway", verb, "deployments.apps", *watched), verb
    assert not watching.can("gateway", "create", "pods", *watched)
    assert not watching.can("gateway", "create", "pods", "--subresource=exec", *watched)
    # Without the console the gateway cannot write Functions.
    assert not watching.can("gateway", "create", "functions.kubefaas.io", *watched)
    assert not watching.can("gateway", "patch", "functions.kubefaas.io", *watched)
    # Nothing cluster-wide at all.
    assert not watching.can("gateway", "list", "functions.kubefaas.io", "-A")
    assert not watching.can("gateway", "list", "namespaces")


def test_the_console_deploys_and_deletes_functions_only_in_watched_namespaces(
    watching_with_console: Install,
) -> None:
    install = watching_with_console
    for verb in ("create", "patch", "delete"):
        assert install.can("gateway", verb, "functions.kubefaas.io", "-n", install.watched)
        assert not install.can("gateway", verb, "functions.kubefaas.io", "-n", install.unwatched)
    assert not install.can(
        "gateway", "deletecollection", "functions.kubefaas.io", "-n", install.watched
    )


def test_watching_every_namespace_keeps_cluster_roles_trimmed(everywhere: Install) -> None:
    for ns in (everywhere.watched, everywhere.unwatched):
        assert everywhere.can("operator", "patch", "deployments.apps", "-n", ns)
        for verb in ("create", "watch", "patch", "delete"):
            assert everywhere.can("operator", verb, "networkpolicies.networking.k8s.io", "-n", ns)
        assert not everywhere.can("gateway", "get", "networkpolicies.networking.k8s.io", "-n", ns)
        assert everywhere.can("gateway", "watch", "functions.kubefaas.io", "-n", ns)
        assert everywhere.can("gateway", "get", "secrets", "-n", ns)
        assert not everywhere.can("operator", "get", "secrets", "-n", ns)
        assert not everywhere.can("gateway", "create", "deployments.apps", "-n", ns)
        assert not everywhere.can("gateway", "get", "deployments.apps", "-n", ns)
        assert not everywhere.can("gateway", "list", "endpointslices.discovery.k8s.io", "-n", ns)
        assert not everywhere.can("gateway", "create", "functions.kubefaas.io", "-n", ns)


def token_kubeconfig(install: Install, path: Path) -> Path:
    """A kubeconfig that authenticates with a token of the chart's operator account."""
    account = f"{install.release}-kubefaas-operator"
    token = install.kube_api.kubectl(
        "create", "token", account, "-n", install.namespace, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(install.kube_api.kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in admin["contexts"]}
    clusters = {c["name"]: c["cluster"] for c in admin["clusters"]}
    cluster = clusters[contexts[admin["current-context"]]["cluster"]]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": account}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_operator_reconciles_a_watched_namespace_with_only_these_rights(
    kube_api: KubeApi, watching: Install, tmp_path: Path
) -> None:
    kubeconfig = token_kubeconfig(watching, tmp_path / "operator.kubeconfig")
    operator = OperatorProcess(
        kubeconfig=kubeconfig,
        log_path=tmp_path / "operator.log",
        namespaces=[watching.watched],
        env={"KUBEFAAS_GATEWAY_NAMESPACE": watching.namespace},
    ).start()
    try:
        name = f"rb-{uuid.uuid4().hex[:6]}"
        manifest = {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name, "namespace": watching.watched},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": {"main.py": "def handler(event, context):\n    return 1\n"}},
            },
        }
        kube_api.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            fn = kube_api.kubectl_json("get", "fn", name, "-n", watching.watched)
            conditions = (fn.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"no Ready=True\n--- operator ---\n{operator.logs()}", pytrace=False)
            time.sleep(0.25)
        kube_api.kubectl("get", "deployment", name, "-n", watching.watched)
        # Let the autoscaler tick at least once with these rights.
        time.sleep(3)
        logs = operator.logs(tail=200_000)
        # An RBAC denial reads 'User "system:serviceaccount:..." cannot <verb> resource'.
        assert f'User "{watching.account("operator")}" cannot' not in logs, logs
        assert "Forbidden" not in logs, logs
    finally:
        operator.stop()


async def test_the_gateway_serves_a_watched_namespace_with_only_its_role(
    kube_api: KubeApi, watching: Install, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = watching.watched
    fn = apply_function(kube_api, ns, "guarded", timeoutSeconds=1)
    deploy_like_the_operator(kube_api, fn)
    account = f"{watching.release}-kubefaas-gateway"
    kubeconfig = service_account_kubeconfig(
        kube_api, watching.namespace, account, tmp_path / "gateway.kubeconfig"
    )
    async with gateway(kube_api, ns, tmp_path, monkeypatch, kubeconfig=kubeconfig) as gw:
        # Listing and watching Functions and pods worked, or the app would not start.
        assert f"{ns}/guarded" in gw.registry
        response = await gw.client.post(f"/function/{ns}/guarded", json={})
    # 504, not 503: the scale-up from zero was allowed (a refused one answers 503 at once).
    assert response.status_code == 504, response.text
    assert replicas(kube_api, ns, "guarded") == 1
