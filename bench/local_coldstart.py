"""Cold start through the gateway in local mode: idle function -> first response.

Serves one trivial function with `python -m kubefaas_gateway.local_mode`; each run makes the
function idle by stopping its instance (SIGTERM, what scale to zero sends) and waiting
until the gateway has no instance of it, then times one call from the client's side:
process start, handler import, health probe and the invocation. Reports p50/p95 over
`--runs` (20) cold calls, next to warm calls for scale, and the gateway's own view
(`X-Duration-Ms`). Loopback only, bounded in time.

    python bench/local_coldstart.py [--runs 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_overhead import Gateway, machine, write_function

HANDLER = """\
import os

def handler(event, context):
    return {"pid": os.getpid()}
"""
IDLE_TIMEOUT_SECONDS = 10.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ready_instances(gateway: Gateway) -> int:
    with urllib.request.urlopen(gateway.url + "/internal/stats", timeout=5) as response:
        stats = json.load(response)
    return int(stats["functions"]["default/cold"]["readyInstances"])


def make_idle(gateway: Gateway, pid: int) -> None:
    """Stop the instance as scale to zero would, and wait until the gateway knows."""
    os.kill(pid, signal.SIGTERM)
    give_up = time.monotonic() + IDLE_TIMEOUT_SECONDS
    while ready_instances(gateway) > 0 or _alive(pid):
        if time.monotonic() > give_up:
            raise RuntimeError(f"instance {pid} did not go away")
        time.sleep(0.02)
    time.sleep(0.2)  # let the exit's cleanup finish so it does not overlap the next start


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def timed_call(gateway: Gateway) -> tuple[float, dict[str, str], dict[str, int]]:
    began = time.perf_counter()
    headers, body = gateway.call("/function/cold")
    return (time.perf_counter() - began) * 1000, headers, json.loads(body)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    cold_ms: list[float] = []
    gateway_cold_ms: list[float] = []
    warm_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kubefaas-bench-") as scratch:
        folder = Path(scratch) / "functions"
        folder.mkdir()
        # The autoscaler must not remove the instance on its own between runs.
        write_function(folder, "cold", HANDLER, scaling={"scaleToZeroAfterSeconds": 0})
        gateway = Gateway(folder, Path(scratch) / "state", pin=False)
        try:
            _, _, answer = timed_call(gateway)  # first start also warms the OS caches
            for _ in range(args.runs):
                make_idle(gateway, answer["pid"])
                took, headers, answer = timed_call(gateway)
                if headers.get("x-cold-start") != "true":
                    raise RuntimeError(f"expected a cold start, got {headers}")
                cold_ms.append(took)
                gateway_cold_ms.append(float(headers["x-duration-ms"]))
                for _ in range(5):
                    took, headers, _ = timed_call(gateway)
                    assert headers["x-cold-start"] == "false"
                    warm_ms.append(took)
        finally:
            gateway.stop()

    rows = [
        ("cold: client, idle -> first response", cold_ms),
        ("cold: gateway's X-Duration-Ms", gateway_cold_ms),
        ("warm: client, same instance", warm_ms),
    ]
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}")
    print(f"{args.runs} cold starts (instance stopped, then one call), 5 warm calls after each\n")
    print("| what | n | p50 ms | p95 ms | min ms | max ms |")
    print("|---|---|---|---|---|---|")
    figures = {}
    for label, values in rows:
        p50, p95 = statistics.median(values), percentile(values, 0.95)
        print(
            f"| {label} | {len(values)} | {p50:.1f} | {p95:.1f} | {min(values):.1f} | "
            f"{max(values):.1f} |"
        )
        figures[label] = {
            "n": len(values),
            "p50_ms": p50,
            "p95_ms": p95,
            "min_ms": min(values),
            "max_ms": max(values),
        }
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
