"""The runtime imports only the parts of uvicorn it serves with (a shorter cold start), and
code that uses the rest of uvicorn in the same process still finds all of it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import kubefaas_runtime.server
from kubefaas_runtime.app import RuntimeApp
from kubefaas_runtime.config import Settings
settings = Settings.from_env({"PORT": "0"})
# What serving loads: the loop, the HTTP protocol and the lifespan module.
kubefaas_runtime.server.build_server(settings, RuntimeApp(settings)).config.load()
print("click" in sys.modules)
import uvicorn
print(callable(uvicorn.run), uvicorn.Config is kubefaas_runtime.server.Config)
print(uvicorn.__version__ == __import__("importlib.metadata").metadata.version("uvicorn"))
"""


def test_the_runtime_skips_uvicorns_command_line_and_uvicorn_stays_whole() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["False", "True", "True", "True"]


def test_uvicorn_imported_first_is_used_as_it_is() -> None:
    probe = "import uvicorn, kubefaas_runtime.server as s; print(s.Server is uvicorn.Server)"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["True"]
