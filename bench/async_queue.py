"""Async queue throughput: durable enqueue rate and end-to-end delivery rate.

For each backend (SQLite in a temporary state dir; Redis on a private redis-server with
`appendonly yes`, `appendfsync everysec` and, as a second row, `always`):

- raw enqueue/s: `queue.enqueue` called directly, 1 caller and 64 concurrent callers
  (SQLite group-commits concurrent enqueues into one fsync);
- HTTP 202/s: `POST /async-function/noop` against a real local-mode gateway, 64
  connections; each 202 means the event is stored;
- delivered/s: after enqueueing, events completed per second by the gateway's workers
  (read from the `kubefaas_async_attempts` counter on `/metrics`), with the default
  per-function concurrency cap unless `--cap` says otherwise;
- gateway CPU ms/event: the gateway process's own CPU (user + system, from /proc) over
  the enqueue and the delivery of each event, the figure that holds when the machine is
  busy with other work and the rates above do not.

Everything runs on loopback and is bounded (`--events`). Prints a table with the machine
(nproc, CPU model); `--json PATH` writes the figures.

    python bench/async_queue.py [--events 2000] [--cap 8] [--json bench/async_queue.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from host import free_port, machine

from kubefaas_gateway.queue import InvocationQueue, NewInvocation
from kubefaas_gateway.queue.redis import RedisQueue
from kubefaas_gateway.queue.sqlite import SQLiteQueue

NOOP_MANIFEST = """\
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata:
  name: noop
spec:
  runtime: python3.11
  code:
    inline:
      main.py: |
        def handler(event, context):
            return {"ok": True}
"""
BODY = b'{"order": 42, "items": ["a", "b", "c"]}'
CONNECTIONS = 64
START_TIMEOUT_SECONDS = 30.0
DELIVERY_TIMEOUT_SECONDS = 300.0


@contextmanager
def redis_server(directory: Path, fsync: str) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "yes", "--appendfsync", fsync, "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(8).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def raw_enqueue(queue: InvocationQueue, events: int, callers: int) -> float:
    """Enqueues per second with `callers` concurrent callers."""
    await queue.open()
    try:
        per_caller = events // callers

        async def caller() -> None:
            for _ in range(per_caller):
                await queue.enqueue(
                    NewInvocation(id=uuid.uuid4().hex, function="bench/raw", body=BODY),
                    now=time.time(),
                )

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return per_caller * callers / (time.perf_counter() - started)
    finally:
        await queue.close()


@contextmanager
def gateway(state_dir: Path, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    functions = state_dir / "functions"
    functions.mkdir(parents=True, exist_ok=True)
    (functions / "noop.yaml").write_text(NOOP_MANIFEST)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kubefaas_gateway.local_mode", str(functions), "--port", str(port),
         "--state-dir", str(state_dir / "state")],
        env={**os.environ, "KUBEFAAS_LOG_LEVEL": "warning",
             "KUBEFAAS_ASYNC_STATS_INTERVAL_SECONDS": "0.5", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None:
                    sys.exit("the gateway exited at start")
                time.sleep(0.05)
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


_SUCCEEDED = re.compile(
    r'^kubefaas_async_attempts_total\{[^}]*function="noop"[^}]*outcome="succeeded"[^}]*\}'
    r"\s+([0-9.e+]+)",
    re.MULTILINE,
)


async def succeeded(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    return int(sum(float(m) for m in _SUCCEEDED.findall(text)))


async def delivered_at_least(session: aiohttp.ClientSession, base: str, count: int) -> None:
    """Poll the gateway's counter (another process: there is no event to wait on)."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    while await succeeded(session, base) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} events delivered in time")
        await asyncio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def over_http(base: str, pid: int, events: int) -> tuple[float, float, float]:
    """(202s per second, deliveries per second, gateway CPU ms per event)."""
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up: one event makes the function's first instance start.
        async with session.post(f"{base}/async-function/noop", data=BODY) as response:
            assert response.status == 202, await response.text()
        await delivered_at_least(session, base, 1)

        queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(events):
            queue.put_nowait(None)

        async def client() -> None:
            while not queue.empty():
                queue.get_nowait()
                async with session.post(
                    f"{base}/async-function/noop",
                    data=BODY,
                    headers={"Content-Type": "application/json"},
                ) as response:
                    await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"enqueue answered {response.status}")

        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
        accepted = time.perf_counter() - started
        await delivered_at_least(session, base, events + 1)
        delivered = time.perf_counter() - started
        cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / events
    return events / accepted, events / delivered, cpu_ms


def run(events: int, cap: int) -> list[dict[str, Any]]:
    rows = []
    env = {"KUBEFAAS_ASYNC_CONCURRENCY_CAP": str(cap)}
    with tempfile.TemporaryDirectory(prefix="kubefaas-bench-") as tmp:
        root = Path(tmp)
        for name in ("sqlite", "redis everysec", "redis always"):
            work = root / name.replace(" ", "-")
            work.mkdir()
            if name == "sqlite":
                raw1 = asyncio.run(raw_enqueue(SQLiteQueue.in_state_dir(work / "raw1"), 500, 1))
                raw64 = asyncio.run(
                    raw_enqueue(SQLiteQueue.in_state_dir(work / "raw64"), events, CONNECTIONS)
                )
                with gateway(work, env) as (base, pid):
                    accepted, delivered, cpu_ms = asyncio.run(over_http(base, pid, events))
            else:
                fsync = name.split()[1]
                with redis_server(work, fsync) as url:
                    raw1 = asyncio.run(raw_enqueue(RedisQueue(url, prefix="raw1"), 500, 1))
                    raw64 = asyncio.run(
                        raw_enqueue(RedisQueue(url, prefix="raw64"), events, CONNECTIONS)
                    )
                    with gateway(work, {**env, "KUBEFAAS_REDIS_URL": url}) as (base, pid):
                        accepted, delivered, cpu_ms = asyncio.run(over_http(base, pid, events))
            rows.append(
                {
                    "backend": name,
                    "raw_enqueue_per_s_1": round(raw1),
                    "raw_enqueue_per_s_64": round(raw64),
                    "http_202_per_s": round(accepted),
                    "delivered_per_s": round(delivered),
                    "gateway_cpu_ms_per_event": round(cpu_ms, 2),
                }
            )
            print(f"  {name}: done", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events per measurement")
    parser.add_argument("--cap", type=int, default=8, help="KUBEFAAS_ASYNC_CONCURRENCY_CAP")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    host = machine()
    rows = run(args.events, args.cap)
    print(
        f"machine: {host['nproc']} x {host['cpu']}, Python {host['python']}, "
        f"load average at start {host['loadavg_1m_at_start']}"
    )
    print(f"events per run: {args.events}; HTTP clients: {CONNECTIONS}; cap: {args.cap}")
    header = f"{'backend':<16} {'enqueue/s (1)':>14} {'enqueue/s (64)':>15} "
    header += f"{'HTTP 202/s':>11} {'delivered/s':>12} {'gw CPU ms/event':>16}"
    print(header)
    for row in rows:
        print(
            f"{row['backend']:<16} {row['raw_enqueue_per_s_1']:>14} "
            f"{row['raw_enqueue_per_s_64']:>15} {row['http_202_per_s']:>11} "
            f"{row['delivered_per_s']:>12} {row['gateway_cpu_ms_per_event']:>16}"
        )
    if args.json:
        figures = {"machine": host, "events": args.events, "cap": args.cap, "rows": rows}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
