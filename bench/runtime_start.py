"""How long a runtime process takes from exec to its first `/healthz` 200.

The part of a cold start that is the runtime's own (docs/architecture.md, "Cold start"):
``python -m kubefaas_runtime`` is started `--runs` times with the `hello` example's handler
on a free loopback port, and `/healthz` is polled every millisecond until it answers 200.
Wall time depends on the machine's load; the CPU the process used until then (from
/proc/PID/schedstat) much less, and it is what a pod's small CPU share has to get
through. `--baseline DIR` also starts another copy of the runtime package (an older tree), one
start of each in turn so both see the same load, for a before/after comparison. Prints
p50/p95 and the machine.

    python bench/runtime_start.py [--runs 30] [--baseline DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from host import free_port, machine

HELLO = """\
import os

GREETING = os.environ.get("GREETING", "hello")

def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"message": f"{GREETING}, {name}!", "requestId": context.request_id}
"""
DEADLINE_SECONDS = 30.0


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def cpu_ms(pid: int) -> float:
    """CPU time the process has run so far, in ms (/proc/PID/schedstat, nanoseconds)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6


def one_start(code_dir: str, pythonpath: str) -> tuple[float, float]:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "KUBEFAAS_CODE_DIR": code_dir,
        "KUBEFAAS_HANDLER": "main.handler",
        "PYTHONDONTWRITEBYTECODE": "",
    }
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubefaas_runtime"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not healthy(port):
            if proc.poll() is not None or time.monotonic() - started > DEADLINE_SECONDS:
                raise RuntimeError(f"the runtime did not become healthy (exit {proc.poll()})")
            time.sleep(0.001)
        return (time.monotonic() - started) * 1000, cpu_ms(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--baseline", help="also time the runtime package found here")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    host = machine()
    with tempfile.TemporaryDirectory() as code_dir:
        Path(code_dir, "main.py").write_text(HELLO)
        # Both by PYTHONPATH, so both are found the same way.
        this_tree = str(Path(__file__).resolve().parents[1] / "runtime")
        trees = {"this tree": this_tree} | ({"baseline": args.baseline} if args.baseline else {})
        for tree in trees.values():
            one_start(code_dir, tree)  # fill the page cache and the pycs first
        times: dict[str, list[float]] = {name: [] for name in trees}
        cpu: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                wall, used = one_start(code_dir, tree)
                times[name].append(wall)
                cpu[name].append(used)
    result: dict[str, object] = {"machine": host, "runs": args.runs}
    for name, values in times.items():
        ordered = sorted(values)
        result[name] = {
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
            "min_ms": round(ordered[0], 1),
            # CPU used until ready: what a pod's small CPU share has to get through.
            "cpu_p50_ms": round(statistics.median(cpu[name]), 1),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**result, "times_ms": times}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
