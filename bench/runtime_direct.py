"""Throughput and latency of the function runtime alone, over loopback.

Starts ``python -m kubefaas_runtime`` with a trivial handler (sync and async variants)
and drives it from a second process: ``wrk`` when installed, else a small aiohttp
client loop. On a machine with two or more CPUs the runtime is pinned to CPU 0 and the
load generator to CPU 1 (``taskset``), so the figure is "one core of runtime", the unit
docs/architecture.md, "Measured facts" uses.

Two measurements per handler kind, both bounded in time and loopback-only:

- throughput: ``--connections`` (64) keep-alive connections for ``--duration`` (10 s);
- latency: one connection for half that time (p50 is the per-call cost).

Usage::

    python bench/runtime_direct.py [--duration 10] [--connections 64] [--runs 1]
        [--kind sync|async|both] [--baseline] [--client auto|wrk|aiohttp]

Prints one line per measurement and a summary table; with ``--runs`` > 1 the median
run is reported. Besides req/s, it reports the runtime's CPU time per request (from
/proc): on a shared or busy machine req/s mostly measures the neighbours, while CPU per
request does not, and 1e6 / (CPU us per request) is what one free core would serve.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from host import cpu_model, free_port

RUNTIME_SOURCE = Path(__file__).resolve().parents[1] / "runtime"

HANDLERS = {
    "sync": 'def handler(event, context):\n    return {"ok": True}\n',
    "async": 'async def handler(event, context):\n    return {"ok": True}\n',
}

# ``--baseline``: the ceiling of one Python HTTP hop (see docs/architecture.md,
# "Measured facts"), a raw ASGI app that answers the same body on uvicorn configured as the
# runtime configures it. It answers /healthz like any path, so the readiness wait below
# works for it too.
BASELINE_APP = """
import os, uvicorn
BODY = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), loop="uvloop",
            http="httptools", ws="none", lifespan="off", interface="asgi3",
            access_log=False, log_level="warning", proxy_headers=False, server_header=False)
"""


@dataclass
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us_per_request: float = float("nan")
    """CPU time the runtime process spent per request (Linux): unlike req/s, this does
    not depend on what else the machine is running, and 1e6 / it is the req/s one fully
    available core would serve."""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pin(cpu: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def _start_runtime(kind: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    code = workdir / kind
    code.mkdir(parents=True, exist_ok=True)
    (code / "main.py").write_text(HANDLERS.get(kind, ""))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(RUNTIME_SOURCE), os.environ.get("PYTHONPATH", "")) if p
        ),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "KUBEFAAS_CODE_DIR": str(code),
        "TMPDIR": str(workdir / "tmp"),
        "KUBEFAAS_DRAIN_GRACE_SECONDS": "0",
    }
    command = ["-c", BASELINE_APP] if kind == "baseline" else ["-m", "kubefaas_runtime"]
    process = subprocess.Popen(
        [*_pin(0), sys.executable, *command],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runtime exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return process, url
        except OSError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("runtime not ready in 15 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- wrk ----------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, connections: int, seconds: float) -> Result:
    command = [
        *_pin(1),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def latency(percentile: str) -> float:
        match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            raise RuntimeError(f"cannot read p{percentile} from wrk:\n{output}")
        return float(match.group(1)) * _UNITS_MS[match.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:.*", output)
    if rate is None:
        raise RuntimeError(f"cannot read Requests/sec from wrk:\n{output}")
    return Result(
        requests_per_second=float(rate.group(1)),
        p50_ms=latency("50"),
        p99_ms=latency("99"),
        errors=(int(errors.group(1)) if errors else 0) + (1 if socket_errors else 0),
        requests=int(total.group(1)) if total else 0,
    )


# --- aiohttp fallback (runs in a child process, so it does not share a core) ---------


async def _aiohttp_load(url: str, connections: int, seconds: float) -> Result:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return Result(
        requests_per_second=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        errors=errors,
        requests=len(latencies),
    )


def _aiohttp(url: str, connections: int, seconds: float) -> Result:
    command = [
        *_pin(1),
        sys.executable,
        __file__,
        "--load-url",
        url,
        "--connections",
        str(connections),
        "--duration",
        str(seconds),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps, p50, p99, errors, requests = output.split()
    return Result(float(rps), float(p50), float(p99), int(errors), int(requests))


# --- main ---------------------------------------------------------------------------


def _median(results: list[Result]) -> Result:
    ordered = sorted(results, key=lambda r: r.requests_per_second)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--kind", choices=["sync", "async", "both"], default="both")
    parser.add_argument(
        "--baseline", action="store_true", help="also measure a raw ASGI app on uvicorn"
    )
    parser.add_argument("--client", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument("--load-url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.load_url:  # child mode of the aiohttp fallback
        result = asyncio.run(_aiohttp_load(args.load_url, args.connections, args.duration))
        print(
            result.requests_per_second, result.p50_ms, result.p99_ms, result.errors, result.requests
        )
        return
    if not 1 <= args.connections <= 1024 or not 1 <= args.duration <= 120:
        parser.error("keep the load bounded: 1-1024 connections, 1-120 s")

    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    client_name = "wrk" if use_wrk else "aiohttp"
    load = _wrk if use_wrk else _aiohttp
    kinds = ["sync", "async"] if args.kind == "both" else [args.kind]
    if args.baseline:
        kinds.append("baseline")
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    pinned = "runtime on CPU 0, client on CPU 1" if _pin(0) else "not pinned"
    print(
        f"# kubefaas runtime direct: {os.cpu_count()} CPUs ({cpu_model()}), "
        f"client {client_name}, {pinned}, load average {load_average:.2f} at start"
    )

    summary: list[tuple[str, Result, Result]] = []
    with tempfile.TemporaryDirectory(prefix="kubefaas-bench-") as workdir:
        for kind in kinds:
            busy_runs, idle_runs = [], []
            for run in range(args.runs):
                process, url = _start_runtime(kind, Path(workdir))
                try:
                    load(url, 8, 1.0)  # warm up: threads started, code paths hot
                    cpu_before = _cpu_seconds(process.pid)
                    busy = load(url, args.connections, args.duration)
                    cpu = _cpu_seconds(process.pid) - cpu_before
                    if busy.requests:
                        busy.cpu_us_per_request = cpu / busy.requests * 1e6
                    idle = load(url, 1, max(1.0, args.duration / 2))
                finally:
                    _stop(process)
                busy_runs.append(busy)
                idle_runs.append(idle)
                print(
                    f"{kind:8} run {run + 1}: {busy.requests_per_second:9.0f} req/s at "
                    f"{args.connections} conns (p50 {busy.p50_ms:.2f} ms, p99 "
                    f"{busy.p99_ms:.2f} ms, runtime CPU {busy.cpu_us_per_request:.1f} us/req); "
                    f"1 conn p50 {idle.p50_ms:.3f} ms, "
                    f"p99 {idle.p99_ms:.3f} ms, {idle.requests_per_second:.0f} req/s; "
                    f"errors {busy.errors + idle.errors}"
                )
            summary.append((kind, _median(busy_runs), _median(idle_runs)))

    print()
    print(
        f"| handler | req/s at {args.connections} conns | p50 | p99 | runtime CPU/req "
        "| req/s per free core | p50 at 1 conn | p99 at 1 conn |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, busy, idle in summary:
        print(
            f"| {kind} | {busy.requests_per_second:,.0f} | {busy.p50_ms:.2f} ms | "
            f"{busy.p99_ms:.2f} ms | {busy.cpu_us_per_request:.1f} us | "
            f"{1e6 / busy.cpu_us_per_request:,.0f} | "
            f"{idle.p50_ms:.3f} ms | {idle.p99_ms:.3f} ms |"
        )
    if len(summary) and statistics.fmean(b.errors for _, b, _ in summary) > 0:
        print("warning: some requests failed; see the per-run lines")


if __name__ == "__main__":
    main()
