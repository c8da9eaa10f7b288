"""kubefaas_runtime: the small HTTP server inside every function pod.

It imports the user's ``handler(event, context)`` once (the init phase), serves each
invocation through it under a deadline, reports readiness on ``/healthz`` only after
init, and drains gracefully on SIGTERM (docs/architecture.md, "Runtime contract"). It
ships alone in every function image, so it depends on the standard library, uvicorn (with
uvloop and httptools) and ``kubefaas.wire`` (the port and header names, a module that
imports nothing) only; an import-linter contract keeps the rest of kubefaas out.

Modules, by role:

- ``config``: the launch contract, ``Settings.from_env()``.
- ``context``: the ``Context`` object handlers receive.
- ``events``: pure mapping of requests to events and results to responses.
- ``handler``: loading the user's handler and describing init errors.
- ``execute``: running one call under its deadline, in a thread or on the loop.
- ``app``: the raw ASGI app (health, invocations, drain state).
- ``server``: uvicorn plus the SIGTERM drain; ``run(settings)``.
- ``logs``: JSON log lines tagged with the invocation id.

Start it with ``python -m kubefaas_runtime``.
"""

from kubefaas_runtime.app import RuntimeApp
from kubefaas_runtime.config import EventFormat, Settings
from kubefaas_runtime.context import Context

__all__ = ["Context", "EventFormat", "RuntimeApp", "Settings"]
