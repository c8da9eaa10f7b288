"""The console's Delete on a cluster (docs/console.md, "Delete") against a real API server:
refused with a clear message without verb `delete`; through the cluster gateway's app,
logged in with a namespace token read from a Secret in the API (docs/architecture.md,
"Namespace tokens"), the Function is deleted and the watch drops it.
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
from kubefaas_gateway.cluster_mode import build_app
from kubefaas_gateway.console.store import DeployForbidden
from kubefaas_gateway.settings import Settings
from tests.api.test_console_deploy import HELLO, _role, _store, crd
from tests.api.test_gateway_kubernetes_cluster import eventually

__all__ = ["crd"]

TOKEN = "cluster-namespace-token-0123"


async def test_delete_is_refused_without_the_verb_then_deletes(
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
    kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
    _role(kube_api, ns, ["get", "list", "watch", "create", "patch"])
    store = await _store(kube_api, ns, tmp_path, monkeypatch)
    try:
        with pytest.raises(DeployForbidden) as refused:
            await store.delete(ns, "hello")
        assert "may not delete Functions" in refused.value.message
        assert f"namespace {ns!r}" in refused.value.message
        assert kube_api.kubectl("get", "function", "hello", "-n", ns).returncode == 0

        _role(kube_api, ns, ["get", "list", "watch", "create", "patch", "delete"])
        assert await store.delete(ns, "hello") == f"deleted Function {ns}/hello from the cluster"
        gone = kube_api.kubectl("get", "function", "hello", "-n", ns, check=False)
        assert gone.returncode != 0
    finally:
        await store.close()


async def test_a_namespace_token_deletes_through_the_cluster_gateway(
    kube_api: KubeApi,
    namespace: str,
    crd: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = namespace
    document = copy.deepcopy(HELLO)
    document["metadata"]["namespace"] = ns
    kube_api.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
    kube_api.kubectl(
        "create", "secret", "generic", "kubefaas-namespace-tokens", "-n", ns,
        f"--from-literal={ns}={TOKEN}",
    )  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = Settings(
        state_dir=tmp_path / "state",
        namespaces=(ns,),
        console_enabled=True,
        admin_token=SecretStr("admin-t0ken"),
        namespace_tokens_secret=f"{ns}/kubefaas-namespace-tokens",
    )
    # The cluster gateway as it runs (Secrets read from the API through its door).
    app = build_app(settings)
    registry = app.state.gateway.registry
    key = f"{ns}/hello"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=60
        ) as client,
    ):
        await eventually(lambda: key in registry, "the watch to bring the Function")
        # Usage with the token read from the API's Secret: its namespace only.
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        usage = await client.get("/system/usage", headers=bearer)
        assert usage.status_code == 200, usage.text
        other = await client.get(
            "/system/usage", params={"namespace": "kube-system"}, headers=bearer
        )
        assert other.status_code == 403

        assert (await client.post("/console/login", data={"token": TOKEN})).status_code == 303
        page = await client.get(f"/console/functions/{ns}/hello")
        assert page.status_code == 200
        assert f"Logged in: namespace {ns}" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        answer = await client.post(
            f"/console/functions/{ns}/hello/delete",
            data={"csrf": csrf.group(1), "confirm": "hello"},
        )
        assert answer.status_code == 303, answer.text
        assert "deleted" in answer.headers["location"]
        gone = kube_api.kubectl("get", "function", "hello", "-n", ns, check=False)
        assert gone.returncode != 0
        await eventually(lambda: key not in registry, "the watch to drop the Function")
