"""The console's cost on the gateway: one sampler tick and one functions-page computation.

With the console on, a background task reads the gateway's counters every 10 s into the
per-minute history (`console/history.py`); the functions page reads them again and builds
an hour's window per function. The reads run in a worker thread (off the event loop, but
they take CPU and the GIL); the windows run on the loop. Measured in process for N
functions, each with counters for three status codes and both invocation types, and a
full hour of history.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from host import machine

from kubefaas.api import parse_function
from kubefaas_gateway.console.history import MINUTES, History, read
from kubefaas_gateway.metrics import Metrics
from kubefaas_gateway.signals import ScalingSignals
from kubefaas_gateway.tracker import Tracker


class _NoInstances:
    """The backend's one read the metrics make; no instances are involved here."""

    def instances(self, fn: object) -> list[object]:
        return []


def _metrics(n: int) -> Metrics:
    functions = [
        parse_function(
            {
                "apiVersion": "kubefaas.io/v1alpha1",
                "kind": "Function",
                "metadata": {"name": f"f{i}"},
                "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1\n"}}},
            }
        )
        for i in range(n)
    ]
    metrics = Metrics(
        functions=lambda: functions,
        tracker=Tracker(),
        backend=_NoInstances(),
        signals=ScalingSignals(),  # type: ignore[arg-type]
    )
    for fn in functions:
        for code in (200, 502, 429):
            for kind in ("sync", "async"):
                metrics.record(fn, code, kind, 0.01 * (1 + code % 7))
        metrics.record_cold_start(fn, 0.3)
    return metrics


def _ms(runs: list[float]) -> float:
    return statistics.median(runs) * 1000


def measure(n: int, repeat: int) -> dict[str, float]:
    metrics = _metrics(n)
    clock = [1_000_000.0]
    history = History(clock=lambda: clock[0])
    for _ in range(MINUTES + 1):  # an hour of minutes, as a running gateway has
        history.record(read(metrics))
        clock[0] += 60
    tick, page = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        history.record(read(metrics))
        tick.append(time.perf_counter() - start)
        live = read(metrics)
        start = time.perf_counter()
        for i in range(n):
            key = f"default/f{i}"
            window = history.window(key, live[key])
            window.total.quantile(0.5)
            window.total.quantile(0.99)
        page.append(time.perf_counter() - start)
    return {"functions": n, "counters_read_ms": _ms(tick), "page_windows_ms": _ms(page)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
          f"load {info.get('loadavg_1m_at_start')}")  # fmt: skip
    figures = [measure(n, args.repeat) for n in args.functions]
    print("\n| functions | counters read ms (worker thread, every 10 s) | page windows ms |")
    print("|---|---|---|")
    for row in figures:
        read_ms, windows_ms = row["counters_read_ms"], row["page_windows_ms"]
        print(f"| {row['functions']} | {read_ms:.1f} | {windows_ms:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
