"""Packaging costs: installing requirements and building images, cold and cached, layer
sizes, and the cold start of a local function with dependencies vs without.

Offline: pip installs from a folder of wheels (`--find-links`, default the wheel cache the
e2e set-up fills, `~/.cache/kubefaas/wheels`) with `PIP_NO_INDEX=1`. Two requirement
sets: small (`Jinja2`, pure Python + MarkupSafe) and heavy (`pandas`, with numpy). The
image builds use `--base` (the runtime image as an OCI archive, e.g. the one `make images`
writes) or a stand-in one-folder base. Cold starts go through a `kubefaas local` gateway
as in bench/local_coldstart.py: the instance is stopped, then one call is timed.

    python bench/build.py [--base RUNTIME.oci.tar] [--find-links DIR] [--runs 10]
                          [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_overhead import Gateway
from host import machine

from kubefaas import oci
from kubefaas.build import build_image, empty_folder_layer, image_dependency_cache
from kubefaas_gateway.backends.local_code import local_dependency_cache

SETS = {"small": "Jinja2>=3.1\n", "heavy": "pandas\n"}
IMPORTS = {"small": "import jinja2", "heavy": "import pandas"}
HANDLER = """\
import os
{imports}

def handler(event, context):
    return {{"pid": os.getpid()}}
"""
IDLE_TIMEOUT_SECONDS = 10.0


def stand_in_base() -> oci.Image:
    layer = empty_folder_layer("usr/local/lib")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": []},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }
    return oci.Image(config, (layer,))


def code_folder(root: Path, name: str, imports: str, requirements: str | None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(HANDLER.format(imports=imports))
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    return folder


def timed(work: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = work()
    return (time.perf_counter() - began) * 1000, result


def bench_builds(base: oci.Image, scratch: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for label, requirements in SETS.items():
        folder = code_folder(scratch / "build", label, IMPORTS[label], requirements)
        cache = image_dependency_cache(scratch / f"cache-{label}")
        cold_ms, cold = timed(lambda: build_image(folder, base=base, cache=cache))  # noqa: B023
        cached_ms, cached = timed(lambda: build_image(folder, base=base, cache=cache))  # noqa: B023
        (folder / "main.py").write_text(HANDLER.format(imports=IMPORTS[label]) + "# edit\n")
        edit_ms, edited = timed(lambda: build_image(folder, base=base, cache=cache))  # noqa: B023
        assert cold.deps_installed
        assert not cached.deps_installed
        assert cached.image.digest == cold.image.digest
        assert edited.deps.blob.digest == cold.deps.blob.digest
        base_bytes = sum(len(layer.blob.data) for layer in base.layers)
        figures[label] = {
            "build_cold_ms": cold_ms,
            "build_cached_ms": cached_ms,
            "build_code_edit_ms": edit_ms,
            "base_layers_bytes": base_bytes,
            "deps_layer_gzip_bytes": len(cold.deps.blob.data),
            "deps_layer_tar_bytes": len(gzip.decompress(cold.deps.blob.data)),
            "code_layer_gzip_bytes": len(cold.code.blob.data),
        }
    return figures


def ready_instances(gateway: Gateway, key: str) -> int:
    with urllib.request.urlopen(gateway.url + "/internal/stats", timeout=5) as response:
        stats = json.load(response)
    return int(stats["functions"][key]["readyInstances"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cold_starts(gateway: Gateway, name: str, runs: int) -> list[float]:
    headers, body = gateway.call(f"/function/{name}")
    pid = json.loads(body)["pid"]
    values = []
    for _ in range(runs):
        os.kill(pid, signal.SIGTERM)
        give_up = time.monotonic() + IDLE_TIMEOUT_SECONDS
        while ready_instances(gateway, f"default/{name}") > 0 or _alive(pid):
            if time.monotonic() > give_up:
                raise RuntimeError(f"instance {pid} did not go away")
            time.sleep(0.02)
        time.sleep(0.2)
        began = time.perf_counter()
        headers, body = gateway.call(f"/function/{name}")
        values.append((time.perf_counter() - began) * 1000)
        if headers.get("x-cold-start") != "true":
            raise RuntimeError(f"expected a cold start, got {headers}")
        pid = json.loads(body)["pid"]
    return values


def bench_local(scratch: Path, runs: int) -> dict[str, Any]:
    folder = scratch / "functions"
    folder.mkdir()
    state = scratch / "state"
    figures: dict[str, Any] = {}
    deps = local_dependency_cache(state, sys.executable)
    functions = {"none": (None, "")} | {label: (SETS[label], IMPORTS[label]) for label in SETS}
    for label, (requirements, imports) in functions.items():
        inline = {"main.py": HANDLER.format(imports=imports)}
        if requirements is not None:
            inline["requirements.txt"] = requirements
            install_ms, _ = timed(lambda: deps.ensure(label, "python3.11", requirements))  # noqa: B023
            again_ms, _ = timed(lambda: deps.ensure(label, "python3.11", requirements))  # noqa: B023
            figures[f"install_{label}"] = {"cold_ms": install_ms, "cached_ms": again_ms}
        document = {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": f"deps-{label}"},
            "spec": {
                "runtime": "python3.11",
                "code": {"inline": inline},
                "scaling": {"scaleToZeroAfterSeconds": 0},
            },
        }
        (folder / f"deps-{label}.json").write_text(json.dumps(document))
    gateway = Gateway(folder, state, env=dict(os.environ), pin=False)
    try:
        for label in functions:
            values = cold_starts(gateway, f"deps-{label}", runs)
            figures[f"cold_start_{label}"] = {
                "n": len(values),
                "p50_ms": statistics.median(values),
                "min_ms": min(values),
                "max_ms": max(values),
            }
    finally:
        gateway.stop()
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the runtime image as an OCI archive")
    parser.add_argument(
        "--find-links", type=Path, default=Path.home() / ".cache" / "kubefaas" / "wheels"
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.update({"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(args.find_links.resolve())})
    base = oci.read_archive(args.base) if args.base else stand_in_base()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="kubefaas-bench-") as scratch:
        builds = bench_builds(base, Path(scratch))
        local = bench_local(Path(scratch), args.runs)
    print(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
          f"load {info['loadavg_1m_at_start']}")  # fmt: skip
    print(f"base: {args.base or 'stand-in'}\n")
    print("| set | build cold ms | cached ms | code edit ms | deps layer gz / tar KiB | "
          "code layer gz B |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for label, row in builds.items():
        print(
            f"| {label} ({SETS[label].strip()}) | {row['build_cold_ms']:.0f} | "
            f"{row['build_cached_ms']:.0f} | {row['build_code_edit_ms']:.0f} | "
            f"{row['deps_layer_gzip_bytes'] / 1024:.0f} / {row['deps_layer_tar_bytes'] / 1024:.0f}"
            f" | {row['code_layer_gzip_bytes']} |"
        )
    print(f"\nbase layers: {next(iter(builds.values()))['base_layers_bytes'] / 2**20:.1f} MiB\n")
    print("| local | install cold ms | install cached ms | cold start p50 ms | min | max |")
    print("|---|---|---|---|---|---|")
    for label in ("none", *SETS):
        install = local.get(f"install_{label}", {})
        cold = local[f"cold_start_{label}"]
        print(
            f"| {label} | {install.get('cold_ms', 0):.0f} | {install.get('cached_ms', 0):.1f} | "
            f"{cold['p50_ms']:.0f} | {cold['min_ms']:.0f} | {cold['max_ms']:.0f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "builds": builds, "local": local}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
