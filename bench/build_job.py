"""The build Job's builder (`python -m kubefaas.build_job`) as a process, against Debian's
docker-registry and a PEP 503 index on loopback: a first build (pip runs, the dependencies
layer is pushed), a code-only rebuild (the `deps-` tag is found, pip does not run), and an
unchanged rebuild. The runtime image is the base when given (`--base`, the OCI archive
`make images` writes), pushed to the registry first, so base layers are mounted, not sent.

Offline: the index serves the wheels of `--find-links` (default the e2e wheel cache,
`~/.cache/kubefaas/wheels`).

    python bench/build_job.py [--base RUNTIME.oci.tar] [--find-links DIR] [--runs 3]
                              [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host import machine

from kubefaas import build_job, oci
from tests.unit.test_build_job import PackageIndex, config_map_mount, start_registry
from tests.unit.test_oci import base_image

SETS = {"small": "Jinja2>=3.1\n", "heavy": "pandas\n"}
HANDLER = "import os\n\ndef handler(event, context):\n    return {'pid': os.getpid()}\n"


def index_of(find_links: Path, root: Path) -> PackageIndex:
    index = PackageIndex(root)
    for wheel in sorted(find_links.glob("*.whl")):
        project = root / "simple" / wheel.name.split("-")[0].lower().replace("_", "-")
        project.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, project / wheel.name)
    for project in (root / "simple").iterdir():
        links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in sorted(project.glob("*.whl")))
        (project / "index.html").write_text(links)
    return index


def build(
    scratch: Path, *, code: Path, base: str, target: str, index_url: str
) -> tuple[float, dict[str, Any]]:
    log = scratch / "termination-log"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(scratch / "home"),
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_INDEX_URL": index_url,
        build_job.ENV_CODE_DIR: str(code),
        build_job.ENV_WORK_DIR: str(scratch / "work"),
        build_job.ENV_BASE: base,
        build_job.ENV_TARGET: target,
        build_job.ENV_TERMINATION_LOG: str(log),
    }
    shutil.rmtree(scratch / "work", ignore_errors=True)  # a fresh pod: no local cache
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kubefaas.build_job"], env=env, capture_output=True, text=True
    )
    elapsed = (time.perf_counter() - began) * 1000
    result: dict[str, Any] = json.loads(log.read_text())
    if done.returncode != 0:
        raise RuntimeError(result.get("error") or done.stderr)
    return elapsed, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the runtime image as an OCI archive")
    parser.add_argument("--find-links", type=Path, default=Path.home() / ".cache/kubefaas/wheels")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sets", default="small", help="comma-separated: small,heavy")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-build-job-") as tmp:
        scratch = Path(tmp)
        (scratch / "registry").mkdir()
        host, registry = start_registry(scratch / "registry")
        index = index_of(args.find_links, scratch / "index").start()
        try:
            image = oci.read_archive(args.base) if args.base else base_image()
            digest = oci.push(image, f"{host}/kubefaas-runtime:bench", scheme="http")
            base = f"{host}/kubefaas-runtime@{digest}"
            figures: dict[str, Any] = {}
            for label in args.sets.split(","):
                rows: dict[str, list[float]] = {"first": [], "code_edit": [], "unchanged": []}
                for run in range(args.runs):
                    files = {"main.py": HANDLER, "requirements.txt": SETS[label]}
                    repo = f"{host}/bench-{label}-{run}"
                    code = config_map_mount(scratch / f"{label}-{run}-a", files)
                    ms, first = build(
                        scratch, code=code, base=base, target=f"{repo}:a", index_url=index.url
                    )
                    rows["first"].append(ms)
                    files["main.py"] = HANDLER + "# edit\n"
                    code = config_map_mount(scratch / f"{label}-{run}-b", files)
                    ms, edit = build(
                        scratch, code=code, base=base, target=f"{repo}:b", index_url=index.url
                    )
                    assert edit["depsReused"]
                    assert edit["depsLayer"] == first["depsLayer"]
                    rows["code_edit"].append(ms)
                    ms, _ = build(
                        scratch, code=code, base=base, target=f"{repo}:b", index_url=index.url
                    )
                    rows["unchanged"].append(ms)
                figures[label] = {f"{k}_ms_p50": statistics.median(v) for k, v in rows.items()}
                figures[label]["runs"] = args.runs
        finally:
            index.stop()
            registry.terminate()
            registry.wait(10)
    report = {
        "machine": machine(),
        "base": args.base.name if args.base else "stand-in",
        "base_layers_bytes": sum(len(layer.blob.data) for layer in image.layers),
        "sets": figures,
    }
    print("| set | first build ms | code edit ms | unchanged ms |")
    print("|---|---|---|---|")
    for label, row in figures.items():
        cells = (row[f"{k}_ms_p50"] for k in ("first", "code_edit", "unchanged"))
        print(f"| {label} | " + " | ".join(f"{ms:.0f}" for ms in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
