"""Scale-from-zero latency through the gateway on a real cluster, and where the time goes.

Installs the chart (like the e2e tier: restricted namespaces, the gateway reached at its
ClusterIP on the local cluster, through a loopback port-forward elsewhere), applies the
`hello` example with `scaleToZeroAfterSeconds: 10`, and times `--runs` (20) cold calls.
Before each run the function is brought to zero: once it has been idle for its
scale-to-zero time (earlier, the autoscaler would rightly raise it again) the Deployment is
scaled to 0, and the run starts when no pod of it is left and the gateway knows no
instance. Each cold call is timed from the client, and a watch on the function's
Deployment and pods (kept open for the whole benchmark) timestamps, on this machine's
monotonic clock, when each step is first seen:

    Deployment scaled    spec.replicas goes 0 -> 1 (the gateway's activation)
    pod created          the ReplicaSet controller made the pod
    pod scheduled        the scheduler bound it to the node
    sandbox started      the pod's sandbox process runs (network set up by CNI)
    container started    the runtime container's process runs (``python -m kubefaas_runtime``)
    runtime ready        the runtime has imported the handler and answers /healthz 200:
                         the ``readyMonotonic`` of its "ready" log line (containers share
                         the node's monotonic clock, so it is on the same timeline)
    pod IP in the API    the kubelet posted the pod's address: from then on the gateway can
                         probe it (the kubelet notices the started container at its next
                         relist, up to a second later, so this may come after the runtime
                         is ready; then it, not the runtime, decides the response time)
    first response       the client has the answer (X-Cold-Start: true); from the step
                         before: the gateway's direct health probe and the call itself
    kubelet: pod Ready   the kubelet's readiness probe passed; the gateway does not wait
                         for it (it probes the new pod itself), so it often comes later

Sandbox and container starts are containerd's ``/tasks/start`` events (``ctr events``,
local cluster only; elsewhere "container started" is when the kubelet reports the
container running, which it notices at its next relist, up to a second later). Watch and
containerd events arrive within milliseconds of the change, far finer than the one-second
timestamps in pod status. The gateway's own figure (`X-Duration-Ms`) and warm
calls are shown for scale. Prints a table and the machine (nproc, CPU model);
`--json PATH` writes every run.

    python bench/cluster_coldstart.py [--runs 20] [--json PATH]

Against ``$KUBECONFIG`` if set, else the local cluster (``make cluster-up`` first).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host import machine

from e2e.harness import (
    CHART,
    INSTALL_TIMEOUT_SECONDS,
    Cluster,
    Gateway,
    Release,
    create_namespace,
    function_manifest,
    gateway_url,
    resolve_cluster,
    wait_for,
)
from kubefaas import naming
from kubefaas.pool import POOL_LABEL

IDLE_SECONDS = 10
FUNCTION = "cold"
WARM_CALLS = 20
ZERO_TIMEOUT_SECONDS = 120.0
STEPS = (
    ("scaled", "Deployment scaled"),
    ("created", "pod created"),
    ("scheduled", "pod scheduled"),
    ("sandbox", "sandbox started"),
    ("started", "container started"),
    ("runtime", "runtime ready"),
    ("address", "pod IP in the API"),
    ("response", "first response"),
    ("ready", "kubelet: pod Ready"),
)
# Steps that are not on the path to the response: their successor is timed from before them.
OFF_PATH = frozenset({"address", "ready"})
WATCH_SECONDS = 30


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# -- watching the function ------------------------------------------------------------------


@dataclass
class Timeline:
    """When each step was first seen (monotonic seconds), per pod and for the Deployment."""

    scaled_up: list[float] = field(default_factory=list)  # each 0 -> n>0 of spec.replicas
    pods: dict[str, dict[str, float]] = field(default_factory=dict)
    # containerd: task starts by container id; sandbox ids by pod uid; app container ids.
    task_starts: dict[str, float] = field(default_factory=dict)
    sandboxes: dict[str, str] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # pod name by uid
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, uid: str, step: str, at: float) -> None:
        with self.lock:
            self.pods.setdefault(uid, {}).setdefault(step, at)

    def pod_after(self, start: float) -> str | None:
        """Name of the first pod created after `start`, if seen."""
        with self.lock:
            fresh = {u: p for u, p in self.pods.items() if p.get("created", 0) >= start}
            if not fresh:
                return None
            return self.names.get(min(fresh, key=lambda u: fresh[u]["created"]))

    def after(self, start: float) -> dict[str, float]:
        """Steps of the first pod created after `start`, and the first scale-up after it."""
        with self.lock:
            steps: dict[str, float] = {}
            scaled = [t for t in self.scaled_up if t >= start]
            if scaled:
                steps["scaled"] = scaled[0]
            fresh = {u: p for u, p in self.pods.items() if p.get("created", 0) >= start}
            if not fresh:
                return steps
            uid = min(fresh, key=lambda u: fresh[u]["created"])
            steps.update(fresh[uid])
            running = steps.pop("running", None)
            sandbox = self.task_starts.get(self.sandboxes.get(uid, ""))
            started = self.task_starts.get(self.containers.get(uid, ""))
            if sandbox is not None:
                steps["sandbox"] = sandbox
            if started is not None:
                steps["started"] = started
            elif running is not None:
                steps["started"] = running
            return steps


def _pod_steps(pod: Any) -> list[str]:
    steps = ["created"]
    if pod.spec.node_name:
        steps.append("scheduled")
    if pod.status.pod_ip:
        steps.append("address")
    statuses = pod.status.container_statuses or []
    if any(s.state and s.state.running for s in statuses):
        steps.append("running")
    conditions = pod.status.conditions or []
    if any(c.type == "Ready" and c.status == "True" for c in conditions):
        steps.append("ready")
    return steps


_CTR_EVENT = re.compile(r"^\S+ \S+ \S+ \S+ \S+ (/\S+) (\{.*\})\s*$")


def _follow_containerd(ctr: str, socket: Path, timeline: Timeline) -> subprocess.Popen[str]:
    """``ctr events`` in a thread: task starts, and which sandbox belongs to which pod."""
    events = subprocess.Popen(
        [ctr, f"--address={socket}", "--namespace=k8s.io", "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def read() -> None:
        assert events.stdout is not None
        for line in events.stdout:
            now = time.monotonic()
            match = _CTR_EVENT.match(line)
            if match is None:
                continue
            topic, payload = match.group(1), json.loads(match.group(2))
            with timeline.lock:
                if topic == "/tasks/start":
                    timeline.task_starts.setdefault(payload["container_id"], now)
                labels = payload.get("labels") or {}
                if labels.get("io.cri-containerd.kind") == "sandbox":
                    timeline.sandboxes[labels["io.kubernetes.pod.uid"]] = payload["id"]

    threading.Thread(target=read, daemon=True).start()
    return events


@contextmanager
def watching(cluster: Cluster, namespace: str, function: str) -> Iterator[Timeline]:
    """Follow the function's pods and Deployment (and containerd, on the local cluster)."""
    from kubernetes import client, config, watch

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    timeline = Timeline()
    stop = threading.Event()
    selector = f"{naming.FUNCTION_LABEL}={function}"

    def pod_event(event: dict[str, Any], now: float) -> None:
        pod = event["object"]
        if event["type"] not in ("ADDED", "MODIFIED"):
            return
        for step in _pod_steps(pod):
            timeline.seen(pod.metadata.uid, step, now)
        with timeline.lock:
            timeline.names[pod.metadata.uid] = pod.metadata.name
        for status in pod.status.container_statuses or []:
            if status.container_id:
                with timeline.lock:
                    timeline.containers[pod.metadata.uid] = status.container_id.split("://")[-1]

    replicas: int | None = None

    def deployment_event(event: dict[str, Any], now: float) -> None:
        nonlocal replicas
        current = event["object"].spec.replicas or 0
        if replicas == 0 and current > 0:
            with timeline.lock:
                timeline.scaled_up.append(now)
        replicas = current

    def follow(
        listing: Callable[..., Any], on_event: Callable[[dict[str, Any], float], None], **kw: Any
    ) -> None:
        # A watch ends after WATCH_SECONDS (so `stop` is noticed) and may fail: start again.
        while not stop.is_set():
            try:
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    listing, namespace, timeout_seconds=WATCH_SECONDS, **kw
                )
                for event in stream:
                    on_event(event, time.monotonic())
            except client.exceptions.ApiException:
                time.sleep(0.2)

    threads = [
        threading.Thread(
            target=follow,
            args=(core.list_namespaced_pod, pod_event),
            kwargs={"label_selector": selector},
            daemon=True,
        ),
        threading.Thread(
            target=follow,
            args=(apps.list_namespaced_deployment, deployment_event),
            kwargs={"field_selector": f"metadata.name={function}"},
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    ctr = shutil.which("ctr")
    events = None
    if cluster.local is not None and ctr is not None:
        events = _follow_containerd(ctr, cluster.local.node_paths.containerd_socket, timeline)
    try:
        time.sleep(1)  # the first LIST of each watch
        yield timeline
    finally:
        stop.set()
        if events is not None:
            events.terminate()
            events.wait(timeout=10)
        api.close()


# -- bringing the function to zero ----------------------------------------------------------


def _stats(gateway: Gateway, namespace: str, function: str) -> dict[str, Any]:
    entry: dict[str, Any] = gateway.client.get("/internal/stats").json()["functions"][
        f"{namespace}/{function}"
    ]
    return entry


def to_zero(cluster: Cluster, gateway: Gateway, namespace: str, function: str) -> None:
    """Wait out the idle time, scale the Deployment to 0, wait until nothing of it is left."""
    wait_for(
        f"{function} to be idle for {IDLE_SECONDS}s",
        lambda: (_stats(gateway, namespace, function)["idleSeconds"] or 0) >= IDLE_SECONDS,
        timeout=ZERO_TIMEOUT_SECONDS,
    )
    cluster.kubectl("scale", "deployment", function, "-n", namespace, "--replicas=0")

    def gone() -> bool:
        pods = cluster.items("pods", "-n", namespace, "-l", f"{naming.FUNCTION_LABEL}={function}")
        stats = _stats(gateway, namespace, function)
        return not pods and stats["replicas"] == 0 and stats["readyInstances"] == 0

    wait_for(f"{function} to have no pod", gone, timeout=ZERO_TIMEOUT_SECONDS, interval=0.2)


# -- the benchmark --------------------------------------------------------------------------


@dataclass
class Run:
    total_ms: float
    gateway_ms: float
    steps_ms: dict[str, float]  # since the request was sent


def runtime_ready_at(cluster: Cluster, namespace: str, pod: str) -> float | None:
    """`readyMonotonic` of the runtime's "ready" log line in `pod`, if it logged one."""
    logs = cluster.kubectl("logs", pod, "-n", namespace, check=False)
    for line in (logs.stdout or "").splitlines():
        match = re.search(r'"readyMonotonic":\s*([0-9.]+)', line)
        if match:
            return float(match.group(1))
    return None


def cold_call(
    cluster: Cluster, gateway: Gateway, timeline: Timeline, function: str, namespace: str
) -> Run:
    start = time.monotonic()
    response = gateway.invoke(function, {"name": "bench"})
    end = time.monotonic()
    if response.status_code != 200 or response.headers.get("x-cold-start") != "true":
        raise RuntimeError(
            f"expected a 200 cold start, got {response.status_code} {response.headers}: "
            f"{response.text[:300]}"
        )
    time.sleep(1.5)  # let the watch deliver the Ready transition, which may come later
    seen = timeline.after(start)
    pod = timeline.pod_after(start)
    ready_at = None if pod is None else runtime_ready_at(cluster, namespace, pod)
    if ready_at is not None:
        seen["runtime"] = ready_at
    steps = {name: (at - start) * 1000 for name, at in seen.items()}
    steps["response"] = (end - start) * 1000
    return Run(
        total_ms=(end - start) * 1000,
        gateway_ms=float(response.headers.get("x-duration-ms", "nan")),
        steps_ms=steps,
    )


def _stats_auth(gateway: Gateway, auth: dict[str, str]) -> None:
    """Send the chart's metrics token with every `/internal/stats` read (docs/security.md)."""

    def add(request: httpx.Request) -> None:
        if request.url.path == "/internal/stats":
            request.headers.update(auth)

    gateway.client.event_hooks["request"].append(add)


@contextmanager
def installed(cluster: Cluster, pool: int = 0) -> Iterator[tuple[Gateway, str]]:
    """The chart in fresh restricted namespaces (with `pool` warm-pool pods per runtime);
    everything is removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    name, namespace, functions = (
        f"kubefaas-bench-{suffix}",
        f"kubefaas-bench-{suffix}",
        f"kubefaas-bfn-{suffix}",
    )
    for ns in (namespace, functions):
        create_namespace(cluster, ns)
    stop: Callable[[], None] = lambda: None  # noqa: E731
    gateway: Gateway | None = None
    try:
        values = {
            "watchNamespaces": [functions],
            "gateway": {"defaultNamespace": functions},
            # Invoke auth is not what is measured (docs/security.md), as in the e2e tier.
            "auth": {"default": "none"},
            "warmPool": {"size": pool},
        }
        cluster.helm(
            "install", name, str(CHART), "-n", namespace, "-f", "-", "--wait",
            f"--timeout={INSTALL_TIMEOUT_SECONDS}s", input=yaml.safe_dump(values),
            timeout=INSTALL_TIMEOUT_SECONDS + 60,
        )  # fmt: skip
        url, stop = gateway_url(cluster, namespace=namespace, service=f"{name}-gateway")
        gateway = Gateway(url=url, namespace=functions)
        _stats_auth(gateway, Release(cluster, name, namespace, functions, gateway).metrics_auth())
        yield gateway, functions
    finally:
        if gateway is not None:
            gateway.client.close()
        stop()
        cluster.kubectl("delete", "functions", "--all", "-n", functions, check=False)
        cluster.helm("uninstall", name, "-n", namespace, "--wait", check=False, timeout=240)
        for ns in (functions, namespace):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def pool_ready(cluster: Cluster, namespace: str) -> bool:
    """A Ready, unclaimed warm-pool pod in `namespace` (docs/warm-pool.md)."""
    for pod in cluster.items("pods", "-n", namespace, "-l", POOL_LABEL):
        conditions = pod.get("status", {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return True
    return False


def measure(
    cluster: Cluster, runs: int, *, log: Callable[[str], None], pool: int = 0
) -> dict[str, Any]:
    with installed(cluster, pool) as (gateway, namespace):
        manifest = function_manifest(
            "hello",
            name=FUNCTION,
            namespace=namespace,
            spec={"scaling": {"scaleToZeroAfterSeconds": IDLE_SECONDS}},
        )
        cluster.kubectl("apply", "-f", "-", input=manifest)
        wait_for(
            "the gateway to know the function",
            lambda: FUNCTION in str(gateway.client.get("/internal/stats").json()["functions"]),
            timeout=60,
        )
        first = gateway.invoke(FUNCTION, {})  # the first pod ever also pays one-time costs
        if first.status_code != 200:
            raise RuntimeError(f"the function does not answer: {first.status_code} {first.text}")
        warm = []
        for _ in range(WARM_CALLS):
            started = time.monotonic()
            gateway.invoke(FUNCTION, {}).raise_for_status()
            warm.append((time.monotonic() - started) * 1000)
        results: list[Run] = []
        with watching(cluster, namespace, FUNCTION) as timeline:
            for number in range(1, runs + 1):
                to_zero(cluster, gateway, namespace, FUNCTION)
                if pool:
                    wait_for(
                        "a ready pool pod", lambda: pool_ready(cluster, namespace), timeout=120
                    )
                run = cold_call(cluster, gateway, timeline, FUNCTION, namespace)
                results.append(run)
                log(f"run {number:2}/{runs}: {run.total_ms:7.0f} ms  {_steps_line(run)}")
        return {"runs": [asdict(r) for r in results], "warm_ms": warm}


def _steps_line(run: Run) -> str:
    return " ".join(f"{key}={run.steps_ms[key]:.0f}" for key, _ in STEPS if key in run.steps_ms)


def summarize(measured: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per step: p50/p95 since the request, and the p50 of the step itself."""
    runs = measured["runs"]
    rows = []
    previous: str | None = None
    for key, label in STEPS:
        values = [r["steps_ms"][key] for r in runs if key in r["steps_ms"]]
        deltas = [
            r["steps_ms"][key] - r["steps_ms"][previous]
            for r in runs
            if previous and key in r["steps_ms"] and previous in r["steps_ms"]
        ]
        rows.append(
            {
                "step": label,
                "seen_in": len(values),
                "p50_ms": percentile(values, 0.5) if values else None,
                "p95_ms": percentile(values, 0.95) if values else None,
                "step_p50_ms": statistics.median(deltas) if deltas else None,
            }
        )
        previous = previous if key in OFF_PATH else key
    gateway = [r["gateway_ms"] for r in runs]
    rows.append(
        {
            "step": "gateway X-Duration-Ms",
            "seen_in": len(gateway),
            "p50_ms": percentile(gateway, 0.5),
            "p95_ms": percentile(gateway, 0.95),
            "step_p50_ms": None,
        }
    )
    warm = measured["warm_ms"]
    rows.append(
        {
            "step": "warm call (for scale)",
            "seen_in": len(warm),
            "p50_ms": percentile(warm, 0.5),
            "p95_ms": percentile(warm, 0.95),
            "step_p50_ms": None,
        }
    )
    return rows


def _cell(value: float | None) -> str:
    return f"{value:8.0f}" if value is not None else f"{'-':>8}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="cold starts to time (20)")
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    parser.add_argument(
        "--pool", type=int, default=0, help="warm-pool pods per runtime (0: no pool)"
    )
    args = parser.parse_args(argv)
    host = machine()
    try:
        cluster = resolve_cluster()
    except pytest.fail.Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    measured = measure(
        cluster, args.runs, log=lambda line: print(line, file=sys.stderr), pool=args.pool
    )
    rows = summarize(measured)
    where = "local cluster" if cluster.local is not None else str(cluster.kubeconfig)
    pooled = f", warm pool of {args.pool}" if args.pool else ""
    print(f"\ncold start through the gateway, {args.runs} runs ({where}{pooled})")
    print(f"{'step (since the request)':28} {'p50 ms':>8} {'p95 ms':>8} {'step p50':>8}  seen")
    for row in rows:
        print(
            f"{row['step']:28} {_cell(row['p50_ms'])} {_cell(row['p95_ms'])} "
            f"{_cell(row['step_p50_ms'])}  {row['seen_in']}"
        )
    print(f"machine: {host['nproc']} x {host['cpu']}, load {host['loadavg_1m_at_start']}")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": host, "summary": rows, **measured}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
