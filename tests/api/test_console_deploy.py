"""The console's Deploy on a cluster (docs/console.md, "Deploy"): server-side apply through
the gateway's door to a real API server, as a ServiceAccount.

With only the rights the chart gives a gateway without the console (read Functions) the
API server refuses, and the console says which permission is missing; with the rule the
chart adds for `console.enabled` (create, patch) the Function is created, then updated.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import SecretStr

from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_gateway.app import create_app
from kubefaas_gateway.backends.kubernetes import KubernetesBackend
from kubefaas_gateway.console import forms
from kubefaas_gateway.console.store import ClusterStore, DeployForbidden, function_document
from kubefaas_gateway.kube_async import KubeClient
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from tests.api.test_gateway_kubernetes_cluster import eventually, service_account_kubeconfig

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


async def test_the_console_deploys_through_the_cluster_gateway(
    kube_api: KubeApi,
    namespace: str,
    crd: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cluster gateway's app with the console on: log in, deploy an edit of a Function
    the watch brought in; the API server has it, and the watch brings the new spec back."""
    ns = namespace
    document = copy.deepcopy(HELLO)
    document["metadata"]["namespace"] = ns
    kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = Settings(
        state_dir=tmp_path / "state",
        namespaces=(ns,),
        console_enabled=True,
        admin_token=SecretStr("t0ken"),
    )
    registry = FunctionRegistry()
    app = create_app(settings, KubernetesBackend(settings=settings, registry=registry), registry)
    key = f"{ns}/hello"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=60
        ) as client,
    ):
        await eventually(lambda: key in registry, "the watch to bring the Function")
        assert (await client.post("/console/login", data={"token": "t0ken"})).status_code == 303
        page = (await client.get(f"/console/functions/{ns}/hello")).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        fn = registry.get(key)
        assert fn is not None
        form = forms.form_of(function_document(fn), fn)
        submitted = {**form.values, "env": "GREETING=howdy", "csrf": csrf.group(1)}
        answer = await client.post(f"/console/functions/{ns}/hello/deploy", data=submitted)
        assert answer.status_code == 200, answer.text
        assert f"applied Function {ns}/hello to the cluster" in answer.text
        live = kube_api.kubectl_json("get", "function", "hello", "-n", ns, "--show-managed-fields")
        assert live["spec"]["env"] == [{"name": "GREETING", "value": "howdy"}]
        managers = {m["manager"] for m in live["metadata"]["managedFields"]}
        assert "kubefaas-console" in managers

        def redefined() -> bool:
            current = registry.get(key)
            return current is not None and [e.value for e in current.spec.env] == ["howdy"]

        await eventually(redefined, "the watch to bring the new spec")
