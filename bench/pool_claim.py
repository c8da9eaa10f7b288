"""A cold call served by a warm-pool pod vs a call routed to a running pod, in-process.

Against a real API server (a private API-only cluster, the test suite's ``kube_api``, unless
``--kubeconfig``), the gateway runs in-process (the real app and `KubernetesBackend`, warm
pool on) and the benchmark plays the kubelet as the API tier does: for each of ``--runs``
(20) runs it applies a new Function (inline code, its Deployment at 0 replicas as the
operator builds it), starts a REAL pool runtime (``KUBEFAAS_POOL=1 python -m
kubefaas_runtime``) on 127.0.x.y behind a Ready pool pod object, waits until the gateway's
watch has the pod, then times one call: the claim (JSON patch with a `test` of the pool
label), the specialisation (the runtime imports the handler) and the call itself. Then it
times ``--warm`` (200) calls to the same, now specialised, pod: a plain routed call.

What this does NOT include, and a cluster run will (``bench/cluster_coldstart.py
--pool``, not built yet): the network between the gateway and a pod on another node, the
API server under a real cluster's load, and the kubelet. It is the gateway's and the
runtime's share only.

    python bench/pool_claim.py [--runs 20] [--warm 200] [--kubeconfig PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host import machine

from kubefaas import limits, naming
from kubefaas.api import parse_function
from kubefaas.pool import POOL_COMPONENT, POOL_LABEL
from kubefaas_operator.children import build_deployment
from kubefaas_operator.kube_sync import RestKube, namespaced

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "function.yaml"
RUNTIME_SOURCE = ROOT / "runtime"
CODE = "def handler(event, context):\n    return {'n': event.get('n')}\n"


@contextlib.contextmanager
def api_server(kubeconfig: Path | None) -> Iterator[Path]:
    if kubeconfig is not None:
        yield kubeconfig
        return
    from kubefaas_cluster.pytest_plugin import private_kube_api

    with private_kube_api() as api:
        yield api.kubeconfig


def install_crd(kube: RestKube) -> None:
    import yaml

    crd = yaml.safe_load(CRD.read_text())
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    if kube.get(f"{path}/{crd['metadata']['name']}") is None:
        kube.create(path, crd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = kube.get(f"{path}/{crd['metadata']['name']}") or {}
        conditions = live.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            time.sleep(1)
            return
        time.sleep(0.2)
    raise RuntimeError("the Function CRD never became Established")


def create_namespace(kube: RestKube, ns: str) -> None:
    """A namespace pods can be created in (its default ServiceAccount exists)."""
    kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    deadline = time.monotonic() + 60
    while kube.get(namespaced("v1", "serviceaccounts", ns, "default")) is None:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.1)


def start_pool_runtime(host: str, scratch: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(RUNTIME_SOURCE), os.environ.get("PYTHONPATH", "")) if p
        ),
        "PORT": str(port),
        "HOST": host,
        "TMPDIR": str(scratch),
        "KUBEFAAS_POOL": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kubefaas_runtime"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, port


def wait_healthy(host: str, port: int) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://{host}:{port}/healthz", trust_env=False).status_code == 200:
                return
        time.sleep(0.02)
    raise RuntimeError(f"the pool runtime on {host}:{port} never answered")


def create_function(kube: RestKube, ns: str, name: str) -> None:
    body = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": CODE}}},
    }
    group = f"{limits.API_GROUP}/{limits.API_VERSION}"
    live = kube.create(namespaced(group, limits.PLURAL, ns), body)
    fn = parse_function({k: live[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    deployment = build_deployment(fn, image_for_runtime=limits.RUNTIME_IMAGES, replicas_hint=0)
    kube.create(namespaced("apps/v1", "deployments", ns), deployment)


def create_pool_pod(kube: RestKube, ns: str, name: str, host: str, port: int) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {POOL_LABEL: "python3.11", naming.COMPONENT_LABEL: POOL_COMPONENT},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "function",
                    "image": limits.RUNTIME_IMAGES["python3.11"],
                    "ports": [{"name": naming.RUNTIME_PORT_NAME, "containerPort": port}],
                    "resources": {"limits": {"memory": "256Mi"}},
                }
            ],
        },
    }
    kube.create(namespaced("v1", "pods", ns), pod)
    status = {
        "phase": "Running",
        "podIP": host,
        "podIPs": [{"ip": host}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    kube.patch_status(namespaced("v1", "pods", ns, name), status)


@contextlib.asynccontextmanager
async def in_process_gateway(ns: str, state: Path) -> AsyncIterator[tuple[Any, Any]]:
    import httpx

    from kubefaas_gateway.app import create_app
    from kubefaas_gateway.backends.kubernetes import KubernetesBackend
    from kubefaas_gateway.registry import FunctionRegistry
    from kubefaas_gateway.settings import Settings

    settings = Settings(state_dir=state, namespaces=(ns,), auth_default="none", warm_pool=True)
    registry = FunctionRegistry()
    backend = KubernetesBackend(settings=settings, registry=registry)
    app = create_app(settings, backend, registry, background=())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=60
        ) as client,
    ):
        yield client, backend


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(kubeconfig: Path, runs: int, warm: int) -> dict[str, Any]:
    os.environ["KUBECONFIG"] = str(kubeconfig)
    os.environ.pop("KUBERNETES_SERVICE_HOST", None)
    kube = RestKube.from_environment(pool_size=4)
    install_crd(kube)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    create_namespace(kube, ns)
    cold: list[float] = []
    steps: list[dict[str, float]] = []
    routed: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        async with in_process_gateway(ns, Path(scratch) / "state") as (client, backend):
            for run in range(runs):
                name = f"f{run}"
                host = f"127.0.{100 + run // 200}.{2 + run % 200}"
                process, port = start_pool_runtime(host, Path(scratch) / name)
                try:
                    await asyncio.to_thread(wait_healthy, host, port)
                    await asyncio.to_thread(create_function, kube, ns, name)
                    await asyncio.to_thread(create_pool_pod, kube, ns, f"pool-{run}", host, port)
                    deadline = time.monotonic() + 30
                    while not (
                        backend.pool.pods.candidates(ns, "python3.11", memory_mib=0)
                        and f"{ns}/{name}" in backend._registry
                    ):
                        assert time.monotonic() < deadline, "the gateway never saw the pool pod"
                        await asyncio.sleep(0.01)
                    started = time.perf_counter()
                    response = await client.post(f"/function/{ns}/{name}", json={"n": run})
                    elapsed = (time.perf_counter() - started) * 1000
                    assert response.status_code == 200, response.text
                    assert response.headers["x-cold-start"] == "true"
                    cold.append(elapsed)
                    steps.append(backend.pool.timings[-1])
                    if run == runs - 1:
                        for n in range(warm):
                            started = time.perf_counter()
                            response = await client.post(f"/function/{ns}/{name}", json={"n": n})
                            routed.append((time.perf_counter() - started) * 1000)
                            assert response.headers["x-cold-start"] == "false"
                finally:
                    process.terminate()
                    process.wait(timeout=20)
    kube.delete(f"/api/v1/namespaces/{ns}")
    kube.close()

    def figures(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 0.95), 2),
        }

    return {
        "runs": runs,
        "cold_call_via_pool": figures(cold),
        "claim_patch": figures([s["claim_ms"] for s in steps]),
        "document_wait": figures([s["document_wait_ms"] for s in steps]),
        "specialise": figures([s["specialise_ms"] for s in steps]),
        "claim_to_routed": figures([s["routed_ms"] for s in steps]),
        "warm_routed_call": figures(routed),
        "warm_calls": len(routed),
        "machine": machine(),
    }


def print_table(result: dict[str, Any]) -> None:
    rows = [
        ("cold call via a pool pod (client)", "cold_call_via_pool"),
        ("  claim patch (API server)", "claim_patch"),
        ("  document reads, beyond the claim", "document_wait"),
        ("  specialise (runtime imports handler)", "specialise"),
        ("  claim start -> routed", "claim_to_routed"),
        ("routed call to a running pod (client)", "warm_routed_call"),
    ]
    print(f"{'':<42} {'p50 ms':>8} {'p95 ms':>8}")
    for label, key in rows:
        print(f"{label:<42} {result[key]['p50_ms']:>8} {result[key]['p95_ms']:>8}")
    host = result["machine"]
    print(
        f"\n{result['runs']} cold runs, {result['warm_calls']} warm calls; machine: "
        f"{host['nproc']} x {host['cpu']}, Python {host['python']}, "
        f"load average {host['loadavg_1m_at_start']} at start"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--kubeconfig", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with api_server(args.kubeconfig) as kubeconfig:
        result = asyncio.run(measure(kubeconfig, args.runs, args.warm))
    print_table(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
