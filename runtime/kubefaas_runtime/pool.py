"""A generic pool instance, specialised into one function on its first call (docs/warm-pool.md).

Started with ``KUBEFAAS_POOL=1``, the runtime has no function yet: it binds, answers
``GET /healthz`` 200 ``{"status":"pool"}`` and waits. ``POST /_kubefaas/specialize`` with
``{"env": {NAME: value}, "files": {"relative/path.py": "source"}}`` makes it that function,
once: the files are written under ``$TMPDIR/kubefaas-code`` (read-only afterwards), ``env``
is added to the process environment (the function's launch variables and its own ``env``,
exactly what its Deployment's pod would get), and the handler is imported as a normal
start would (``app.RuntimeApp.initialize``). The answer comes when the import is done: 200
``{"status":"ok","initMs":...}``, 200 ``{"status":"init-failed","error":...}``, or 400 for a
body that is not such a document. From then on every request goes to the function, except
that path. A specialised instance never serves another function: a second specialisation
for a different function (namespace, name or version) gets 409; the same one again gets the
first outcome (a gateway retrying after a lost answer).

No credential is needed or held: the pod runs with no service-account token, and the
function's code arrives in the request (who may send it is the network policy's business,
docs/warm-pool.md).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from kubefaas_runtime.app import Receive, RuntimeApp, Scope, Send
from kubefaas_runtime.config import ConfigError, Settings

SPECIALIZE_PATH = "/_kubefaas/specialize"
CODE_SUBDIR = "kubefaas-code"
MAX_SPECIALIZE_BYTES = 8 * 1024 * 1024
_IDENTITY = ("KUBEFAAS_FUNCTION_NAMESPACE", "KUBEFAAS_FUNCTION_NAME", "KUBEFAAS_FUNCTION_VERSION")
# Set by the pool instance itself, never by the caller.
_RESERVED = frozenset({"KUBEFAAS_CODE_DIR", "KUBEFAAS_POOL", "PORT", "HOST", "TMPDIR"})


class SpecializeError(ValueError):
    """The specialisation document is unusable; the message says what was wrong."""


def _json(status: int, document: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(document).encode()
    return (
        status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
        ],
        body,
    )


def parse_document(raw: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(env, files) of a specialisation body, validated."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise SpecializeError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SpecializeError("body must be a JSON object with 'env' and 'files'")
    env, files = doc.get("env"), doc.get("files")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise SpecializeError("'env' must be an object of string values")
    if not isinstance(files, dict) or not files:
        raise SpecializeError("'files' must be a non-empty object of path -> source text")
    for name in _IDENTITY:
        if not env.get(name, "").strip():
            raise SpecializeError(f"'env' must set {name}")
    reserved = sorted(_RESERVED & env.keys())
    if reserved:
        raise SpecializeError(f"'env' must not set {', '.join(reserved)}")
    for path, source in files.items():
        pure = PurePosixPath(path) if isinstance(path, str) else None
        if pure is None or pure.is_absolute() or ".." in pure.parts or not pure.parts:
            raise SpecializeError(f"file name {path!r} must be a relative path inside the code")
        if not isinstance(source, str):
            raise SpecializeError(f"file {path!r} must be text")
    return env, files


class PoolApp:
    """ASGI app of a pool instance: waits for one specialisation, then is that function."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: RuntimeApp | None = None
        self._identity: tuple[str, ...] | None = None
        self._outcome: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None
        self._lock = asyncio.Lock()
        self._draining = False

    # --- what server.RuntimeServer drives --------------------------------------------

    async def initialize(self) -> None:
        """Nothing to import until specialised."""

    def begin_drain(self) -> None:
        self._draining = True
        if self._app is not None:
            self._app.begin_drain()

    @property
    def inflight(self) -> int:
        return self._app.inflight if self._app is not None else 0

    @property
    def abandoned(self) -> int:
        return self._app.abandoned if self._app is not None else 0

    async def wait_idle(self, *, seconds: float, stop: Callable[[], bool] = lambda: False) -> int:
        if self._app is None:
            return 0
        return await self._app.wait_idle(seconds=seconds, stop=stop)

    def close(self) -> None:
        if self._app is not None:
            self._app.close()

    # --- ASGI --------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == SPECIALIZE_PATH:
            await _respond(send, await self._specialize(scope, receive))
            return
        app = self._app
        if app is not None:
            await app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            status = 503 if self._draining else 200
            await _respond(send, _json(status, {"status": "draining" if status == 503 else "pool"}))
            return
        await _respond(send, _json(503, {"error": "this pool instance has no function yet"}))

    async def _specialize(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if scope["method"] != "POST":
            return _json(405, {"error": f"{SPECIALIZE_PATH} takes POST"})
        raw = await _read(receive)
        if raw is None:
            return _json(413, {"error": f"body over {MAX_SPECIALIZE_BYTES} bytes"})
        try:
            env, files = parse_document(raw)
        except SpecializeError as exc:
            return _json(400, {"error": str(exc)})
        identity = tuple(env[name].strip() for name in _IDENTITY)
        async with self._lock:
            if self._identity is not None:
                if identity != self._identity:
                    return _json(
                        409,
                        {"error": "this instance already serves " + "/".join(self._identity)},
                    )
                assert self._outcome is not None
                return self._outcome
            self._identity = identity
            self._outcome = await self._become(env, files)
            return self._outcome

    async def _become(
        self, env: dict[str, str], files: dict[str, str]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        code_dir = Path(self.settings.tmp_dir, CODE_SUBDIR)
        await asyncio.to_thread(_write_code, code_dir, files)
        os.environ.update(env)
        try:
            settings = Settings.from_env(
                {**os.environ, "KUBEFAAS_CODE_DIR": str(code_dir), "TMPDIR": self.settings.tmp_dir}
            )
        except ConfigError as exc:
            self._identity = None  # nothing of the function ran: the pool pod stays generic
            return _json(400, {"error": f"invalid configuration: {exc}"})
        app = RuntimeApp(settings)
        await app.initialize()
        self._app = app
        if self._draining:
            app.begin_drain()
        if app.init_error is not None:
            document: dict[str, Any] = {
                "status": "init-failed",
                "error": {
                    "errorType": app.init_error.error_type,
                    "errorMessage": app.init_error.message,
                },
            }
        else:
            document = {"status": "ok"}
        document["initMs"] = round((app.init_seconds or 0.0) * 1000, 1)
        return _json(200, document)


def _write_code(code_dir: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        target = code_dir.joinpath(*PurePosixPath(name).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
        target.chmod(0o444)


async def _read(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_SPECIALIZE_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, response: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
    status, headers, body = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
