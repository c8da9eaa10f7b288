"""uvicorn's `Config` and `Server` without its command line: a cold start saves ~100 ms.

``import uvicorn`` runs the package's ``__init__``, which imports ``uvicorn.main`` and with
it ``click``, the command-line toolkit; on the pods' CPU share that was the largest single
import of a runtime start (``python -X importtime``; docs/architecture.md, "Cold start").
The runtime never uses uvicorn's command line, so when no one has imported uvicorn yet the
package is registered without running its ``__init__`` and only ``uvicorn.config`` and
``uvicorn.server`` are imported. Anything else that later reads an attribute of the
``uvicorn`` package (``uvicorn.run``, ``uvicorn.__version__``) completes it on first use by
running the real ``__init__`` then, so the shortcut is invisible to other code.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _register_hollow_package() -> None:
    if "uvicorn" in sys.modules:
        return
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.loader is None:  # not installed: let the import below say so
        return
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    completing = False

    def complete(name: str) -> Any:
        nonlocal completing
        if completing:
            raise AttributeError(f"module 'uvicorn' has no attribute {name!r}")
        completing = True
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = complete
    sys.modules["uvicorn"] = package


_register_hollow_package()

import uvicorn.config  # noqa: E402  (after the package is registered)
import uvicorn.server  # noqa: E402

Config = uvicorn.config.Config
Server = uvicorn.server.Server

# uvicorn's own modules do `from uvicorn import Config` (lifespan, protocols): give the
# package what its __init__ would have bound, so only `main` and `run` complete it.
_package = sys.modules["uvicorn"]
if "__getattr__" in _package.__dict__:
    import uvicorn._version

    _package.__dict__.update(Config=Config, Server=Server, __version__=uvicorn._version.__version__)

__all__ = ["Config", "Server"]
