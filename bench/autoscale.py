"""Autoscaling in local mode: how fast and how accurately replicas follow a fixed load,
and how fast an overloaded function says 429.

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
A cluster mode (`--kubeconfig`) is not implemented yet: it needs the operator's
autoscaler deployed with real pods (see e2e/).

    python bench/autoscale.py [--rps 40] [--work 0.5] [--target 2] [--duration 60]
        [--tail 40] [--overload-rps 200] [--plot bench/autoscale_local.png] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from host import free_port, machine

HERE = Path(__file__).resolve().parent
START_TIMEOUT_SECONDS = 30.0
SAMPLE_INTERVAL_SECONDS = 0.5
SCALE_TO_ZERO_AFTER_SECONDS = 10
RESERVED = 4
OVERLOAD_SECONDS = 5.0
OVERLOAD_WORK_SECONDS = 1.0

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
        [sys.executable, "-m", "kubefaas_gateway.local", str(functions), "--port", str(port),
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


async def scale_up(base: str, args: argparse.Namespace) -> dict[str, Any]:
    timeline = Timeline()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        origin = time.monotonic()
        sampler = asyncio.create_task(sample_stats(session, base, "default/work", origin, timeline))
        await open_loop(
            session,
            f"{base}/function/work",
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
            if timeline.samples and timeline.samples[-1].replicas == 0:
                break
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)

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
    settled = [s.ready for s in during if s.t >= 60.0]
    zero_at = next((s.t for s in timeline.samples if s.t > load_end and s.replicas == 0), None)
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


async def throttle(base: str, args: argparse.Namespace) -> dict[str, Any]:
    calls: list[Call] = []
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # One warm-up call so the first 200s are not cold starts.
        async with session.post(f"{base}/function/capped", json={"seconds": 0}) as response:
            await response.read()
        await open_loop(
            session,
            f"{base}/function/capped",
            rps=args.overload_rps,
            seconds=OVERLOAD_SECONDS,
            body={"seconds": OVERLOAD_WORK_SECONDS},
            origin=time.monotonic(),
            into=calls,
        )
    throttled = [c.seconds for c in calls if c.status == 429]
    return {
        "reserved_concurrency": RESERVED,
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


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["timeline"]
    t = [s["t"] for s in samples]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.step(t, [s["ready"] for s in samples], where="post", label="ready instances")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=float, default=40.0)
    parser.add_argument("--work", type=float, default=0.5, help="seconds per call")
    parser.add_argument("--target", type=int, default=2, help="targetConcurrency")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--tail", type=float, default=40.0, help="seconds to follow after")
    parser.add_argument("--overload-rps", type=float, default=200.0)
    parser.add_argument("--plot", type=Path, default=HERE / "autoscale_local.png")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    steady = math.ceil(args.rps * args.work / args.target)
    manifests = MANIFESTS.format(
        max_scale=max(steady * 3, 10),
        target=args.target,
        idle=SCALE_TO_ZERO_AFTER_SECONDS,
        reserved=RESERVED,
    )
    host = machine()
    with (
        tempfile.TemporaryDirectory(prefix="kubefaas-bench-") as tmp,
        gateway(Path(tmp), manifests) as base,
    ):
        up = asyncio.run(scale_up(base, args))
        over = asyncio.run(throttle(base, args))

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


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
