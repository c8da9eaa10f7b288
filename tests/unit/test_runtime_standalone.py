"""The runtime ships alone in every function image: it must not pull in the platform.

Of the `kubefaas` core it may import `kubefaas.wire` alone (the port and header names both
sides of the hop spell), which the project wheel in the image carries; these checks run a
real interpreter and look at what it loaded, indirect imports included (import-linter
checks the source statically).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What a function image does not contain, or must not load on every start.
NOT_IN_THE_IMAGE = [
    "kubefaas_gateway",
    "kubefaas_operator",
    "kubefaas_cluster",
    "pydantic",
    "yaml",
    "fastapi",
    "aiohttp",
]


def _loaded_by(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after `statement` and did not hold before."""
    probe = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT / "runtime",
    ).stdout
    loaded: list[str] = json.loads(output)
    return loaded


def test_starting_the_runtime_imports_only_stdlib_uvicorn_and_the_wire_contract() -> None:
    loaded = _loaded_by("import kubefaas_runtime.__main__, kubefaas_runtime.server")
    top_level = {name.split(".")[0] for name in loaded}
    assert "uvicorn" in top_level
    assert top_level.isdisjoint(NOT_IN_THE_IMAGE), sorted(top_level.intersection(NOT_IN_THE_IMAGE))
    core = sorted(name for name in loaded if name.split(".")[0] == "kubefaas")
    assert core == ["kubefaas", "kubefaas.wire"]


def test_the_wire_contract_imports_only_the_standard_library() -> None:
    loaded = _loaded_by("import kubefaas.wire")
    assert "kubefaas.wire" in loaded
    outside = sorted(
        name
        for name in loaded
        if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "kubefaas"
    )
    assert outside == []
    assert sorted(name for name in loaded if name.split(".")[0] == "kubefaas") == [
        "kubefaas",
        "kubefaas.wire",
    ]


def test_the_core_package_itself_imports_nothing() -> None:
    # `import kubefaas.wire` runs kubefaas/__init__.py first: an import there would be
    # loaded by every function instance.
    tree = ast.parse((ROOT / "kubefaas" / "__init__.py").read_text(encoding="utf-8"))
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports == []
