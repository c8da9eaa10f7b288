"""The runtime ships alone in every function image: it must not pull in the platform."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUNTIME_SOURCE = Path(__file__).resolve().parents[2] / "runtime"

# What a function image does not contain (import-linter checks the source statically;
# this checks what an actual start imports, indirect imports included).
NOT_IN_THE_IMAGE = [
    "kubefaas",
    "kubefaas_gateway",
    "kubefaas_operator",
    "pydantic",
    "fastapi",
    "aiohttp",
]


def test_starting_the_runtime_imports_nothing_outside_stdlib_and_uvicorn() -> None:
    probe = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(RUNTIME_SOURCE)!r})\n"
        "import kubefaas_runtime.__main__, kubefaas_runtime.server\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = set(json.loads(output))
    assert "uvicorn" in loaded
    assert loaded.isdisjoint(NOT_IN_THE_IMAGE), sorted(loaded.intersection(NOT_IN_THE_IMAGE))
