"""Triggers: schedule fire jitter, queue-source throughput, added latency per message.

One local-mode gateway (SQLite async queue) with a private nats-server -js and
redis-server, all on loopback:

- jitter: a `@every 1s` schedule; for each tick (the first two, which include the cold
  start, left out) how late the invocation was stored (its record's `createdAt` minus the
  tick) and how late the handler ran; p50/p99 in ms;
- throughput: `--messages` published to a NATS stream, then to a Redis stream, each read by
  a queue trigger into a warm function; messages/s from the first publish to the last
  message's handler run, and beside it the plain async path (`POST /async-function`,
  16 connections) for the same count in the same run;
- added latency: `--probes` messages one at a time (the next after the previous ran)
  through each trigger and through `POST /async-function`; p50/p99 from send to handler
  start; the difference of p50s is what a trigger adds to the plain async path.

    python bench/triggers.py [--ticks 30] [--messages 1000] [--probes 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import nats
import redis.asyncio as aioredis
from host import free_port, machine
from nats.js.api import StreamConfig

from kubefaas_gateway.triggers.schedule import tick_id

START_TIMEOUT_SECONDS = 30.0

HANDLER = """\
import os
import time

def handler(event, context):
    now = time.time()
    kind = event.get("kind", "tick")
    sent = event.get("sentAt", event.get("scheduledTime"))
    with open(os.path.join(os.environ["OUT"], kind), "a") as f:
        f.write(f"{event.get('seq', sent)} {now - sent:.6f}\\n")
    return {"ok": True}
"""


def manifests(out: Path, nats_url: str, redis_url: str) -> str:
    def fn(name: str, triggers: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": name},
            "spec": {
                "runtime": "python3.11",
                "env": [{"name": "OUT", "value": str(out)}],
                "code": {"inline": {"main.py": HANDLER}},
                "triggers": triggers,
            },
        }

    docs = [
        fn("tick", [{"name": "every-second", "schedule": {"expression": "@every 1s"}}]),
        fn(
            "sink",
            [
                {
                    "name": "nats",
                    "queue": {
                        "nats": {
                            "url": nats_url,
                            "stream": "BENCH",
                            "subject": "bench.in",
                            "consumer": "sink",
                        }
                    },
                },
                {
                    "name": "redis",
                    "queue": {"redis": {"url": redis_url, "stream": "bench-in", "group": "sink"}},
                },
            ],
        ),
    ]
    return "\n---\n".join(json.dumps(d) for d in docs)


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process.poll() is not None:
                sys.exit(f"{what} exited at start")
            time.sleep(0.05)
    sys.exit(f"{what} did not start")


@contextmanager
def process(command: list[str], port: int, what: str, **kwargs: Any) -> Iterator[None]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    try:
        _wait_port(port, proc, what)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        sys.exit(f"{name} is not installed (apt-get install -y {name})")
    return found


def lines(out: Path, kind: str) -> list[tuple[str, float]]:
    path = out / kind
    if not path.exists():
        return []
    return [(a, float(b)) for a, b in (line.split() for line in path.read_text().splitlines())]


async def wait_lines(out: Path, kind: str, count: int, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while len(lines(out, kind)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{kind}: fewer than {count} runs in time")
        await asyncio.sleep(0.01)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / "out"
    out.mkdir()
    nats_port, redis_port, gw_port = free_port(), free_port(), free_port()
    nats_url, redis_url = f"nats://127.0.0.1:{nats_port}", f"redis://127.0.0.1:{redis_port}/0"
    functions = work / "functions"
    functions.mkdir()
    (functions / "bench.yaml").write_text(manifests(out, nats_url, redis_url))
    base = f"http://127.0.0.1:{gw_port}"
    with (
        process(
            [binary("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(nats_port),
             "-sd", str(work / "js")],
            nats_port, "nats-server",
        ),
        process(
            [binary("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1",
             "--dir", str(work), "--save", "", "--appendonly", "yes"],
            redis_port, "redis-server",
        ),
    ):  # fmt: skip
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.in"]))
        rds = aioredis.from_url(redis_url)
        env = {**os.environ, "KUBEFAAS_LOG_LEVEL": "warning"}
        with process(
            [sys.executable, "-m", "kubefaas_gateway.local_mode", str(functions),
             "--port", str(gw_port), "--state-dir", str(work / "state")],
            gw_port, "gateway", env=env, start_new_session=True,
        ):  # fmt: skip
            async with aiohttp.ClientSession() as session:
                result = {
                    "jitter": await jitter(args, session, base, out),
                    "throughput": await throughput(args, session, base, out, js, rds),
                    "latency": await latency(args, session, base, out, js, rds),
                }
        await nc.close()
        await rds.aclose()
    return result


async def jitter(
    args: argparse.Namespace, session: aiohttp.ClientSession, base: str, out: Path
) -> dict[str, Any]:
    await wait_lines(out, "tick", args.ticks + 2, limit=args.ticks + 60)
    ticks = sorted(float(t) for t, _ in lines(out, "tick"))[2 : args.ticks + 2]
    stored, ran = [], []
    by_tick = {float(t): late for t, late in lines(out, "tick")}
    for tick in ticks:
        ident = tick_id("default/tick", "every-second", tick)
        async with session.get(f"{base}/invocations/{ident}") as response:
            record = await response.json()
        stored.append((record["createdAt"] - tick) * 1000)
        ran.append(by_tick[tick] * 1000)
    return {
        "ticks": len(ticks),
        "stored_late_ms_p50": round(pct(stored, 0.5), 2),
        "stored_late_ms_p99": round(pct(stored, 0.99), 2),
        "handler_late_ms_p50": round(pct(ran, 0.5), 2),
        "handler_late_ms_p99": round(pct(ran, 0.99), 2),
    }


def event(kind: str, seq: int) -> bytes:
    return json.dumps({"kind": kind, "seq": seq, "sentAt": time.time()}).encode()


async def post_async(session: aiohttp.ClientSession, base: str, body: bytes) -> None:
    async with session.post(f"{base}/async-function/sink", data=body) as response:
        assert response.status == 202, await response.text()


async def throughput(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    base: str,
    out: Path,
    js: Any,
    rds: aioredis.Redis,
) -> dict[str, float]:
    n = args.messages
    # Warm the function (one instance up) before timing anything.
    await post_async(session, base, event("warm", 0))
    await wait_lines(out, "warm", 1)
    rates: dict[str, float] = {}

    started = time.perf_counter()
    for seq in range(n):
        await js.publish("bench.in", event("tp-nats", seq))
    await wait_lines(out, "tp-nats", n)
    rates["nats_msgs_per_s"] = round(n / (time.perf_counter() - started), 1)

    started = time.perf_counter()
    pipe = rds.pipeline(transaction=False)
    for seq in range(n):
        pipe.xadd("bench-in", {"body": event("tp-redis", seq)})
    await pipe.execute()
    await wait_lines(out, "tp-redis", n)
    rates["redis_msgs_per_s"] = round(n / (time.perf_counter() - started), 1)

    started = time.perf_counter()
    sequence = iter(range(n))

    async def client() -> None:
        for seq in sequence:
            await post_async(session, base, event("tp-async", seq))

    await asyncio.gather(*(client() for _ in range(16)))
    await wait_lines(out, "tp-async", n)
    rates["plain_async_per_s"] = round(n / (time.perf_counter() - started), 1)
    return rates


async def latency(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    base: str,
    out: Path,
    js: Any,
    rds: aioredis.Redis,
) -> dict[str, float]:
    result: dict[str, float] = {}
    senders = {
        "nats": lambda body: js.publish("bench.in", body),
        "redis": lambda body: rds.xadd("bench-in", {"body": body}),
        "async": lambda body: post_async(session, base, body),
    }
    for name, send in senders.items():
        kind = f"lat-{name}"
        for seq in range(args.probes):
            await send(event(kind, seq))
            await wait_lines(out, kind, seq + 1, limit=30)
        values = [late * 1000 for _, late in lines(out, kind)]
        result[f"{name}_ms_p50"] = round(statistics.median(values), 2)
        result[f"{name}_ms_p99"] = round(pct(values, 0.99), 2)
    for name in ("nats", "redis"):
        result[f"{name}_added_ms_p50"] = round(result[f"{name}_ms_p50"] - result["async_ms_p50"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    host = machine()
    with tempfile.TemporaryDirectory(prefix="kubefaas-bench-triggers-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    report = {"machine": host, **result}
    j, t, lat = result["jitter"], result["throughput"], result["latency"]
    print(f"machine: {host['nproc']} x {host['cpu']}, load {host['loadavg_1m_at_start']}")
    print(f"schedule @every 1s, {j['ticks']} ticks: stored late p50 {j['stored_late_ms_p50']} ms, "
          f"p99 {j['stored_late_ms_p99']} ms; handler late p50 {j['handler_late_ms_p50']} ms, "
          f"p99 {j['handler_late_ms_p99']} ms")  # fmt: skip
    print(f"throughput, {args.messages} messages: NATS {t['nats_msgs_per_s']}/s, Redis stream "
          f"{t['redis_msgs_per_s']}/s, plain async {t['plain_async_per_s']}/s")  # fmt: skip
    for name in ("nats", "redis", "async"):
        print(f"latency send -> handler, {name}: p50 {lat[f'{name}_ms_p50']} ms, "
              f"p99 {lat[f'{name}_ms_p99']} ms")  # fmt: skip
    print(f"added by the trigger vs plain async (p50): NATS {lat['nats_added_ms_p50']} ms, "
          f"Redis {lat['redis_added_ms_p50']} ms")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
