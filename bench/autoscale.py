"""Autoscaling in local mode or on a cluster: how fast and how accurately replicas follow a
fixed load, and how fast an overloaded function says 429.

Two scenarios against a real local-mode gateway (runtime processes, loopback only):

1. **Scale-up under open-loop load.** `--rps` requests per second (40) of a function that
   sleeps `--work` seconds (0.5), `targetConcurrency: --target` (2). The offered
   concurrency is rps x work (20), so the steady replica count is ceil(20 / 2) = 10
   nominally; the gateway's own hop adds a few ms per call, so the measured concurrency
   is a little over 20 and the decider rightly settles on 11 (both are reported).
   Requests are sent on a fixed schedule whatever the answers (open loop), for
   `--duration` seconds (60); then the load stops and the scale-down to zero is followed
   (`scaleToZeroAfterSeconds: 10`) for at most `--tail` seconds (40). `/internal/stats`
   is sampled every 0.5 s. Reported: time to reach the steady count, overshoot (most
   replicas above it), scale-to-zero time after the last request, call latency and
   errors; the replica count over time is plotted to `--plot` (PNG).
2. **Throttling.** `reservedConcurrency: 4` on a 1 s function, `--overload-rps` (200)
   requests per second for 5 s: how many 200s and 429s, and the 429 latency (p50, p99,
   max): they must be answered at once, without touching an instance.

Prints a table with the machine (nproc, CPU model); `--json PATH` writes every figure.

**Cluster mode** (`--cluster`, the local cluster; `--kubeconfig PATH`, any cluster): the
same two scenarios on real pods, where the operator's autoscaler (not the gateway) decides
every 2 s from the gateways' `/internal/stats` and patches the Deployment's `/scale`. The
chart is installed into fresh restricted namespaces as `bench/cluster_coldstart.py` does
(and removed afterwards); the load goes to the gateway Service's ClusterIP on the local
cluster, through a loopback port-forward elsewhere. The numbers fit 2 cores running real
pods: 10 rps of a 0.5 s function, `targetConcurrency: 1` (about 5 pods), `maxScale: 8`,
`reservedConcurrency: 2` at 50 rps for the throttling. The replica count is the
Deployment's `status.readyReplicas` and `spec.replicas` (and the Function's
`status.desiredReplicas`), sampled every 0.5 s; the settled part starts at `--settle-after`
seconds (30) of load, since 60 s of load never reaches the local mode's 60 s mark. With
`--cluster`, a local cluster that is not serving is started (`make cluster-up`) and
stopped again at the end, so the machine is left as it was found.

    python bench/autoscale.py [--rps 40] [--work 0.5] [--target 2] [--duration 60]
        [--tail 40] [--overload-rps 200] [--plot bench/autoscale_local.png] [--json PATH]
    python bench/autoscale.py --cluster [--kubeconfig PATH] [--rps 10] [--target 1]
        [--max-scale 8] [--reserved 2] [--overload-rps 50] [--settle-after 30]
        [--plot bench/autoscale_cluster.png] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import aiohttp
from host import free_port, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
START_TIMEOUT_SECONDS = 30.0
SAMPLE_INTERVAL_SECONDS = 0.5
SCALE_TO_ZERO_AFTER_SECONDS = 10
RESERVED = 4
OVERLOAD_SECONDS = 5.0
OVERLOAD_WORK_SECONDS = 1.0
# The settled part in local mode: after the first 60 s stable window.
LOCAL_SETTLED_FROM_SECONDS = 60.0

MANIFESTS = """\
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata:
  name: work
spec:
  runtime: python3.11
  timeoutSeconds: 30
  scaling:
    maxScale: {max_scale}
    targetConcurrency: {target}
    scaleToZeroAfterSeconds: {idle}
  code:
    inline:
      main.py: |
        import asyncio

        async def handler(event, context):
            await asyncio.sleep(float(event.get("seconds", 0.5)))
            return {{"ok": True}}
---
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata:
  name: capped
spec:
  runtime: python3.11
  timeoutSeconds: 30
  scaling:
    reservedConcurrency: {reserved}
    targetConcurrency: {reserved}
  code:
    inline:
      main.py: |
        import asyncio

        async def handler(event, context):
            await asyncio.sleep(float(event.get("seconds", 1)))
            return {{"ok": True}}
"""


@contextmanager
def gateway(workdir: Path, manifests: str) -> Iterator[str]:
    """A local-mode gateway serving `manifests`; stopped (and its instances) on exit."""
    functions = workdir / "functions"
    functions.mkdir(parents=True, exist_ok=True)
    (functions / "bench.yaml").write_text(manifests)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kubefaas_gateway.local_mode", str(functions), "--port", str(port),
         "--state-dir", str(workdir / "state")],
        env={**os.environ, "KUBEFAAS_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the gateway did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Sample:
    t: float  # seconds since the load started
    ready: int
    replicas: int
    desired: int | None
    in_flight: int
    pending: int
    stable: float
    panic: float
    in_panic: bool


@dataclass
class Call:
    started: float
    seconds: float
    status: int
    retry_after: str | None = None


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)


async def sample_stats(
    session: aiohttp.ClientSession, base: str, key: str, origin: float, into: Timeline
) -> None:
    """Append one `/internal/stats` sample of `key` every SAMPLE_INTERVAL_SECONDS."""
    while True:
        try:
            async with session.get(f"{base}/internal/stats") as response:
                entry = (await response.json())["functions"][key]
            into.samples.append(
                Sample(
                    t=time.monotonic() - origin,
                    ready=entry["readyInstances"],
                    replicas=entry["replicas"],
                    desired=entry.get("desiredReplicas"),
                    in_flight=entry["inFlight"],
                    pending=entry["pending"],
                    stable=entry["stableConcurrency"],
                    panic=entry["panicConcurrency"],
                    in_panic=bool(entry.get("panic")),
                )
            )
        except (aiohttp.ClientError, KeyError, ValueError):
            pass
        await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)


async def open_loop(
    session: aiohttp.ClientSession,
    url: str,
    *,
    rps: float,
    seconds: float,
    body: dict[str, Any],
    origin: float,
    into: list[Call],
) -> None:
    """Send `rps` requests per second for `seconds` on a fixed schedule, not waiting for
    answers (a closed loop would slow down exactly when the system does)."""

    async def one(started: float) -> None:
        try:
            async with session.post(url, json=body) as response:
                await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except aiohttp.ClientError:
            status, retry_after = 0, None
        into.append(Call(started - origin, time.monotonic() - started, status, retry_after))

    tasks = []
    count = int(rps * seconds)
    begin = time.monotonic()
    for n in range(count):
        due = begin + n / rps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(time.monotonic())))
    await asyncio.gather(*tasks)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# Fills a Timeline with one sample every SAMPLE_INTERVAL_SECONDS until cancelled.
Sampler = Callable[[aiohttp.ClientSession, float, Timeline], Coroutine[Any, Any, None]]


def _replicas_zero(sample: Sample) -> bool:
    return sample.replicas == 0


async def scale_up(
    base: str,
    args: argparse.Namespace,
    *,
    function_path: str = "/function/work",
    sampler: Sampler | None = None,
    at_zero: Callable[[Sample], bool] = _replicas_zero,
    settled_from: float = LOCAL_SETTLED_FROM_SECONDS,
) -> dict[str, Any]:
    """The open-loop load and what the replica count did; `sampler` (default: the local
    gateway's `/internal/stats`) says where the replica count comes from."""
    if sampler is None:

        def sampler(
            session: aiohttp.ClientSession, origin: float, into: Timeline
        ) -> Coroutine[Any, Any, None]:
            return sample_stats(session, base, "default/work", origin, into)

    timeline = Timeline()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        origin = time.monotonic()
        sampling = asyncio.create_task(sampler(session, origin, timeline))
        await open_loop(
            session,
            f"{base}{function_path}",
            rps=args.rps,
            seconds=args.duration,
            body={"seconds": args.work},
            origin=origin,
            into=timeline.calls,
        )
        load_end = time.monotonic() - origin
        # Follow the scale-down until zero (or the tail runs out).
        tail_end = time.monotonic() + args.tail
        while time.monotonic() < tail_end:
            await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
            if timeline.samples and at_zero(timeline.samples[-1]):
                break
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)

    ok = [c.seconds for c in timeline.calls if c.status == 200]
    # The concurrency the gateway really sees is rps x (work + the gateway's own hop), a
    # little over the nominal rps x work; ceil() turns 20.1 into 11 instances, not 10.
    nominal = math.ceil(args.rps * args.work / args.target)
    measured_concurrency = args.rps * statistics.median(ok) if ok else float("nan")
    steady = math.ceil(measured_concurrency / args.target - 1e-9) if ok else nominal
    during = [s for s in timeline.samples if s.t <= load_end]
    reached = next((s.t for s in during if s.ready >= steady), None)
    reached_nominal = next((s.t for s in during if s.ready >= nominal), None)
    peak = max((s.ready for s in timeline.samples), default=0)
    # Once settled (after the first stable window), how much the count still moves.
    settled = [s.ready for s in during if s.t >= settled_from]
    zero_at = next((s.t for s in timeline.samples if s.t > load_end and at_zero(s)), None)
    errors = sum(1 for c in timeline.calls if c.status != 200)
    return {
        "rps": args.rps,
        "work_seconds": args.work,
        "target_concurrency": args.target,
        "offered_concurrency": args.rps * args.work,
        "measured_concurrency": round(measured_concurrency, 3),
        "nominal_steady_replicas": nominal,
        "steady_replicas": steady,
        "seconds_to_steady": reached,
        "seconds_to_nominal_steady": reached_nominal,
        "peak_replicas": peak,
        "overshoot_replicas": max(0, peak - steady),
        "settled_range": [min(settled), max(settled)] if settled else None,
        "load_seconds": round(load_end, 2),
        "zero_after_last_request_seconds": (
            None if zero_at is None else round(zero_at - load_end, 2)
        ),
        "calls": len(timeline.calls),
        "errors": errors,
        "latency_p50_ms": round(percentile(ok, 0.50) * 1000, 1),
        "latency_p99_ms": round(percentile(ok, 0.99) * 1000, 1),
        "timeline": [asdict(s) for s in timeline.samples],
        "_load_end": load_end,
    }


async def throttle(
    base: str,
    args: argparse.Namespace,
    *,
    function_path: str = "/function/capped",
    reserved: int = RESERVED,
) -> dict[str, Any]:
    calls: list[Call] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # One warm-up call so the first 200s are not cold starts.
        async with session.post(f"{base}{function_path}", json={"seconds": 0}) as response:
            await response.read()
        await open_loop(
            session,
            f"{base}{function_path}",
            rps=args.overload_rps,
            seconds=OVERLOAD_SECONDS,
            body={"seconds": OVERLOAD_WORK_SECONDS},
            origin=time.monotonic(),
            into=calls,
        )
    throttled = [c.seconds for c in calls if c.status == 429]
    return {
        "reserved_concurrency": reserved,
        "offered_rps": args.overload_rps,
        "work_seconds": OVERLOAD_WORK_SECONDS,
        "calls": len(calls),
        "ok": sum(1 for c in calls if c.status == 200),
        "throttled": len(throttled),
        "other": sum(1 for c in calls if c.status not in (200, 429)),
        "throttled_with_retry_after": sum(
            1 for c in calls if c.status == 429 and c.retry_after is not None
        ),
        "throttle_p50_ms": round(percentile(throttled, 0.50) * 1000, 2),
        "throttle_p99_ms": round(percentile(throttled, 0.99) * 1000, 2),
        "throttle_max_ms": round(max(throttled, default=float("nan")) * 1000, 2),
    }


def plot(result: dict[str, Any], path: Path, title: str, *, spec_replicas: bool = False) -> None:
    """Replicas over time; `spec_replicas` adds the Deployment's `spec.replicas` (cluster
    mode, where pods become ready seconds after they are asked for)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["timeline"]
    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.step(t, [s["ready"] for s in samples], where="post", label="ready instances")
    if spec_replicas:
        ax.step(t, [s["replicas"] for s in samples], where="post", label="spec.replicas")
    ax.step(
        t,
        [s["desired"] if s["desired"] is not None else float("nan") for s in samples],
        where="post",
        linestyle="--",
        label="desired (decider)",
    )
    ax.plot(t, [s["stable"] / result["target_concurrency"] for s in samples],
            linewidth=0.8, label="stable avg / target")  # fmt: skip
    ax.plot(t, [s["panic"] / result["target_concurrency"] for s in samples],
            linewidth=0.8, alpha=0.6, label="panic avg / target")  # fmt: skip
    ax.axhline(result["steady_replicas"], color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(result["_load_end"], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("instances")
    ax.set_title(title)
    ax.legend(loc="center right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- cluster mode --------------------------------------------------------------------------

# Defaults per mode for the flags whose fitting value differs (None on the command line).
LOCAL_DEFAULTS: dict[str, Any] = {
    "rps": 40.0,
    "target": 2,
    "overload_rps": 200.0,
    "reserved": RESERVED,
    "settle_after": LOCAL_SETTLED_FROM_SECONDS,
    "tail": 40.0,
    "plot": HERE / "autoscale_local.png",
}
# 2 cores running real pods: ~5 function pods next to the apiserver, kubelet and gateway.
CLUSTER_DEFAULTS: dict[str, Any] = {
    "rps": 10.0,
    "target": 1,
    "max_scale": 8,
    "overload_rps": 50.0,
    "reserved": 2,
    "settle_after": 30.0,
    # Idle 10 s, then the scale-down delay and rate limit, then pods terminating.
    "tail": 60.0,
    "plot": HERE / "autoscale_cluster.png",
}
CLUSTER_UP_TIMEOUT_SECONDS = 1800.0
CLUSTER_DOWN_TIMEOUT_SECONDS = 600.0


async def sample_cluster(
    session: aiohttp.ClientSession,
    origin: float,
    into: Timeline,
    *,
    base: str,
    key: str,
    read: Callable[[], tuple[int, int, int | None]],
) -> None:
    """One sample every SAMPLE_INTERVAL_SECONDS: ready/spec replicas and the Function's
    desired count from the API (`read`), load figures from the gateway's stats."""
    while True:
        began = time.monotonic()
        try:
            ready, replicas, desired = await asyncio.to_thread(read)
        except Exception:  # a failed read is a missing sample, not a failed run
            await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
            continue
        entry: dict[str, Any] = {}
        try:
            async with session.get(f"{base}/internal/stats") as response:
                entry = (await response.json())["functions"][key]
        except (aiohttp.ClientError, KeyError, ValueError):
            pass
        into.samples.append(
            Sample(
                t=began - origin,
                ready=ready,
                replicas=replicas,
                desired=desired,
                in_flight=int(entry.get("inFlight", 0)),
                pending=int(entry.get("pending", 0)),
                stable=float(entry.get("stableConcurrency", math.nan)),
                panic=float(entry.get("panicConcurrency", math.nan)),
                in_panic=bool(entry.get("panic")),
            )
        )
        await asyncio.sleep(max(0.0, SAMPLE_INTERVAL_SECONDS - (time.monotonic() - began)))


def _local_cluster_serving() -> bool:
    """True if `.cluster/kubeconfig` answers with a Ready node (the e2e tier's test)."""
    import pytest

    from e2e.harness import resolve_cluster

    try:
        resolve_cluster()
    except pytest.fail.Exception:
        return False
    return True


@contextmanager
def local_cluster() -> Iterator[None]:
    """The local cluster, serving for the duration; started (and stopped again) only if it
    was not, so the machine is left as it was found."""
    if _local_cluster_serving():
        yield
        return
    print("the local cluster is not serving: make cluster-up", file=sys.stderr)
    try:
        subprocess.run(
            ["make", "--no-print-directory", "cluster-up"], cwd=REPO, check=True,
            stdout=sys.stderr, timeout=CLUSTER_UP_TIMEOUT_SECONDS,
        )  # fmt: skip
        yield
    finally:
        print("stopping the local cluster again: make cluster-down", file=sys.stderr)
        subprocess.run(
            ["make", "--no-print-directory", "cluster-down"], cwd=REPO, check=False,
            stdout=sys.stderr, timeout=CLUSTER_DOWN_TIMEOUT_SECONDS,
        )  # fmt: skip


def run_cluster(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Both scenarios on real pods: the chart installed for the run and removed after it."""
    from contextlib import nullcontext

    from cluster_coldstart import installed
    from kubernetes import client, config

    from e2e.harness import answers, function_manifest, resolve_cluster, wait_for
    from kubefaas import limits

    if args.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(args.kubeconfig.resolve())
    else:
        os.environ.pop("KUBECONFIG", None)  # --cluster: this checkout's local cluster
    scalings = {
        "work": {
            "maxScale": args.max_scale,
            "targetConcurrency": args.target,
            "scaleToZeroAfterSeconds": SCALE_TO_ZERO_AFTER_SECONDS,
        },
        "capped": {"reservedConcurrency": args.reserved, "targetConcurrency": args.reserved},
    }
    with local_cluster() if args.kubeconfig is None else nullcontext():
        cluster = resolve_cluster()
        where = "local cluster" if cluster.local is not None else "cluster"
        with installed(cluster) as (gateway, namespace):
            wait_for("the gateway's /readyz", lambda: answers(gateway, "/readyz"), timeout=60)
            for name, scaling in scalings.items():
                manifest = function_manifest(
                    "slow",
                    name=name,
                    namespace=namespace,
                    spec={"timeoutSeconds": 30, "scaling": scaling},
                )
                cluster.kubectl("apply", "-f", "-", input=manifest)

            def deployed(name: str) -> bool:
                found = cluster.kubectl("get", "deployment", name, "-n", namespace, check=False)
                return found.returncode == 0

            def known(name: str) -> bool:
                functions = gateway.client.get("/internal/stats").json()["functions"]
                return f"{namespace}/{name}" in functions

            # Ready to load once the operator made the Deployment (the gateway activates it)
            # and the gateway's watch has seen the Function (until then it answers 404).
            for name in scalings:
                wait_for(f"Deployment {name}", partial(deployed, name), timeout=60)
                wait_for(f"the gateway to know {name}", partial(known, name), timeout=30)
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
            apps, custom = client.AppsV1Api(api), client.CustomObjectsApi(api)

            def read() -> tuple[int, int, int | None]:
                deployment = apps.read_namespaced_deployment("work", namespace)
                function = custom.get_namespaced_custom_object(
                    limits.API_GROUP, limits.API_VERSION, namespace, limits.PLURAL, "work"
                )
                status: dict[str, Any] = cast(dict[str, Any], function).get("status") or {}
                desired = status.get("desiredReplicas")
                ready = deployment.status.ready_replicas if deployment.status else None
                return (
                    int(ready or 0),
                    int(deployment.spec.replicas or 0) if deployment.spec else 0,
                    None if desired is None else int(desired),
                )

            def sampler(
                session: aiohttp.ClientSession, origin: float, into: Timeline
            ) -> Coroutine[Any, Any, None]:
                return sample_cluster(
                    session, origin, into, base=gateway.url, key=f"{namespace}/work", read=read
                )

            try:
                up = asyncio.run(
                    scale_up(
                        gateway.url,
                        args,
                        function_path=f"/function/{namespace}/work",
                        sampler=sampler,
                        # Zero is no pod asked for and none ready (terminating ones are not).
                        at_zero=lambda s: s.replicas == 0 and s.ready == 0,
                        settled_from=args.settle_after,
                    )
                )
                over = asyncio.run(
                    throttle(
                        gateway.url,
                        args,
                        function_path=f"/function/{namespace}/capped",
                        reserved=args.reserved,
                    )
                )
            finally:
                api.close()
    _add_cluster_figures(up, args.settle_after)
    return up, over, where


def _add_cluster_figures(up: dict[str, Any], settled_from: float) -> None:
    """What only the cluster has: `spec.replicas` (asked for) next to ready pods, and how
    often the ready count moved once settled."""
    during = [s for s in up["timeline"] if s["t"] <= up["_load_end"]]
    settled = [s["ready"] for s in during if s["t"] >= settled_from]
    up["settled_from_seconds"] = settled_from
    up["settled_changes"] = sum(1 for a, b in itertools.pairwise(settled) if a != b)
    up["peak_spec_replicas"] = max((s["replicas"] for s in up["timeline"]), default=0)
    up["overshoot_spec_replicas"] = max(0, up["peak_spec_replicas"] - up["steady_replicas"])
    settled_spec = [s["replicas"] for s in during if s["t"] >= settled_from]
    up["settled_spec_range"] = [min(settled_spec), max(settled_spec)] if settled_spec else None


def print_cluster(
    up: dict[str, Any], over: dict[str, Any], args: argparse.Namespace, host: dict[str, Any]
) -> None:
    """A markdown table, as it goes into bench/RESULTS.md."""
    print(
        f"{args.rps:g} rps x {args.work:g} s for {args.duration:g} s, "
        f"targetConcurrency {args.target}, maxScale {args.max_scale} ({up['where']})"
    )
    print()
    rows = [
        (
            "offered / measured concurrency",
            f"{up['offered_concurrency']:g} / {up['measured_concurrency']:g} -> "
            f"{up['nominal_steady_replicas']} / {up['steady_replicas']} pods expected",
        ),
        (
            f"time to {up['nominal_steady_replicas']} / {up['steady_replicas']} ready pods",
            f"{_seconds(up['seconds_to_nominal_steady'])} / {_seconds(up['seconds_to_steady'])}",
        ),
        ("peak ready pods / spec.replicas", f"{up['peak_replicas']} / {up['peak_spec_replicas']}"),
        (
            "overshoot (ready / spec.replicas)",
            f"{up['overshoot_replicas']} / {up['overshoot_spec_replicas']}",
        ),
        (
            f"settled part (from {up['settled_from_seconds']:g} s): ready range, changes",
            f"{up['settled_range']}, {up['settled_changes']}",
        ),
        ("back to zero after the last call", _seconds(up["zero_after_last_request_seconds"])),
        ("calls / errors", f"{up['calls']:,} / {up['errors']}"),
        ("call latency p50 / p99", f"{up['latency_p50_ms']:g} / {up['latency_p99_ms']:g} ms"),
        (
            f"`reservedConcurrency: {over['reserved_concurrency']}` at "
            f"{over['offered_rps']:g} rps for {OVERLOAD_SECONDS:g} s",
            f"{over['ok']} x 200, {over['throttled']} x 429 "
            f"({over['throttled_with_retry_after']} with `Retry-After`), {over['other']} other",
        ),
        (
            "429 latency p50 / p99 / max",
            f"{over['throttle_p50_ms']:g} / {over['throttle_p99_ms']:g} / "
            f"{over['throttle_max_ms']:g} ms",
        ),
    ]
    print("| measure | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print()
    print(
        f"machine: {host['nproc']} CPU, {host['cpu']}, Python {host['python']}, "
        f"load average before the run {host['loadavg_1m_at_start']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="on the local cluster (started with make cluster-up if it is not serving, "
        "and stopped again)",
    )
    parser.add_argument("--kubeconfig", type=Path, help="on this cluster (cluster mode)")
    parser.add_argument("--rps", type=float, help="requests per second (40; cluster 10)")
    parser.add_argument("--work", type=float, default=0.5, help="seconds per call")
    parser.add_argument("--target", type=int, help="targetConcurrency (2; cluster 1)")
    parser.add_argument(
        "--max-scale", type=int, help="maxScale (local: 3 x steady, at least 10; cluster 8)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--tail", type=float, help="seconds to follow after (40; cluster 60)")
    parser.add_argument("--overload-rps", type=float, help="(200; cluster 50)")
    parser.add_argument("--reserved", type=int, help="reservedConcurrency (4; cluster 2)")
    parser.add_argument(
        "--settle-after", type=float, help="seconds of load before the settled part (60; 30)"
    )
    parser.add_argument(
        "--plot", type=Path, help="(bench/autoscale_local.png; bench/autoscale_cluster.png)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    on_cluster = args.cluster or args.kubeconfig is not None
    for name, value in (CLUSTER_DEFAULTS if on_cluster else LOCAL_DEFAULTS).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if on_cluster:
        return main_cluster(args)

    steady = math.ceil(args.rps * args.work / args.target)
    manifests = MANIFESTS.format(
        max_scale=args.max_scale or max(steady * 3, 10),
        target=args.target,
        idle=SCALE_TO_ZERO_AFTER_SECONDS,
        reserved=args.reserved,
    )
    host = machine()
    with (
        tempfile.TemporaryDirectory(prefix="kubefaas-bench-") as tmp,
        gateway(Path(tmp), manifests) as base,
    ):
        up = asyncio.run(scale_up(base, args, settled_from=args.settle_after))
        over = asyncio.run(throttle(base, args, reserved=args.reserved))

    title = (
        f"{args.rps:g} rps x {args.work:g} s, target {args.target} "
        f"({host['nproc']} CPU, {host['cpu']})"
    )
    plot(up, args.plot, title)
    up.pop("_load_end")

    print(
        f"machine: {host['nproc']} CPU, {host['cpu']}, Python {host['python']}, "
        f"load average before the run {host['loadavg_1m_at_start']}"
    )
    print()
    print(f"scale-up: {title}")
    rows = [
        (
            "concurrency nominal/measured",
            f"{up['offered_concurrency']:g} / {up['measured_concurrency']:g}",
        ),
        (
            "steady replicas nominal/meas.",
            f"{up['nominal_steady_replicas']} / {up['steady_replicas']}",
        ),
        (
            "time to nominal / measured",
            f"{_seconds(up['seconds_to_nominal_steady'])} / {_seconds(up['seconds_to_steady'])}",
        ),
        ("peak replicas", str(up["peak_replicas"])),
        ("overshoot", f"{up['overshoot_replicas']} replicas"),
        ("range after 60 s", str(up["settled_range"])),
        ("to zero after last request", _seconds(up["zero_after_last_request_seconds"])),
        ("calls / errors", f"{up['calls']} / {up['errors']}"),
        ("latency p50 / p99", f"{up['latency_p50_ms']} / {up['latency_p99_ms']} ms"),
    ]
    for name, value in rows:
        print(f"  {name:<28} {value}")
    print()
    print(
        f"throttle: reservedConcurrency {over['reserved_concurrency']}, "
        f"{over['offered_rps']:g} rps x {over['work_seconds']:g} s for {OVERLOAD_SECONDS:g} s"
    )
    rows = [
        ("200 / 429 / other", f"{over['ok']} / {over['throttled']} / {over['other']}"),
        ("429 with Retry-After", str(over["throttled_with_retry_after"])),
        (
            "429 latency p50 / p99 / max",
            f"{over['throttle_p50_ms']} / {over['throttle_p99_ms']} / {over['throttle_max_ms']} ms",
        ),
    ]
    for name, value in rows:
        print(f"  {name:<28} {value}")
    print(f"\nplot: {args.plot}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({"machine": host, "scale_up": up, "throttle": over}, indent=2) + "\n"
        )
        print(f"json: {args.json}")
    return 0


def main_cluster(args: argparse.Namespace) -> int:
    """Cluster mode: run, plot, print the markdown table, write the JSON."""
    import pytest

    sys.path.insert(0, str(REPO))  # e2e.harness, as bench/cluster_coldstart.py imports it
    host = machine()
    try:
        up, over, where = run_cluster(args)
    except pytest.fail.Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    up["where"] = where
    title = (
        f"{where}: {args.rps:g} rps x {args.work:g} s, target {args.target}, "
        f"maxScale {args.max_scale} ({host['nproc']} CPU, {host['cpu']})"
    )
    plot(up, args.plot, title, spec_replicas=True)
    print_cluster(up, over, args, host)
    up.pop("_load_end")
    print(f"\nplot: {args.plot}")
    if args.json is not None:
        settings = {
            "max_scale": args.max_scale,
            "duration_seconds": args.duration,
            "scale_to_zero_after_seconds": SCALE_TO_ZERO_AFTER_SECONDS,
            "overload_seconds": OVERLOAD_SECONDS,
        }
        args.json.write_text(
            json.dumps(
                {"machine": host, "settings": settings, "scale_up": up, "throttle": over},
                indent=2,
            )
            + "\n"
        )
        print(f"json: {args.json}")
    return 0


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
