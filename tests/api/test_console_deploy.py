"""The console's Deploy on a cluster (docs/console.md, "Deploy"): server-side apply through
the gateway's door to a real API server, as a ServiceAccount.

With only the rights the chart gives a gateway without the console (read Functions) the
API server refuses, and the console says which permission is missing; with the rule the
chart adds for `console.enabled` (create, patch) the Function is created, then updated.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_gateway.console.store import ClusterStore, DeployForbidden
from kubefaas_gateway.kube_async import KubeClient
from tests.api.test_gateway_kubernetes_cluster import service_account_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "function.yaml"
HELLO = yaml.safe_load((ROOT / "examples" / "hello.yaml").read_text())


@pytest.fixture
def crd(kube_api: KubeApi) -> None:
    kube_api.kubectl("apply", "-f", str(CRD))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )


def _role(kube_api: KubeApi, ns: str, verbs: list[str]) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "console-gateway", "namespace": ns},
        "rules": [{"apiGroups": ["kubefaas.io"], "resources": ["functions"], "verbs": verbs}],
    }
    kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(role))


async def _store(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ClusterStore:
    kubeconfig = service_account_kubeconfig(kube_api, ns, "gateway", tmp_path / "sa.yaml")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return ClusterStore(await KubeClient.connect())


async def test_deploy_is_refused_without_rights_then_creates_and_updates(
    kube_api: KubeApi,
    namespace: str,
    crd: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = namespace
    kube_api.kubectl("create", "serviceaccount", "gateway", "-n", ns)
    kube_api.kubectl(
        "create", "rolebinding", "console-gateway", "--role=console-gateway",
        f"--serviceaccount={ns}:gateway", "-n", ns,
    )  # fmt: skip
    document = copy.deepcopy(HELLO)
    document["metadata"]["namespace"] = ns

    # What a gateway without the console may do: read Functions, not write them.
    _role(kube_api, ns, ["get", "list", "watch"])
    store = await _store(kube_api, ns, tmp_path, monkeypatch)
    try:
        with pytest.raises(DeployForbidden) as refused:
            await store.deploy(document)
        message = refused.value.message
        assert f"namespace {ns!r}" in message
        assert "console.enabled=true" in message
        assert kube_api.kubectl("get", "function", "hello", "-n", ns, check=False).returncode != 0

        # The chart's console rule: create and patch (server-side apply is a patch).
        _role(kube_api, ns, ["get", "list", "watch", "create", "patch"])
        assert await store.deploy(document) == f"applied Function {ns}/hello to the cluster"
        created = kube_api.kubectl_json("get", "function", "hello", "-n", ns)
        assert created["spec"]["code"]["inline"] == HELLO["spec"]["code"]["inline"]

        document["spec"]["env"] = [{"name": "GREETING", "value": "howdy"}]
        await store.deploy(document)
        updated = kube_api.kubectl_json("get", "function", "hello", "-n", ns)
        assert updated["spec"]["env"] == [{"name": "GREETING", "value": "howdy"}]
        assert updated["metadata"]["generation"] == created["metadata"]["generation"] + 1
    finally:
        await store.close()
