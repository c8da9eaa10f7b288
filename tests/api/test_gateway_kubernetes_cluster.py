"""The gateway in cluster mode against a real API server (no kubelet, so pods never run).

Each test applies Functions with kubectl and creates their Deployments exactly as the
operator builds them (`kubefaas_operator.children`), at 0 replicas. Where a test needs a
running instance, it plays the kubelet: it creates a pod object labelled for the function,
writes `status.phase: Running` and a `podIP` through the status subresource, and serves
the runtime contract itself on that loopback IP. The gateway discovers the pod from its
watch, probes it directly and routes real HTTP to it, so the whole path (watch ->
discovery -> probe -> activation -> proxy) runs without a kubelet.

The gateway runs in-process (the real app and `KubernetesBackend`, configured from
`$KUBECONFIG`) except for the last test, which runs `kubefaas gateway` as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubefaas import limits, naming
from kubefaas.api import parse_function
from kubefaas_cluster.binaries import BinaryCache
from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_gateway.app import create_app
from kubefaas_gateway.backends.kubernetes import KubernetesBackend
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.secrets import KubeSecrets
from kubefaas_gateway.settings import Settings
from kubefaas_operator.children import build_deployment
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "function.yaml"
CHART = ROOT / "charts" / "kubefaas"
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.1
# Keeps a deleted test pod terminating (deletionTimestamp set) until the test lets go.
HOLD_FINALIZER = "kubefaas.io/test-hold"


@pytest.fixture(scope="module")
def crd(kube_api: KubeApi) -> None:
    kube_api.kubectl("apply", "-f", str(CRD))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )


@pytest.fixture
def ns(kube_api: KubeApi, crd: None, namespace: str) -> str:
    """The test's namespace, once pods can be created in it (its default ServiceAccount
    exists: the admission plugin refuses pods before the controller-manager makes it)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while kube_api.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(POLL_SECONDS)
    return namespace


# -- what a user (and the operator, and the kubelet) would do -------------------------------------


def apply_function(kube_api: KubeApi, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    document = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtime": "python3.11",
            "code": {"inline": {"main.py": "def handler(event, context):\n    return event\n"}},
            **spec,
        },
    }
    kube_api.apply(json.dumps(document))
    found: dict[str, Any] = kube_api.kubectl_json("get", "fn", name, "-n", ns)
    return found


def deploy_like_the_operator(kube_api: KubeApi, fn_obj: dict[str, Any]) -> None:
    """Create the Function's Deployment as the operator builds it: 0 replicas."""
    fn = parse_function({k: fn_obj[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    deployment = build_deployment(fn, image_for_runtime=limits.RUNTIME_IMAGES, replicas_hint=0)
    assert deployment["spec"]["replicas"] == 0
    kube_api.kubectl("create", "-f", "-", input=json.dumps(deployment))


def replicas(kube_api: KubeApi, ns: str, name: str) -> int:
    deployment = kube_api.kubectl_json("get", "deployment", name, "-n", ns)
    return int(deployment["spec"].get("replicas") or 0)


def run_pod(
    kube_api: KubeApi, ns: str, fn_obj: dict[str, Any], runtime: StandInRuntime, *, name: str
) -> None:
    """Play the kubelet: a pod of the function, Running at the stand-in runtime's address.

    The pod is controlled by the Function (not the Deployment's ReplicaSet, which would
    otherwise adopt it and might delete it to keep its own count) and held by a finalizer,
    so deleting it leaves it terminating until `release_pod`.
    """
    fn_name = fn_obj["metadata"]["name"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                naming.FUNCTION_LABEL: fn_name,
                naming.COMPONENT_LABEL: naming.FUNCTION_COMPONENT,
            },
            "finalizers": [HOLD_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": "kubefaas.io/v1alpha1",
                    "kind": "Function",
                    "name": fn_name,
                    "uid": fn_obj["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "function",
                    "image": limits.RUNTIME_IMAGES["python3.11"],
                    "ports": [{"name": naming.RUNTIME_PORT_NAME, "containerPort": runtime.port}],
                }
            ],
        },
    }
    kube_api.kubectl("create", "-f", "-", input=json.dumps(pod))
    status = {"phase": "Running", "podIP": runtime.host, "podIPs": [{"ip": runtime.host}]}
    kube_api.kubectl(
        "patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def release_pod(kube_api: KubeApi, ns: str, name: str) -> None:
    kube_api.kubectl(
        "patch", "pod", name, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
        check=False,
    )  # fmt: skip


# -- a stand-in for the runtime inside a pod -------------------------------------------------------


@dataclass
class StandInRuntime:
    """The runtime contract on 127.0.0.x: `/healthz` and an echo of each invocation."""

    host: str
    port: int
    pod: str
    received: list[dict[str, Any]] = field(default_factory=list)
    probes: int = 0


@contextlib.contextmanager
def stand_in_runtime(pod: str) -> Iterator[StandInRuntime]:
    host = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
    state = StandInRuntime(host=host, port=0, pod=pod)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                state.probes += 1
                self._send(200, b'{"status": "ok"}')
            else:
                self._send(404, b"{}")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.received.append(
                {"path": self.path, "invocation": self.headers.get("X-Invocation-Id")}
            )
            self._send(200, json.dumps({"servedBy": state.pod, "event": json.loads(body)}).encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- the gateway, in-process ---------------------------------------------------------------------


@dataclass
class Gateway:
    client: httpx.AsyncClient
    registry: FunctionRegistry
    backend: KubernetesBackend


@contextlib.asynccontextmanager
async def gateway(
    kube_api: KubeApi,
    ns: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    kubeconfig: Path | None = None,
    auth_default: str = "none",
) -> AsyncIterator[Gateway]:
    """The real app and Kubernetes backend, configured from `$KUBECONFIG` (the cluster
    admin's unless `kubeconfig` is given), watching `ns`, reading invoke keys from the API
    as `kubefaas gateway` does."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig or kube_api.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = Settings(state_dir=tmp_path / "state", namespaces=(ns,), auth_default=auth_default)
    registry = FunctionRegistry()
    backend = KubernetesBackend(settings=settings, registry=registry)
    # No autoscaler: these tests watch the replicas the activation path sets.
    app = create_app(
        settings, backend, registry, background=(), secrets=KubeSecrets(lambda: backend.kube)
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=60
        ) as client,
    ):
        yield Gateway(client=client, registry=registry, backend=backend)


async def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL_SECONDS)


# -- tests -----------------------------------------------------------------------------------------


async def test_the_registry_follows_functions_as_they_are_applied_changed_and_deleted(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_function(kube_api, ns, "early", timeoutSeconds=7)
    async with gateway(kube_api, ns, tmp_path, monkeypatch) as gw:
        # Listed before the gateway reports ready.
        early = gw.registry.get(f"{ns}/early")
        assert early is not None
        assert early.spec.timeout_seconds == 7

        apply_function(kube_api, ns, "later")
        await eventually(lambda: f"{ns}/later" in gw.registry, "the new Function")

        apply_function(kube_api, ns, "later", timeoutSeconds=3)
        await eventually(
            lambda: (fn := gw.registry.get(f"{ns}/later")) and fn.spec.timeout_seconds == 3,
            "the changed Function",
        )

        kube_api.kubectl("delete", "fn", "later", "-n", ns)
        await eventually(lambda: f"{ns}/later" not in gw.registry, "the deleted Function")
        response = await gw.client.post(f"/function/{ns}/later", json={})
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "FunctionNotFound"


async def test_unknown_function_is_404(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway(kube_api, ns, tmp_path, monkeypatch) as gw:
        response = await gw.client.post(f"/function/{ns}/nothing-here", json={})
        assert response.status_code == 404
        assert f"{ns}/nothing-here" in response.json()["error"]["message"]


async def test_a_cold_invocation_scales_the_deployment_to_one_then_times_out_without_pods(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = apply_function(kube_api, ns, "sleepy", timeoutSeconds=1)
    deploy_like_the_operator(kube_api, fn)
    async with gateway(kube_api, ns, tmp_path, monkeypatch) as gw:
        await eventually(lambda: f"{ns}/sleepy" in gw.registry, "the Function")
        started = time.monotonic()
        response = await gw.client.post(f"/function/{ns}/sleepy", json={"a": 1})
        waited = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert response.json()["error"]["type"] == "InvocationTimeout"
    assert 0.9 <= waited < 5
    # The gateway raised the Deployment itself; the controller made a pod no kubelet runs.
    assert replicas(kube_api, ns, "sleepy") == 1
    pods = kube_api.kubectl_json("get", "pods", "-n", ns, "-l", f"{naming.FUNCTION_LABEL}=sleepy")
    assert [p["status"].get("phase") for p in pods["items"]] == ["Pending"]


async def test_a_waiting_request_is_routed_to_the_pod_that_comes_up_then_not_once_it_terminates(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = apply_function(kube_api, ns, "echo", timeoutSeconds=20)
    deploy_like_the_operator(kube_api, fn)
    with stand_in_runtime("echo-pod") as runtime:
        try:
            async with gateway(kube_api, ns, tmp_path, monkeypatch) as gw:
                await eventually(lambda: f"{ns}/echo" in gw.registry, "the Function")
                cold = asyncio.create_task(gw.client.post(f"/function/{ns}/echo", json={"n": 1}))
                # The request activated the function; now "the kubelet" starts its pod.
                await eventually(lambda: replicas(kube_api, ns, "echo") == 1, "the Deployment at 1")
                assert not cold.done()
                await asyncio.to_thread(run_pod, kube_api, ns, fn, runtime, name="echo-pod")
                response = await asyncio.wait_for(cold, WAIT_SECONDS)
                assert response.status_code == 200, response.text
                assert response.json() == {"servedBy": "echo-pod", "event": {"n": 1}}
                assert response.headers["x-cold-start"] == "true"
                assert runtime.probes >= 1, "routed after the gateway's own probe"
                assert runtime.received[0]["invocation"] == response.headers["x-invocation-id"]

                warm = await gw.client.post(f"/function/{ns}/echo/some/path", json={"n": 2})
                assert warm.status_code == 200
                assert warm.headers["x-cold-start"] == "false"
                assert runtime.received[-1]["path"] == "/some/path"

                stats = (await gw.client.get("/internal/stats")).json()
                assert stats["functions"][f"{ns}/echo"]["readyInstances"] == 1

                # Deleting the pod leaves it terminating (the finalizer holds it): the
                # gateway stops routing to it at once, and a request finds no instance.
                kube_api.kubectl("delete", "pod", "echo-pod", "-n", ns, "--wait=false")
                echo = gw.registry.get(f"{ns}/echo")
                assert echo is not None
                await eventually(
                    lambda: gw.backend.ready_count(echo) == 0,
                    "the terminating pod to leave routing",
                )
                pod = kube_api.kubectl_json("get", "pod", "echo-pod", "-n", ns)
                assert pod["metadata"].get("deletionTimestamp")
                apply_function(kube_api, ns, "echo", timeoutSeconds=1)
                await eventually(
                    lambda: (f := gw.registry.get(f"{ns}/echo")) and f.spec.timeout_seconds == 1,
                    "the shorter timeout",
                )
                served = len(runtime.received)
                late = await gw.client.post(f"/function/{ns}/echo", json={"n": 3})
                assert late.status_code == 504
                assert len(runtime.received) == served
        finally:
            release_pod(kube_api, ns, "echo-pod")


def test_kubefaas_gateway_serves_the_cluster_and_stops_on_sigterm(
    kube_api: KubeApi, ns: str, tmp_path: Path
) -> None:
    fn = apply_function(kube_api, ns, "greeter")
    deploy_like_the_operator(kube_api, fn)
    port = free_port()
    log_path = tmp_path / "gateway.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_api.kubeconfig),
        "KUBEFAAS_STATE_DIR": str(tmp_path / "state"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    kubefaas = Path(sys.executable).with_name("kubefaas")
    with stand_in_runtime("greeter-pod") as runtime, log_path.open("w") as log:
        run_pod(kube_api, ns, fn, runtime, name="greeter-pod")
        process = subprocess.Popen(
            [str(kubefaas), "gateway", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                deadline = time.monotonic() + WAIT_SECONDS
                while True:
                    assert process.poll() is None, log_path.read_text()
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{base}/readyz").status_code == 200:
                            break
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(POLL_SECONDS)
                # The pod already ran when the gateway started: found by its first list.
                key = uuid.uuid4().hex
                answer = httpx.post(f"{base}/function/{ns}/greeter", json={"k": key}, timeout=30)
                assert answer.status_code == 200, log_path.read_text()
                assert answer.json() == {"servedBy": "greeter-pod", "event": {"k": key}}
                missing = httpx.post(f"{base}/function/{ns}/nobody", json={})
                assert missing.status_code == 404
            process.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit says why.
            assert process.wait(timeout=WAIT_SECONDS) in (0, -signal.SIGTERM)
            assert "Application shutdown complete" in log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            release_pod(kube_api, ns, "greeter-pod")
    # Nothing but the activation path may touch replicas in operator mode.
    assert replicas(kube_api, ns, "greeter") == 0


def service_account_kubeconfig(kube_api: KubeApi, ns: str, account: str, path: Path) -> Path:
    """A kubeconfig for the API server that authenticates as ServiceAccount `account`."""
    token = kube_api.kubectl("create", "token", account, "-n", ns, "--duration=1h").stdout
    admin = yaml.safe_load(kube_api.kubeconfig.read_text(encoding="utf-8"))
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token.strip()}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def render_gateway_role(kube_api: KubeApi, release: str) -> str:
    """The gateway's ClusterRole exactly as `helm install` would create it."""
    version = kube_api.kubectl_json("version")["serverVersion"]["gitVersion"]
    helm = BinaryCache.default().binary("helm")
    return subprocess.run(
        [
            str(helm), "template", release, str(CHART), "--kube-version", version,
            "--show-only", "templates/gateway-clusterrole.yaml",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip


async def test_the_gateway_needs_no_more_than_the_rbac_the_chart_grants_it(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = f"gw-{uuid.uuid4().hex[:8]}"
    rendered = render_gateway_role(kube_api, release)
    role = yaml.safe_load(rendered)
    assert role["kind"] == "ClusterRole"
    kube_api.kubectl("create", "serviceaccount", "gateway", "-n", ns)
    kube_api.apply(rendered)
    kube_api.kubectl(
        "create", "clusterrolebinding", release, f"--clusterrole={role['metadata']['name']}",
        f"--serviceaccount={ns}:gateway",
    )  # fmt: skip
    try:
        fn = apply_function(kube_api, ns, "guarded", timeoutSeconds=1)
        deploy_like_the_operator(kube_api, fn)
        kubeconfig = service_account_kubeconfig(kube_api, ns, "gateway", tmp_path / "sa.yaml")
        async with gateway(kube_api, ns, tmp_path, monkeypatch, kubeconfig=kubeconfig) as gw:
            # Listing and watching Functions and pods worked, or the app would not start.
            assert f"{ns}/guarded" in gw.registry
            response = await gw.client.post(f"/function/{ns}/guarded", json={})
        # 504, not 503: the scale-up was allowed (a refused one answers 503 at once).
        assert response.status_code == 504, response.text
        assert replicas(kube_api, ns, "guarded") == 1
    finally:
        kube_api.kubectl("delete", "clusterrolebinding", release, check=False)
        kube_api.kubectl("delete", "clusterrole", role["metadata"]["name"], check=False)


async def test_token_auth_reads_the_keys_from_a_secret_through_the_api(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube_api.kubectl(
        "create", "secret", "generic", "kubefaas-invoke-tokens", "-n", ns,
        "--from-literal=old=key-one", "--from-literal=new=key-two",
    )  # fmt: skip
    apply_function(kube_api, ns, "guarded", timeoutSeconds=1)  # no spec.auth: the default
    async with gateway(kube_api, ns, tmp_path, monkeypatch, auth_default="token") as gw:
        await eventually(lambda: f"{ns}/guarded" in gw.registry, "the Function")
        refused = await gw.client.post(f"/function/{ns}/guarded", json={})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Bearer realm="kubefaas"')
        wrong = {"Authorization": "Bearer key-three"}
        assert (await gw.client.post(f"/function/{ns}/guarded", headers=wrong)).status_code == 401
        for key in ("key-one", "key-two"):
            headers = {"X-Api-Key": key}
            # Past the door: there is no Deployment here, so the call then finds no capacity.
            response = await gw.client.post(f"/function/{ns}/guarded", json={}, headers=headers)
            assert response.status_code == 503, response.text
            assert "has no Deployment yet" in response.json()["error"]["message"]
