"""The invoke-auth case of bench/gateway_overhead.py (`--auth`): what `token` and `jwt`
auth add to a warm call through the gateway, against `auth: none`, in the same run.

One gateway serves three copies of the trivial handler, `bench-none`, `bench-token` (a key
from the local secrets folder) and `bench-jwt` (RS256, PEM public key from the secrets
folder; one token, so after its first verification the cache answers), each with one
instance. The three are loaded in turn, `--runs` times per connection count, with the same
load generator and pinning as the main case. Targets (issue 11): at most +0.1 ms p50 and
-10 % req/s against `none`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import gateway_overhead as bench
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TOKEN = "bench-key-0123456789abcdef"
ISSUER = "https://bench.invalid"
AUDIENCE = "bench"
MODES = ("none", "token", "jwt")


def _functions(folder: Path) -> dict[str, str]:
    """Write the three functions and their secrets; the header each call sends."""
    scaling = {"maxScale": 1, "targetConcurrency": 1000, "scaleToZeroAfterSeconds": 0}
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    secrets = folder / "secrets" / "default"
    (secrets / "kubefaas-invoke-tokens").mkdir(parents=True)
    (secrets / "kubefaas-invoke-tokens" / "bench").write_text(TOKEN)
    (secrets / "signer").mkdir()
    (secrets / "signer" / "public.pem").write_bytes(pem)
    auth = {
        "none": {"mode": "none"},
        "token": {"mode": "token"},
        "jwt": {
            "mode": "jwt",
            "jwt": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "publicKey": {"name": "signer", "key": "public.pem"},
            },
        },
    }
    for mode in MODES:
        bench.write_function(
            folder, f"bench-{mode}", bench.HANDLER, scaling=scaling, auth=auth[mode]
        )
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 3600, "sub": "bench"}
    return {"token": TOKEN, "jwt": jwt.encode(claims, key, algorithm="RS256")}


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="kubefaas-bench-auth-") as scratch:
        folder = Path(scratch) / "functions"
        folder.mkdir()
        credentials = _functions(folder)
        costs = check_cost_us(credentials, folder)
        gateway = bench.Gateway(folder, Path(scratch) / "state")
        try:
            targets = []
            for mode in MODES:
                headers = (
                    {"Authorization": f"Bearer {credentials[mode]}"} if mode in credentials else {}
                )
                url = f"{gateway.url}/function/bench-{mode}"
                request = bench.urllib.request.Request(url, data=b"{}", headers=headers)
                instance = json.loads(bench.urllib.request.urlopen(request, timeout=30).read())
                bench.pin_process(instance["pid"], 1)
                bench.load(url, 8, 1, headers)  # warm: pools, code, the JWT cache
                targets.append((mode, url, headers))
            load_before = os.getloadavg()[0]
            results: dict[tuple[str, int], list[tuple[bench.Run, float]]] = {}
            for connections in args.connections:
                for turn in range(args.runs):
                    # Rotated each round, so no mode always runs first (or last) in it.
                    for mode, url, headers in targets[turn % 3 :] + targets[: turn % 3]:
                        results.setdefault((mode, connections), []).append(
                            bench.measured(
                                gateway.process.pid, url, connections, args.duration, headers
                            )
                        )
            load_after = os.getloadavg()[0]
        finally:
            gateway.stop()
    figures = {key: _median(runs) for key, runs in results.items()}
    info = bench.machine()
    print(
        f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
        f"load by {info['load_generator']}, gateway pinned to its own CPU: {info['pinned']}"
    )
    print(
        f"invoke auth, warm, through the gateway; median of {args.runs} runs of "
        f"{args.duration:g}s each; load average {load_before:.1f} before, {load_after:.1f} after\n"
    )
    print(table(figures, args.connections))
    print(
        "\nin-process cost of the auth check (CPU µs per call, warm caches): "
        + ", ".join(f"{mode} {cost:.2f}" for mode, cost in costs.items())
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "load_average": [load_before, load_after],
                    "check_cpu_us": costs,
                    "figures": [
                        {"auth": mode, "connections": c, **figure}
                        for (mode, c), figure in sorted(figures.items())
                    ],
                },
                indent=2,
            )
        )
    return 0


def _median(runs: list[tuple[bench.Run, float]]) -> dict[str, float]:
    return {
        "requests_per_second": statistics.median(r.requests_per_second for r, _ in runs),
        "p50_ms": statistics.median(r.p50_ms for r, _ in runs),
        "p99_ms": statistics.median(r.p99_ms for r, _ in runs),
        "cpu_us_per_request": statistics.median(cpu for _, cpu in runs),
    }


def table(figures: dict[tuple[str, int], dict[str, Any]], connections: list[int]) -> str:
    lines = [
        "| connections | auth | req/s | vs none | p50 ms | added p50 ms | p99 ms "
        "| gateway CPU µs/req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in connections:
        base = figures[("none", c)]
        for mode in MODES:
            f = figures[(mode, c)]
            lines.append(
                f"| {c} | {mode} | {f['requests_per_second']:,.0f} | "
                f"{(f['requests_per_second'] / base['requests_per_second'] - 1) * 100:+.1f} % | "
                f"{f['p50_ms']:.3f} | {f['p50_ms'] - base['p50_ms']:+.3f} | {f['p99_ms']:.3f} | "
                f"{f['cpu_us_per_request']:.0f} |"
            )
    return "\n".join(lines)


def check_cost_us(
    credentials: dict[str, str], folder: Path, calls: int = 20_000
) -> dict[str, float]:
    """CPU µs of one `Authenticator.check` per mode, in this process (warm caches): the
    auth share of a request, free of the machine's load."""
    import asyncio

    from kubefaas.manifests import load_directory
    from kubefaas_gateway.auth import Authenticator
    from kubefaas_gateway.secrets import CachedSecrets, FolderSecrets

    functions = {fn.name: fn for fn in load_directory(folder).functions}
    auth = Authenticator(
        default_mode="none",
        secrets=CachedSecrets(FolderSecrets(folder / "secrets"), ttl=10.0),
        session=lambda: None,
    )

    async def measure() -> dict[str, float]:
        costs = {}
        for mode in MODES:
            fn = functions[f"bench-{mode}"]
            value = credentials.get(mode)
            headers = [(b"host", b"x"), (b"content-type", b"application/json")]
            if value is not None:
                headers.append((b"authorization", f"Bearer {value}".encode()))
            await auth.check(fn, headers)  # fill the caches
            began = time.process_time()
            for _ in range(calls):
                if not auth.open(fn):
                    await auth.check(fn, headers)
            costs[mode] = (time.process_time() - began) / calls * 1e6
        return costs

    return asyncio.run(measure())
