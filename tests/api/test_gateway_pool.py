"""The gateway's warm pool (docs/warm-pool.md) against a real API server, no kubelet.

As in `test_gateway_kubernetes_cluster`, the test plays the kubelet: it creates pod objects
and writes their status (Running, Ready, a podIP on 127.0.x.y) through the status
subresource. Behind each pool pod runs a REAL pool runtime (``KUBEFAAS_POOL=1 python -m
kubefaas_runtime``) bound to that IP, so the claim (a JSON patch on the API server), the
specialisation (the runtime imports the function) and the calls are all real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubefaas import limits, naming
from kubefaas.pool import CLAIMED_AT_LABEL, POOL_COMPONENT, POOL_LABEL, SPECIALISED_LABEL
from kubefaas_cluster.binaries import BinaryCache
from kubefaas_cluster.pytest_plugin import KubeApi
from kubefaas_gateway.app import create_app
from kubefaas_gateway.backends.kubernetes import KubernetesBackend
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from tests.api.test_gateway_kubernetes_cluster import (
    CHART,
    apply_function,
    crd,
    deploy_like_the_operator,
    ns,
    release_pod,
    replicas,
    run_pod,
    service_account_kubeconfig,
    stand_in_runtime,
)

__all__ = ["crd", "ns"]  # fixtures used here

RUNTIME_SOURCE = Path(__file__).resolve().parents[2] / "runtime"
WAIT_SECONDS = 30.0
CODE = """\
import os
import time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"function": context.function_name, "pid": os.getpid(), "event": event}
"""


# -- a pool pod: a real pool runtime on 127.0.x.y behind a pod object ------------------------------


@dataclass
class PoolRuntime:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def pool_runtimes(tmp_path: Path, count: int) -> Iterator[list[PoolRuntime]]:
    started: list[PoolRuntime] = []
    try:
        for index in range(count):
            host = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
            port = _free_port(host)
            log = tmp_path / f"pool-runtime-{index}.log"
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(RUNTIME_SOURCE), os.environ.get("PYTHONPATH", "")) if p
                ),
                "PORT": str(port),
                "HOST": host,
                "TMPDIR": str(tmp_path / f"pool-scratch-{index}"),
                "KUBEFAAS_POOL": "1",
            }
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "kubefaas_runtime"], env=env, stdout=out, stderr=out
                )
            started.append(PoolRuntime(host=host, port=port, process=process, log=log))
        for runtime in started:
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                with contextlib.suppress(httpx.TransportError):
                    url = f"http://{runtime.host}:{runtime.port}/healthz"
                    if httpx.get(url, trust_env=False).json() == {"status": "pool"}:
                        break
                assert runtime.process.poll() is None, runtime.log.read_text()
                assert time.monotonic() < deadline, runtime.log.read_text()
                time.sleep(0.02)
        yield started
    finally:
        for runtime in started:
            runtime.process.terminate()
        for runtime in started:
            runtime.process.wait(timeout=20)


def run_pool_pod(kube_api: KubeApi, ns: str, runtime: PoolRuntime, *, name: str) -> None:
    """Play the kubelet for a pool pod as the pool Deployment would make it: Running, Ready."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                POOL_LABEL: "python3.11",
                naming.COMPONENT_LABEL: POOL_COMPONENT,
                naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
            },
        },
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "function",
                    "image": limits.RUNTIME_IMAGES["python3.11"],
                    "ports": [{"name": naming.RUNTIME_PORT_NAME, "containerPort": runtime.port}],
                    "resources": {"limits": {"memory": "256Mi"}},
                }
            ],
        },
    }
    kube_api.kubectl("create", "-f", "-", input=json.dumps(pod))
    status = {
        "phase": "Running",
        "podIP": runtime.host,
        "podIPs": [{"ip": runtime.host}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    kube_api.kubectl(
        "patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def pod_labels(kube_api: KubeApi, ns: str, name: str) -> dict[str, str] | None:
    result = kube_api.kubectl("get", "pod", name, "-n", ns, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    labels: dict[str, str] = json.loads(result.stdout)["metadata"].get("labels") or {}
    return labels


# -- gateways with the warm pool on ---------------------------------------------------------------


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
    tag: str = "a",
    kubeconfig: Path | None = None,
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig or kube_api.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = Settings(
        state_dir=tmp_path / f"state-{tag}", namespaces=(ns,), auth_default="none", warm_pool=True
    )
    registry = FunctionRegistry()
    backend = KubernetesBackend(settings=settings, registry=registry)
    app = create_app(settings, backend, registry, background=())
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
        await asyncio.sleep(0.05)


def function_with_code(kube_api: KubeApi, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    fn = apply_function(kube_api, ns, name, code={"inline": {"main.py": CODE}}, **spec)
    deploy_like_the_operator(kube_api, fn)
    return fn


async def sees_pool(gw: Gateway, ns: str, count: int) -> None:
    await eventually(
        lambda: len(gw.backend.pool.pods.candidates(ns, "python3.11", memory_mib=0)) == count,
        f"{count} pool pod(s) in the gateway's watch",
    )


# -- tests -----------------------------------------------------------------------------------------


async def test_a_cold_call_is_served_by_a_specialised_pool_pod_until_the_functions_own_is_ready(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fn = function_with_code(kube_api, ns, "hello", timeoutSeconds=20)
    with pool_runtimes(tmp_path, 1) as (runtime,), stand_in_runtime("hello-own") as own:
        run_pool_pod(kube_api, ns, runtime, name="pool-a")
        try:
            async with gateway(kube_api, ns, tmp_path, monkeypatch) as gw:
                await eventually(lambda: f"{ns}/hello" in gw.registry, "the Function")
                await sees_pool(gw, ns, 1)
                cold = await gw.client.post(f"/function/{ns}/hello", json={"n": 1})
                assert cold.status_code == 200, cold.text
                answer = cold.json()
                # The function's own code answered, in the pool runtime's process.
                assert answer["function"] == "hello"
                assert answer["pid"] == runtime.process.pid
                assert answer["event"] == {"n": 1}
                assert cold.headers["x-cold-start"] == "true"
                labels = await eventually(
                    lambda: (
                        (found := pod_labels(kube_api, ns, "pool-a"))
                        and found.get(SPECIALISED_LABEL) == "true"
                        and found
                    ),
                    "the claimed pod relabelled",
                )
                assert POOL_LABEL not in labels
                assert labels[naming.FUNCTION_LABEL] == "hello"
                assert labels[naming.COMPONENT_LABEL] == naming.FUNCTION_COMPONENT
                # The normal activation still happened: the function's own pod is coming.
                assert replicas(kube_api, ns, "hello") == 1
                assert gw.backend.pool.claims == 1

                # A slow call is in flight on the specialised pod when the function's own
                # pod comes up ("the kubelet" runs it).
                slow = asyncio.create_task(
                    gw.client.post(f"/function/{ns}/hello", json={"sleep": 3})
                )
                await asyncio.sleep(0.5)
                await asyncio.to_thread(run_pod, kube_api, ns, fn, own, name="hello-own")
                hello = gw.registry.get(f"{ns}/hello")
                assert hello is not None

                async def routed_to_own() -> bool:
                    response = await gw.client.post(f"/function/{ns}/hello", json={"n": 2})
                    assert response.status_code == 200, response.text
                    return bool(response.json().get("servedBy") == "hello-own")

                deadline = time.monotonic() + WAIT_SECONDS
                while not await routed_to_own():
                    assert time.monotonic() < deadline, "never routed to the function's own pod"
                    await asyncio.sleep(0.05)
                # New calls go to the own pod only; the specialised one finishes its call.
                for _ in range(5):
                    assert await routed_to_own()
                assert not slow.done()
                assert pod_labels(kube_api, ns, "pool-a") is not None, "deleted mid-call"
                finished = await asyncio.wait_for(slow, WAIT_SECONDS)
                assert finished.status_code == 200, finished.text
                assert finished.json()["pid"] == runtime.process.pid
                await eventually(
                    lambda: pod_labels(kube_api, ns, "pool-a") is None,
                    "the retired pod deleted",
                )
        finally:
            release_pod(kube_api, ns, "hello-own")


async def test_waiting_calls_share_one_claim_and_two_gateways_never_claim_the_same_pod(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    function_with_code(kube_api, ns, "burst", timeoutSeconds=20)
    function_with_code(kube_api, ns, "raced", timeoutSeconds=20)
    with pool_runtimes(tmp_path, 2) as runtimes:
        for index, runtime in enumerate(runtimes):
            run_pool_pod(kube_api, ns, runtime, name=f"pool-{index}")
        async with (
            gateway(kube_api, ns, tmp_path, monkeypatch, tag="a") as first,
            gateway(kube_api, ns, tmp_path, monkeypatch, tag="b") as second,
        ):
            for gw in (first, second):
                await eventually(lambda g=gw: f"{ns}/raced" in g.registry, "the Functions")
                await sees_pool(gw, ns, 2)
            # Eight calls wait on one gateway: one claim, one pod, the other stays pooled.
            calls = [first.client.post(f"/function/{ns}/burst", json={"i": i}) for i in range(8)]
            answers = await asyncio.gather(*calls)
            assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
            assert len({a.json()["pid"] for a in answers}) == 1
            assert first.backend.pool.claims == 1
            pooled = [
                name
                for name in ("pool-0", "pool-1")
                if POOL_LABEL in (pod_labels(kube_api, ns, name) or {})
            ]
            assert len(pooled) == 1
            await sees_pool(second, ns, 1)

            # Two gateways call another function at once, with one pool pod left: one
            # claim wins; the other gateway's patch fails its test (or it saw the pod go)
            # and it routes to the same pod once the watch shows it as a function pod.
            raced = await asyncio.gather(
                first.client.post(f"/function/{ns}/raced", json={"from": "first"}),
                second.client.post(f"/function/{ns}/raced", json={"from": "second"}),
            )
            assert [a.status_code for a in raced] == [200, 200], [a.text for a in raced]
            assert raced[0].json()["pid"] == raced[1].json()["pid"]
            assert first.backend.pool.claims + second.backend.pool.claims == 2
            labels = pod_labels(kube_api, ns, pooled[0]) or {}
            assert labels.get(naming.FUNCTION_LABEL) == "raced"


async def test_two_claims_of_one_pod_at_once_the_api_server_lets_exactly_one_through(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_function(kube_api, ns, "left")
    apply_function(kube_api, ns, "right")
    with pool_runtimes(tmp_path, 1) as (runtime,):
        run_pool_pod(kube_api, ns, runtime, name="pool-a")
        async with (
            gateway(kube_api, ns, tmp_path, monkeypatch, tag="a") as first,
            gateway(kube_api, ns, tmp_path, monkeypatch, tag="b") as second,
        ):
            claims = []
            for gw, name in ((first, "left"), (second, "right")):
                await eventually(lambda g=gw, n=name: g.registry.get(f"{ns}/{n}"), "a Function")
                await sees_pool(gw, ns, 1)
                fn = gw.registry.get(f"{ns}/{name}")
                (pod,) = gw.backend.pool.pods.candidates(ns, "python3.11", memory_mib=0)
                assert fn is not None
                claims.append(gw.backend.pool._take(gw.backend.kube, fn, pod))  # type: ignore[arg-type]
            won = [result for result in await asyncio.gather(*claims) if result is not None]
        # Both patches reached the API server; the second one's test of the pool label failed.
        assert len(won) == 1
        assert first.backend.pool.conflicts + second.backend.pool.conflicts == 1
        labels = pod_labels(kube_api, ns, "pool-a") or {}
        assert POOL_LABEL not in labels
        assert labels[naming.FUNCTION_LABEL] == won[0]["metadata"]["labels"][naming.FUNCTION_LABEL]
        assert labels[SPECIALISED_LABEL] == "pending"
        # When it was claimed: a gateway that died here leaves a pod the sweep deletes.
        assert abs(int(labels[CLAIMED_AT_LABEL]) - time.time()) < 60


async def test_a_function_that_reads_secrets_does_not_use_the_pool(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "k"}}}]
    function_with_code(kube_api, ns, "secretive", timeoutSeconds=1, env=env)
    with pool_runtimes(tmp_path, 1) as (runtime,):
        run_pool_pod(kube_api, ns, runtime, name="pool-a")
        async with gateway(kube_api, ns, tmp_path, monkeypatch) as gw:
            await eventually(lambda: f"{ns}/secretive" in gw.registry, "the Function")
            await sees_pool(gw, ns, 1)
            response = await gw.client.post(f"/function/{ns}/secretive", json={})
            assert response.status_code == 504, response.text
            assert gw.backend.pool.claims == 0
        # It cold started as without a pool; the pool pod was not touched.
        assert replicas(kube_api, ns, "secretive") == 1
        assert (pod_labels(kube_api, ns, "pool-a") or {}).get(POOL_LABEL) == "python3.11"
        async with httpx.AsyncClient(trust_env=False) as client:
            health = await client.get(f"http://{runtime.host}:{runtime.port}/healthz")
        assert health.json() == {"status": "pool"}


async def test_a_failed_specialisation_deletes_the_pod_and_the_call_cold_starts(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = {"main.py": "raise RuntimeError('broken at import')\n"}
    fn = apply_function(kube_api, ns, "broken", timeoutSeconds=2, code={"inline": broken})
    deploy_like_the_operator(kube_api, fn)
    with pool_runtimes(tmp_path, 1) as (runtime,):
        run_pool_pod(kube_api, ns, runtime, name="pool-a")
        async with gateway(kube_api, ns, tmp_path, monkeypatch) as gw:
            await eventually(lambda: f"{ns}/broken" in gw.registry, "the Function")
            await sees_pool(gw, ns, 1)
            response = await gw.client.post(f"/function/{ns}/broken", json={})
            # No pod of its own comes up here: the call times out as a cold start would.
            assert response.status_code == 504, response.text
            assert gw.backend.pool.failures == 1
            assert gw.backend.pool.claims == 0
        await eventually(lambda: pod_labels(kube_api, ns, "pool-a") is None, "the pod deleted")
        assert replicas(kube_api, ns, "broken") == 1


def render_pooled_gateway_role(kube_api: KubeApi, release: str) -> str:
    """The gateway's ClusterRole as `helm install --set warmPool.size=1` would create it."""
    version = kube_api.kubectl_json("version")["serverVersion"]["gitVersion"]
    return subprocess.run(
        [
            str(BinaryCache.default().binary("helm")), "template", release, str(CHART),
            "--kube-version", version, "--set", "warmPool.size=1",
            "--show-only", "templates/gateway-clusterrole.yaml",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip


async def test_the_charts_gateway_role_with_pools_on_is_enough_to_claim_relabel_and_delete(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = f"gw-{uuid.uuid4().hex[:8]}"
    rendered = render_pooled_gateway_role(kube_api, release)
    role = yaml.safe_load(rendered)
    kube_api.kubectl("create", "serviceaccount", "gateway", "-n", ns)
    kube_api.apply(rendered)
    kube_api.kubectl(
        "create", "clusterrolebinding", release, f"--clusterrole={role['metadata']['name']}",
        f"--serviceaccount={ns}:gateway",
    )  # fmt: skip
    # Code in a ConfigMap of the user's: the gateway reads it with its `get`.
    kube_api.kubectl(
        "create", "configmap", "hello-code", "-n", ns, f"--from-literal=main.py={CODE}"
    )
    fn = apply_function(
        kube_api, ns, "hello", timeoutSeconds=20, code={"configMap": {"name": "hello-code"}}
    )
    deploy_like_the_operator(kube_api, fn)
    broken = {"main.py": "raise RuntimeError('broken at import')\n"}
    deploy_like_the_operator(
        kube_api, apply_function(kube_api, ns, "broken", timeoutSeconds=2, code={"inline": broken})
    )
    try:
        kubeconfig = service_account_kubeconfig(kube_api, ns, "gateway", tmp_path / "sa.yaml")
        with pool_runtimes(tmp_path, 2) as runtimes:
            for index, runtime in enumerate(runtimes):
                run_pool_pod(kube_api, ns, runtime, name=f"pool-{index}")
            async with gateway(kube_api, ns, tmp_path, monkeypatch, kubeconfig=kubeconfig) as gw:
                await eventually(lambda: f"{ns}/broken" in gw.registry, "the Functions")
                await sees_pool(gw, ns, 2)
                served = await gw.client.post(f"/function/{ns}/hello", json={"n": 1})
                assert served.status_code == 200, served.text
                assert served.json()["function"] == "hello"
                assert served.json()["pid"] in {r.process.pid for r in runtimes}
                # The relabel (a merge patch) was allowed too.
                await eventually(
                    lambda: any(
                        (pod_labels(kube_api, ns, f"pool-{i}") or {}).get(SPECIALISED_LABEL)
                        == "true"
                        for i in (0, 1)
                    ),
                    "the claimed pod labelled as a function pod",
                )
                failed = await gw.client.post(f"/function/{ns}/broken", json={})
                assert failed.status_code == 504, failed.text
                assert gw.backend.pool.failures == 1
            # The pod that failed to specialise was deleted with the role's `delete`.
            names = [n for n in ("pool-0", "pool-1") if pod_labels(kube_api, ns, n) is not None]
            assert len(names) == 1
    finally:
        kube_api.kubectl("delete", "clusterrolebinding", release, check=False)
        kube_api.kubectl("delete", "clusterrole", role["metadata"]["name"], check=False)


async def test_a_pod_claimed_but_never_specialised_is_deleted_once_stale(
    kube_api: KubeApi, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a gateway that died mid-claim leaves: out of its pool, `specialised=pending`.
    now = int(time.time())
    for name, claimed in (("left-behind", now - 600), ("being-claimed", now)):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {
                    naming.FUNCTION_LABEL: "hello",
                    SPECIALISED_LABEL: "pending",
                    CLAIMED_AT_LABEL: str(claimed),
                    naming.COMPONENT_LABEL: POOL_COMPONENT,
                },
            },
            "spec": {
                "automountServiceAccountToken": False,
                "containers": [{"name": "function", "image": limits.RUNTIME_IMAGES["python3.11"]}],
            },
        }
        kube_api.kubectl("create", "-f", "-", input=json.dumps(pod))
    async with gateway(kube_api, ns, tmp_path, monkeypatch):
        await eventually(
            lambda: pod_labels(kube_api, ns, "left-behind") is None, "the stale claim deleted"
        )
    # A claim still within its time is left alone.
    assert pod_labels(kube_api, ns, "being-claimed") is not None
