"""kubefaas and Knative Serving side by side: the same function, on the same node, in one run.

Installs Knative Serving (`kubefaas_cluster.knative`: built from the Go module proxy,
imported into the local node, no ingress, the activator always in path with
``target-burst-capacity: -1``) next to the kubefaas chart (as `bench/cluster_coldstart.py`
installs it), and deploys the same code on both: a kubefaas Function, and a Knative Service
whose only container is the kubefaas runtime image (the image the operator runs for
``python3.11``) with the same launch environment (`kubefaas.contract`) and the same code in a
ConfigMap mounted where the operator mounts it. Then, in one run (docs/peers.md):

1. **Cold start from zero**, `--rounds` (10) per platform, alternating which goes first:
   kubefaas is brought to zero as `cluster_coldstart.to_zero` does; Knative by its own
   autoscaler (stable window 6 s on that Service, the minimum) until its Deployment has no
   pod. Each call is timed at the client; p50/p95.
2. **Warm throughput**: `--connections` (8) closed-loop connections for `--seconds` (10)
   through the kubefaas gateway and through Knative's activator (+ queue-proxy), with the
   same load generator (`gateway_overhead.load`: wrk if installed); req/s, p50, p99.
3. **Scale-out** under the same open-loop load (`autoscale.open_loop`): `--rps` (10)
   requests/s of a function sleeping `--work` s (0.5) with target concurrency 1 and
   `--max-scale` (5): seconds from the first request until as many pods are ready as the
   load needs (ceil(rps x work)), the most pods ready, and the calls' p50/p99 and errors.

The activator is reached by its Service (ClusterIP on the local cluster, a loopback
port-forward elsewhere, as the gateway is) with ``Knative-Serving-Namespace`` and
``Knative-Serving-Revision`` headers: without an ingress that is Knative's own data path
behind the ingress. Prints a table; ``--json PATH`` writes every figure with the versions
and the machine; ``--record`` appends the table to bench/RESULTS.md. Knative is uninstalled
at the end unless ``--keep``.

    python bench/peers.py [--rounds 10] [--connections 8] [--seconds 10] [--rps 10]
        [--work 0.5] [--max-scale 5] [--json PATH] [--record] [--keep]

Needs the local cluster (``make cluster-up``): the Knative images are imported into its node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoscale import Call, open_loop
from cluster_coldstart import installed, percentile, to_zero
from gateway_overhead import load
from host import machine

from e2e.harness import (
    INVOKE_TIMEOUT_SECONDS,
    REPO,
    Cluster,
    Gateway,
    KubectlError,
    function_manifest,
    gateway_url,
    resolve_cluster,
    wait_for,
)
from kubefaas import contract, naming, wire
from kubefaas.api import Function
from kubefaas.objects import function_from_object
from kubefaas_cluster import knative
from kubefaas_cluster import versions as cluster_versions
from kubefaas_operator import children

COLD, WARM, SCALE = "cold", "warm", "scale"
HELLO = {"name": "bench"}
KNATIVE_GROUP = "serving.knative.dev"
ACTIVATOR_SERVICE = "activator-service"
READY_TIMEOUT_SECONDS = 240.0
ZERO_TIMEOUT_SECONDS = 180.0
WEBHOOK_TIMEOUT_SECONDS = 90.0
SAMPLE_SECONDS = 0.5
RESULTS = REPO / "bench" / "RESULTS.md"


class NotReady(RuntimeError):
    """Something the benchmark needs is not ready; the message names it."""


# -- the same function on Knative ------------------------------------------------------------


def function_of(manifest: str) -> Function:
    """The kubefaas Function a manifest describes (its uid is only for the builders)."""
    document = yaml.safe_load(manifest)
    document["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    document["metadata"]["generation"] = 1
    return function_from_object(document)


def runtime_image() -> str:
    """The image the operator runs for python3.11, from the chart's values."""
    values = yaml.safe_load((REPO / "charts" / "kubefaas" / "values.yaml").read_text())
    image = values["runtime"]["image"]
    return f"{image['repository']}:{image['tag']}"


def knative_objects(
    fn: Function, *, namespace: str, image: str, window: str | None = None
) -> list[dict[str, Any]]:
    """A ConfigMap with the Function's code and a Knative Service running it as the
    operator runs it (`children.build_deployment`), within what Knative accepts:

    - no ``PORT`` (Knative sets it from the one container port, named ``http1``);
    - the container's securityContext without ``privileged`` (Knative refuses the field),
      no pod-level securityContext (behind a feature flag);
    - the readiness probe on ``/healthz`` without a period: Knative's queue-proxy then
      probes the runtime as fast as it can, its best case;
    - the Function's scaling as Knative annotations: ``target`` (at 100 % utilisation,
      see `knative.AUTOSCALER_CONFIG`), ``max-scale``, ``min-scale``; `window` sets the
      stable window (the cold-start Service uses the 6 s minimum to reach zero sooner).
    """
    deployment = children.build_deployment(
        fn, image_for_runtime={fn.spec.runtime or "": image}, replicas_hint=0
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_map = children.build_config_map(fn)
    config_map["metadata"] = {"name": naming.code_config_map_name(fn.name), "namespace": namespace}
    env = [e for e in container["env"] if e["name"] != "PORT"]
    security = {k: v for k, v in container["securityContext"].items() if k != "privileged"}
    scaling = fn.spec.scaling
    annotations = {
        "autoscaling.knative.dev/target": str(scaling.target_concurrency),
        "autoscaling.knative.dev/max-scale": str(scaling.max_scale),
        "autoscaling.knative.dev/min-scale": str(scaling.min_scale),
    }
    if window is not None:
        annotations["autoscaling.knative.dev/window"] = window
    service = {
        "apiVersion": f"{KNATIVE_GROUP}/v1",
        "kind": "Service",
        "metadata": {
            "name": fn.name,
            "namespace": namespace,
            "labels": {"networking.knative.dev/visibility": "cluster-local"},
        },
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "containerConcurrency": scaling.container_concurrency,
                    "timeoutSeconds": fn.spec.timeout_seconds,
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "image": container["image"],
                            "imagePullPolicy": "Never",
                            "ports": [{"name": "http1", "containerPort": wire.RUNTIME_PORT}],
                            "env": env,
                            "resources": container["resources"],
                            "volumeMounts": container["volumeMounts"],
                            "readinessProbe": {"httpGet": {"path": "/healthz"}},
                            "securityContext": security,
                        }
                    ],
                    "volumes": pod["volumes"],
                },
            }
        },
    }
    return [config_map, service]


def _launch_environment_matches(fn: Function, objects: list[dict[str, Any]]) -> None:
    """The Knative container gets the contract's environment, PORT aside (set by Knative)."""
    container = objects[1]["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"]}
    expected = contract.reserved_names(fn) - {"PORT"}
    if not expected <= names:
        raise AssertionError(f"launch environment lacks {sorted(expected - names)}")


# -- Knative on the cluster -------------------------------------------------------------------


@dataclass
class Knative:
    """Knative Serving installed for the run, and its activator's URL."""

    cluster: Cluster
    documents: list[dict[str, Any]]
    namespace: str
    activator: str = ""
    stop: Callable[[], None] = lambda: None

    @property
    def kubectl(self) -> knative.Kubectl:
        return knative.Kubectl(self.cluster.bin_dir / "kubectl", self.cluster.kubeconfig)

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """Apply, retrying while Knative's webhook is not yet answering the API server."""
        text = yaml.safe_dump_all(objects, sort_keys=False)
        deadline = time.monotonic() + WEBHOOK_TIMEOUT_SECONDS
        while True:
            result = self.cluster.kubectl("apply", "-f", "-", input=text, check=False)
            if result.returncode == 0:
                return
            if "webhook" not in result.stderr or time.monotonic() > deadline:
                raise NotReady(
                    "Knative's webhook (webhook.knative-serving) did not accept the Service "
                    f"within {WEBHOOK_TIMEOUT_SECONDS:.0f}s:\n{result.stderr}\n"
                    + knative._component_state(self.kubectl, "webhook")
                )
            time.sleep(2)

    def revision(self, service: str) -> str:
        """The Service's latest Revision, once Ready (NotReady with its conditions if not)."""

        def ready() -> str | None:
            found = self.cluster.kubectl(
                "get", f"services.{KNATIVE_GROUP}", service, "-n", self.namespace, "-o", "json",
                check=False,
            )  # fmt: skip
            if found.returncode != 0:
                return None
            name = json.loads(found.stdout).get("status", {}).get("latestCreatedRevisionName")
            if not name:
                return None
            revision = self._json("revisions", name)
            conditions = revision.get("status", {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                return str(name)
            return None

        try:
            return str(
                wait_for(
                    f"Knative Revision of {service} Ready", ready, timeout=READY_TIMEOUT_SECONDS
                )
            )
        except pytest.fail.Exception as exc:
            raise NotReady(f"{exc}\n{self.explain(service)}") from None

    def _json(self, kind: str, name: str) -> dict[str, Any]:
        found = self.cluster.kubectl(
            "get", f"{kind}.{KNATIVE_GROUP}", name, "-n", self.namespace, "-o", "json",
            check=False,
        )  # fmt: skip
        return json.loads(found.stdout) if found.returncode == 0 else {}

    def explain(self, service: str) -> str:
        parts = [
            self.cluster.kubectl(
                "get",
                "ksvc,configurations,revisions,podautoscalers,serverlessservices,pods",
                "-n",
                self.namespace,
                "-o",
                "wide",
                check=False,
            ).stdout,
            self.cluster.kubectl(
                "get",
                "revisions",
                "-n",
                self.namespace,
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}: {.status.conditions}{'\\n'}{end}",
                check=False,
            ).stdout,
            self.cluster.kubectl(
                "get", "events", "-n", self.namespace, "--sort-by=.lastTimestamp", check=False
            ).stdout[-3000:],
        ]
        for component in ("controller", "autoscaler", "activator"):
            parts.append(
                f"----- {component} -----\n" + knative._component_state(self.kubectl, component)
            )
        return "\n".join(parts)

    def deployment_of(self, revision: str) -> str:
        return f"{revision}-deployment"

    def invoke(self, client: httpx.Client, revision: str, payload: Any) -> httpx.Response:
        return client.post(
            self.activator + "/",
            json=payload,
            headers=self.headers(revision),
            timeout=INVOKE_TIMEOUT_SECONDS,
        )

    def headers(self, revision: str) -> dict[str, str]:
        return {"Knative-Serving-Namespace": self.namespace, "Knative-Serving-Revision": revision}


@contextmanager
def knative_installed(
    cluster: Cluster, *, keep: bool, log: Callable[[str], None]
) -> Iterator[Knative]:
    """Knative built (or cached), imported into the node, installed; removed after unless keep."""
    if cluster.local is None:
        raise NotReady(
            "Knative's images are imported into the local node's containerd: run against the "
            "local cluster (`make cluster-up`, KUBECONFIG unset)"
        )
    cache, built = knative.prepare()
    imported = knative.import_into_node(
        built, containerd_socket=cluster.local.node_paths.containerd_socket
    )
    log(f"knative {cache.version}: imported {', '.join(imported) or 'nothing (up to date)'}")
    documents = knative.render_install(knative.sources(cache), knative.images_by_command(built))
    kubectl = knative.Kubectl(cluster.bin_dir / "kubectl", cluster.kubeconfig)
    namespace = f"kubefaas-peer-{uuid.uuid4().hex[:6]}"
    peer = Knative(cluster=cluster, documents=documents, namespace=namespace)
    try:
        knative.install(kubectl, documents)
        log("knative: controller, webhook, activator and autoscaler available")
        cluster.kubectl("create", "namespace", namespace)
        peer.activator, peer.stop = gateway_url(
            cluster, namespace=knative.SYSTEM_NAMESPACE, service=ACTIVATOR_SERVICE
        )
        yield peer
    finally:
        peer.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s",
                        check=False, timeout=150)  # fmt: skip
        if not keep:
            knative.uninstall(kubectl, documents)
            log("knative: uninstalled")


# -- measuring ------------------------------------------------------------------------------


def knative_to_zero(peer: Knative, revision: str) -> None:
    """Wait until Knative's autoscaler has taken the revision to zero and no pod is left."""
    deployment = peer.deployment_of(revision)

    def gone() -> bool:
        found = peer.cluster.kubectl(
            "get", "deployment", deployment, "-n", peer.namespace,
            "-o", "jsonpath={.spec.replicas}", check=False,
        )  # fmt: skip
        pods = peer.cluster.items(
            "pods", "-n", peer.namespace, "-l", f"serving.knative.dev/revision={revision}"
        )
        return found.returncode == 0 and found.stdout.strip() == "0" and not pods

    try:
        wait_for(f"{revision} at zero", gone, timeout=ZERO_TIMEOUT_SECONDS, interval=0.5)
    except pytest.fail.Exception as exc:
        raise NotReady(f"{exc}\n{peer.explain(revision)}") from None


def cold_rounds(
    cluster: Cluster, gateway: Gateway, functions: str, peer: Knative, revision: str,
    rounds: int, log: Callable[[str], None],
) -> dict[str, list[float]]:  # fmt: skip
    """`rounds` cold calls on each platform, alternating which goes first."""
    times: dict[str, list[float]] = {"kubefaas": [], "knative": []}
    with httpx.Client(trust_env=False) as client:

        def kubefaas_call() -> float:
            to_zero(cluster, gateway, functions, COLD)
            started = time.monotonic()
            response = gateway.invoke(COLD, HELLO)
            took = (time.monotonic() - started) * 1000
            if response.status_code != 200 or response.headers.get("x-cold-start") != "true":
                raise NotReady(f"kubefaas cold call: {response.status_code} {response.text[:300]}")
            return took

        def knative_call() -> float:
            knative_to_zero(peer, revision)
            started = time.monotonic()
            response = peer.invoke(client, revision, HELLO)
            took = (time.monotonic() - started) * 1000
            if response.status_code != 200:
                raise NotReady(
                    f"Knative's activator answered {response.status_code}: {response.text[:300]}"
                    f"\n{peer.explain(revision)}"
                )
            return took

        calls = {"kubefaas": kubefaas_call, "knative": knative_call}
        for number in range(rounds):
            order = ["kubefaas", "knative"] if number % 2 == 0 else ["knative", "kubefaas"]
            for platform in order:
                times[platform].append(calls[platform]())
            log(
                f"cold round {number + 1}/{rounds}: kubefaas {times['kubefaas'][-1]:.0f} ms, "
                f"knative {times['knative'][-1]:.0f} ms"
            )
    return times


def warm(
    url: str, connections: int, seconds: float, headers: dict[str, str] | None
) -> dict[str, float]:
    load(url, connections, min(seconds, 3), headers)  # warm up connections and instances
    run = load(url, connections, seconds, headers)
    return {
        "rps": run.requests_per_second,
        "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms,
        "requests": run.requests,
    }


@dataclass
class ScaleOut:
    ready: list[tuple[float, int]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


def _ready_reader(cluster: Cluster, namespace: str, deployment: str) -> Callable[[], int]:
    """Reads the Deployment's ready pods through the API (no kubectl process per sample)."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    apps = client.AppsV1Api(api)

    def read() -> int:
        try:
            status = apps.read_namespaced_deployment_status(deployment, namespace).status
        except client.exceptions.ApiException:
            return 0
        return int(status.ready_replicas or 0) if status else 0

    return read


def scale_out(
    cluster: Cluster, *, url: str, headers: dict[str, str], namespace: str, deployment: str,
    rps: float, work: float, seconds: float,
) -> ScaleOut:  # fmt: skip
    """Open-loop load for `seconds`, sampling the Deployment's ready pods meanwhile."""
    import aiohttp

    result = ScaleOut()
    ready_pods = _ready_reader(cluster, namespace, deployment)
    stop = threading.Event()
    origin = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            ready = ready_pods()
            result.ready.append((time.monotonic() - origin, ready))
            stop.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def run() -> None:
        timeout = aiohttp.ClientTimeout(total=INVOKE_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            await open_loop(
                session, url, rps=rps, seconds=seconds, body={"seconds": work},
                origin=origin, into=result.calls,
            )  # fmt: skip

    try:
        asyncio.run(run())
    finally:
        stop.set()
        sampler.join(timeout=10)
    return result


def scale_figures(run: ScaleOut, *, needed: int) -> dict[str, Any]:
    reached = next((t for t, ready in run.ready if ready >= needed), None)
    latencies = [c.seconds * 1000 for c in run.calls if c.status == 200]
    return {
        "pods_needed": needed,
        "seconds_to_needed": reached,
        "most_ready": max((ready for _, ready in run.ready), default=0),
        "calls": len(run.calls),
        "errors": sum(1 for c in run.calls if c.status != 200),
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": percentile(latencies, 0.99) if latencies else None,
        "ready_over_time": run.ready,
    }


# -- the run ----------------------------------------------------------------------------------


def _manifests(namespace: str, max_scale: int) -> dict[str, str]:
    return {
        COLD: function_manifest(
            "hello", name=COLD, namespace=namespace,
            spec={"scaling": {"scaleToZeroAfterSeconds": 10}},
        ),
        WARM: function_manifest(
            "hello", name=WARM, namespace=namespace, spec={"scaling": {"minScale": 1}}
        ),
        SCALE: function_manifest(
            "slow", name=SCALE, namespace=namespace,
            spec={"timeoutSeconds": 30, "scaling": {
                "targetConcurrency": 1, "maxScale": max_scale, "scaleToZeroAfterSeconds": 10,
            }},
        ),
    }  # fmt: skip


def measure(
    cluster: Cluster, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    image = runtime_image()
    with (
        knative_installed(cluster, keep=args.keep, log=log) as peer,
        installed(cluster) as (
            gateway,
            functions,
        ),
    ):
        manifests = _manifests(functions, args.max_scale)
        for manifest in manifests.values():
            cluster.kubectl("apply", "-f", "-", input=manifest)
        for name, manifest in manifests.items():
            fn = function_of(manifest)
            objects = knative_objects(
                fn, namespace=peer.namespace, image=image, window="6s" if name == COLD else None
            )
            _launch_environment_matches(fn, objects)
            peer.apply(objects)
        revisions = {name: peer.revision(name) for name in manifests}
        log(f"knative revisions ready: {', '.join(revisions.values())}")
        wait_for(
            "the gateway to know the functions",
            lambda: all(
                f"{functions}/{name}" in gateway.client.get("/internal/stats").json()["functions"]
                for name in manifests
            ),
            timeout=60,
        )
        with httpx.Client(trust_env=False) as client:
            for name in manifests:  # first calls: one-time costs are not measured
                gateway.invoke(name, HELLO if name != SCALE else {"seconds": 0}).raise_for_status()
                response = peer.invoke(
                    client, revisions[name], HELLO if name != SCALE else {"seconds": 0}
                )
                if response.status_code != 200:
                    raise NotReady(
                        f"Knative's activator ({peer.activator}) answered {response.status_code} "
                        f"for {revisions[name]}: {response.text[:300]}\n{peer.explain(name)}"
                    )
        results: dict[str, Any] = {}
        cold = cold_rounds(cluster, gateway, functions, peer, revisions[COLD], args.rounds, log)
        results["cold_ms"] = cold
        log("warm: kubefaas gateway")
        results["warm"] = {
            "kubefaas": warm(
                f"{gateway.url}/function/{functions}/{WARM}", args.connections, args.seconds, None
            ),
        }
        log("warm: knative activator + queue-proxy")
        results["warm"]["knative"] = warm(
            peer.activator + "/", args.connections, args.seconds, peer.headers(revisions[WARM])
        )
        needed = min(args.max_scale, math.ceil(args.rps * args.work))
        results["scale_out"] = {}
        for platform in ("kubefaas", "knative"):
            # Both scale functions at zero before either is loaded: the node has room for
            # one platform's pods at a time, and each starts from the same state.
            to_zero(cluster, gateway, functions, SCALE)
            knative_to_zero(peer, revisions[SCALE])
            if platform == "kubefaas":
                url, headers, namespace, deployment = (
                    f"{gateway.url}/function/{functions}/{SCALE}",
                    {},
                    functions,
                    SCALE,
                )
            else:
                url, headers, namespace, deployment = (
                    peer.activator + "/", peer.headers(revisions[SCALE]), peer.namespace,
                    peer.deployment_of(revisions[SCALE]),
                )  # fmt: skip
            log(f"scale-out: {platform}, {args.rps} rps of {args.work}s for {args.load_seconds}s")
            run = scale_out(
                cluster, url=url, headers=headers, namespace=namespace, deployment=deployment,
                rps=args.rps, work=args.work, seconds=args.load_seconds,
            )  # fmt: skip
            results["scale_out"][platform] = scale_figures(run, needed=needed)
        return results


def summary(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, kubefaas, knative) rows."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.2f} ms"

    rows = []
    cold = results["cold_ms"]
    for label, q in (("cold start p50", 0.5), ("cold start p95", 0.95)):
        rows.append(
            (label, ms(percentile(cold["kubefaas"], q)), ms(percentile(cold["knative"], q)))
        )
    warm_figures = results["warm"]
    rows.append(
        ("warm req/s", *(f"{warm_figures[p]['rps']:,.0f}" for p in ("kubefaas", "knative")))
    )
    for key in ("p50_ms", "p99_ms"):
        rows.append(
            (f"warm {key[:3]}", *(ms(warm_figures[p][key]) for p in ("kubefaas", "knative")))
        )
    scale = results["scale_out"]

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f} s"

    needed = scale["kubefaas"]["pods_needed"]
    rows.append(
        (
            f"scale-out to {needed} ready pods",
            *(seconds(scale[p]["seconds_to_needed"]) for p in ("kubefaas", "knative")),
        )
    )
    rows.append(
        (
            "scale-out most pods ready",
            *(str(scale[p]["most_ready"]) for p in ("kubefaas", "knative")),
        )
    )
    rows.append(("scale-out call p50", *(ms(scale[p]["p50_ms"]) for p in ("kubefaas", "knative"))))
    rows.append(("scale-out call p99", *(ms(scale[p]["p99_ms"]) for p in ("kubefaas", "knative"))))
    rows.append(
        (
            "scale-out errors",
            *(f"{scale[p]['errors']}/{scale[p]['calls']}" for p in ("kubefaas", "knative")),
        )
    )
    return rows


def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| figure | kubefaas | Knative Serving |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def versions_used() -> dict[str, str]:
    cache = knative.KnativeCache.default()
    stamp = json.loads(cache.stamp.read_text()) if cache.stamp.is_file() else {}
    return {
        "knative_serving": cluster_versions.KNATIVE_VERSION,
        "knative_go": str(stamp.get("go", "unknown")),
        "kubernetes": cluster_versions.KUBERNETES_VERSION,
        "kubefaas": str(
            yaml.safe_load((REPO / "charts" / "kubefaas" / "Chart.yaml").read_text())["appVersion"]
        ),
        "runtime_image": runtime_image(),
    }


def record(text: str, args: argparse.Namespace, host: dict[str, Any], used: dict[str, str]) -> None:
    """Append the table, the versions and the machine to bench/RESULTS.md."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"\n## kubefaas and Knative Serving side by side ({when})\n\n"
        f"`make bench-peers` (bench/peers.py, docs/peers.md): same runtime image, same code, same "
        f"node. Knative Serving {used['knative_serving']} ({used['knative_go']}), no ingress, "
        f"activator always in path; Kubernetes {used['kubernetes']}; {args.rounds} cold rounds per "
        f"platform, {args.connections} connections for {args.seconds:.0f} s, scale-out at "
        f"{args.rps} rps of {args.work} s for {args.load_seconds:.0f} s. "
        f"Machine: {host['nproc']} x {host['cpu']}, load {host['loadavg_1m_at_start']}.\n\n{text}\n"
    )
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="cold starts per platform (10)")
    parser.add_argument("--connections", type=int, default=8, help="warm load connections (8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="warm load seconds (10)")
    parser.add_argument("--rps", type=float, default=10.0, help="scale-out requests/s (10)")
    parser.add_argument("--work", type=float, default=0.5, help="scale-out call seconds (0.5)")
    parser.add_argument("--load-seconds", type=float, default=40.0, help="scale-out load (40)")
    parser.add_argument("--max-scale", type=int, default=5, help="maxScale of both (5)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="leave Knative installed")
    args = parser.parse_args(argv)
    host = machine()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        cluster = resolve_cluster()
        results = measure(cluster, args, log)
    except (NotReady, knative.NotReady, knative.BuildError, KubectlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except pytest.fail.Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    used = versions_used()
    text = table(summary(results))
    print(f"\nkubefaas vs Knative Serving {used['knative_serving']}, same node, one run")
    print(text)
    print(f"machine: {host['nproc']} x {host['cpu']}, load {host['loadavg_1m_at_start']}")
    if args.json:
        document = {
            "machine": host,
            "versions": used,
            "arguments": vars(args) | {"json": str(args.json)},
            **results,
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    if args.record:
        record(text, args, host, used)
    return 0


if __name__ == "__main__":
    sys.exit(main())
