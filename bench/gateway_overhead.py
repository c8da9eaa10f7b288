"""What the gateway adds to a warm invocation: through the gateway vs the instance directly.

Starts `python -m kubefaas_gateway.local_mode` over one trivial function, warms it, then loads
the same runtime instance two ways in the same run, alternating: directly on its port, and
through the gateway's `/function/...` route. Reports req/s, p50 and p99 for both at 1 and
64 connections, and their ratio. In the same run, a second gateway with function logs and
metering off (`KUBEFAAS_FUNCTION_LOGS=false`, `KUBEFAAS_METERING=false`, and no REPORT
lines from its instance) is loaded the same way, for what logs + metering cost on the warm
path (docs/logs.md). With `taskset` the gateway gets CPU 0 to itself and the
instance and the load generator share CPU 1 (the setup of docs/architecture.md,
"Measured facts": the proxy alone on one core). Uses `wrk` when installed, else an
aiohttp closed-loop load generator (slower, so its figures are a floor). Loopback only,
bounded in time.

    python bench/gateway_overhead.py [--duration 5] [--runs 3] [--json out.json]

`--auth` runs the invoke-auth case instead (bench/auth_case.py): the same warm call through
the gateway to three functions, `auth: none`, `token` and `jwt`, same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import host
import yaml

HANDLER = """\
import os

PORT = os.environ["PORT"]
PID = os.getpid()

def handler(event, context):
    return {"pid": PID, "port": PORT}
"""
CONNECTIONS = (1, 64)


class Run(NamedTuple):
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int


@dataclass
class Figures:
    target: str  # "direct", "gateway" or "gateway-off" (logs + metering off)
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    # CPU time of the serving process (gateway, or the instance for "direct") per request:
    # what one request costs it, whatever else shares the machine.
    cpu_us_per_request: float


def machine() -> dict[str, Any]:
    """The host, plus how this benchmark loads it."""
    return {
        **host.machine(),
        "load_generator": "wrk" if shutil.which("wrk") else "aiohttp",
        "pinned": "yes" if pinning() else "no",
    }


def pinning() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cpu: int, command: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if pinning() else list(command)


def pin_process(pid: int, cpu: int) -> None:
    """Move a running process (all its threads) to `cpu`."""
    if pinning():
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True, stdout=subprocess.DEVNULL
        )


def write_function(folder: Path, name: str, source: str, **spec: object) -> None:
    document = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name},
        "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": source}}, **spec},
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(document))


class Gateway:
    """A `kubefaas local` gateway process over `folder`, on CPU 0 when `pin` (its instances
    inherit that CPU until moved)."""

    def __init__(
        self, folder: Path, state: Path, *, env: dict[str, str] | None = None, pin: bool = True
    ) -> None:
        self.log = state / "gateway.log"
        state.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBEFAAS_")}
        environment.update({"KUBEFAAS_LOG_LEVEL": "warning", **(env or {})})
        command = [
            sys.executable,
            "-m",
            "kubefaas_gateway.local_mode",
            str(folder),
            "--port",
            "0",
            "--state-dir",
            str(state),
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                pinned(0, command) if pin else command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        self.url = self._wait_listening()

    def _wait_listening(self) -> str:
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            found = re.search(r"serving on (http://\S+)", self.log.read_text(errors="replace"))
            if found:
                url = found.group(1)
                while time.monotonic() < give_up:
                    try:
                        urllib.request.urlopen(url + "/readyz", timeout=1).read()
                        return url
                    except OSError:
                        time.sleep(0.05)
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not start:\n{self.log.read_text()}")

    def call(self, path: str, body: bytes = b"{}") -> tuple[dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(response.headers.items()), response.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _milliseconds(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, connections: int, duration: float, headers: dict[str, str] | None = None
) -> Run:
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    command = pinned(
        1,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            *extra,
            url,
        ],
    )
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _milliseconds(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _milliseconds(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in output or "Socket errors" in output:
        print(f"  warning: wrk reported errors for {url}:\n{output}", file=sys.stderr)
    return Run(rps, p50, p99, requests)


async def _aiohttp_load(
    url: str, connections: int, duration: float, headers: dict[str, str] | None = None
) -> Run:
    import aiohttp

    latencies: list[float] = []
    stop_at = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    rps = len(latencies) / elapsed
    return Run(rps, statistics.median(latencies) * 1000, p99 * 1000, len(latencies))


def load(url: str, connections: int, duration: float, headers: dict[str, str] | None = None) -> Run:
    """Load GET `url` with `connections` for `duration` seconds (sending `headers`)."""
    if shutil.which("wrk"):
        return run_wrk(url, connections, duration, headers)
    if pinning():  # keep the load generator off the gateway's CPU
        os.sched_setaffinity(0, {1})
    try:
        return asyncio.run(_aiohttp_load(url, connections, duration, headers))
    finally:
        if pinning():
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(
    pid: int, url: str, connections: int, duration: float, headers: dict[str, str] | None = None
) -> tuple[Run, float]:
    """A load run and the CPU µs per request that `pid` spent serving it."""
    before = cpu_seconds(pid)
    run = load(url, connections, duration, headers)
    return run, (cpu_seconds(pid) - before) / max(run.requests, 1) * 1e6


def median_figures(target: str, connections: int, runs: list[tuple[Run, float]]) -> Figures:
    return Figures(
        target=target,
        connections=connections,
        requests_per_second=statistics.median(r.requests_per_second for r, _ in runs),
        p50_ms=statistics.median(r.p50_ms for r, _ in runs),
        p99_ms=statistics.median(r.p99_ms for r, _ in runs),
        cpu_us_per_request=statistics.median(cpu for _, cpu in runs),
    )


def table(figures: list[Figures]) -> str:
    by = {(f.target, f.connections): f for f in figures}
    lines = [
        "| connections | direct req/s | gateway req/s | gateway/direct | direct p50 ms | "
        "gateway p50 ms | added p50 ms | direct p99 ms | gateway p99 ms | "
        "gateway CPU µs/req | gateway req/s per CPU-s | logs+metering off: req/s | "
        "off p50 ms | off CPU µs/req | logs+metering CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for connections in sorted({f.connections for f in figures}):
        d, g = by[("direct", connections)], by[("gateway", connections)]
        o = by.get(("gateway-off", connections))
        off = (
            f"{o.requests_per_second:,.0f} | {o.p50_ms:.3f} | {o.cpu_us_per_request:.0f} | "
            f"{g.cpu_us_per_request - o.cpu_us_per_request:+.0f} |"
            if o is not None
            else "- | - | - | - |"
        )
        lines.append(
            f"| {connections} | {d.requests_per_second:,.0f} | {g.requests_per_second:,.0f} | "
            f"{g.requests_per_second / d.requests_per_second:.2f} | {d.p50_ms:.3f} | "
            f"{g.p50_ms:.3f} | {g.p50_ms - d.p50_ms:.3f} | {d.p99_ms:.3f} | {g.p99_ms:.3f} | "
            f"{g.cpu_us_per_request:.0f} | {1e6 / g.cpu_us_per_request:,.0f} | {off}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median kept)")
    parser.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--auth", action="store_true", help="the invoke-auth case instead")
    args = parser.parse_args(argv)
    if args.auth:
        import auth_case

        return auth_case.run(args)

    with tempfile.TemporaryDirectory(prefix="kubefaas-bench-") as scratch:
        folder = Path(scratch) / "functions"
        folder.mkdir()
        # One instance, always: the autoscaler must not add instances (they would share the
        # gateway's CPU) nor remove the one whose port is loaded directly.
        scaling = {"maxScale": 1, "targetConcurrency": 1000, "scaleToZeroAfterSeconds": 0}
        write_function(folder, "bench", HANDLER, scaling=scaling)
        quiet = Path(scratch) / "functions-quiet"
        quiet.mkdir()
        write_function(
            quiet,
            "bench",
            HANDLER,
            scaling=scaling,
            env=[{"name": "KUBEFAAS_REPORTS", "value": "off"}],
        )
        gateway = Gateway(folder, Path(scratch) / "state")
        gateway_off = Gateway(
            quiet,
            Path(scratch) / "state-off",
            env={"KUBEFAAS_FUNCTION_LOGS": "false", "KUBEFAAS_METERING": "false"},
        )
        try:
            _, body = gateway.call("/function/bench")
            instance = json.loads(body)
            pin_process(instance["pid"], 1)
            _, body = gateway_off.call("/function/bench")
            pin_process(json.loads(body)["pid"], 1)
            direct_url = f"http://127.0.0.1:{instance['port']}/"
            gateway_url = f"{gateway.url}/function/bench"
            off_url = f"{gateway_off.url}/function/bench"
            load(gateway_url, 8, 1)  # warm every path: connection pools, code
            load(off_url, 8, 1)
            load(direct_url, 8, 1)
            targets = (
                ("direct", direct_url, instance["pid"]),
                ("gateway", gateway_url, gateway.process.pid),
                ("gateway-off", off_url, gateway_off.process.pid),
            )
            load_before = os.getloadavg()[0]
            results: dict[tuple[str, int], list[tuple[Run, float]]] = {}
            for connections in args.connections:
                for _ in range(args.runs):
                    for target, url, pid in targets:
                        results.setdefault((target, connections), []).append(
                            measured(pid, url, connections, args.duration)
                        )
            load_after = os.getloadavg()[0]
        finally:
            gateway.stop()
            gateway_off.stop()
    figures = [median_figures(t, c, runs) for (t, c), runs in results.items()]
    info = machine()
    print(
        f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
        f"load by {info['load_generator']}, gateway pinned to its own CPU: {info['pinned']}"
    )
    print(
        f"warm invoke, median of {args.runs} runs of {args.duration:g}s each; load average "
        f"{load_before:.1f} before, {load_after:.1f} after (other work on the machine skews "
        "req/s and latency; CPU per request is steadier)\n"
    )
    print(table(figures))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "load_average": [load_before, load_after],
                    "figures": [asdict(f) for f in figures],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
