"""Local mode: serve a folder of Function manifests with no cluster.

`serve_local(directory, host=..., port=...)` loads the manifests (reporting each bad one
with its file, field and rule, and serving the good ones), prints the URL of every served
function, then runs the gateway on uvicorn (uvloop, httptools, no access log: the fastest
Python HTTP hop we measured, docs/architecture.md, "Measured facts") with the local backend until
SIGINT/SIGTERM.

`kubefaas local DIR` calls it; `python -m kubefaas_gateway.local_mode DIR --port N` does too.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from kubefaas.api import Function, InvalidFunction
from kubefaas.deps import REQUIREMENTS_FILE, DependencyCache, InstallFailed
from kubefaas.manifests import MANIFEST_SUFFIXES, LoadResult, load_directory, load_file
from kubefaas_gateway.app import create_app
from kubefaas_gateway.backends.local import LocalBackend
from kubefaas_gateway.backends.local_code import local_dependency_cache
from kubefaas_gateway.console.store import FolderStore
from kubefaas_gateway.local_autoscaler import autoscale_locally
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.secrets import LocalSecrets
from kubefaas_gateway.serve import serve
from kubefaas_gateway.settings import DEFAULT_HOST, DEFAULT_PORT, Settings
from kubefaas_gateway.triggers.runner import run_triggers

EXIT_OK = 0
EXIT_NOTHING_TO_SERVE = 1
EXIT_USAGE = 2

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def serve_local(
    directory: Path,
    *,
    host: str,
    port: int,
    state_dir: Path | None = None,
    redis_url: str | None = None,
    console: bool = False,
) -> int:
    """Serve every valid Function in `directory` on host:port until stopped; exit status.

    Async invocations are kept in `<state_dir>/async-queue.sqlite3`, or in Redis when
    `redis_url` (or `$KUBEFAAS_REDIS_URL`) is set.
    """
    overrides: dict[str, object] = {"host": host, "port": port}
    if state_dir is not None:
        overrides["state_dir"] = state_dir
    if redis_url is not None:
        overrides["redis_url"] = redis_url
    if console:
        overrides["console_enabled"] = True
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.secrets_dir is None and directory.is_dir():
        # Secrets for invoke auth beside the manifests (docs/security.md).
        settings = settings.model_copy(update={"secrets_dir": directory / "secrets"})
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)

    if not directory.exists():
        print(f"kubefaas local: {directory} does not exist", file=sys.stderr)
        return EXIT_USAGE
    result = load_directory(directory)
    functions, unservable, folders = _servable(result, directory)
    for error in [*result.errors, *unservable]:
        for problem in error.problems:
            print(f"error: {error.source}: {problem}", file=sys.stderr)
    if result.errors or unservable:
        bad = len(result.errors) + len(unservable)
        print(f"kubefaas local: {bad} bad manifest(s) skipped (see above)", file=sys.stderr)
    if not functions:
        print(f"kubefaas local: no Function to serve in {directory}", file=sys.stderr)
        return EXIT_NOTHING_TO_SERVE

    deps = local_dependency_cache(settings.state_dir, settings.runtime_command[0])
    for fn in functions:
        _install_requirements(fn, result, folders, deps)
    try:
        listener = socket.create_server((settings.host, settings.port), reuse_port=False)
    except OSError as exc:
        print(f"kubefaas local: cannot listen on {settings.host}:{settings.port}: {exc}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    bound_port = listener.getsockname()[1]
    base = f"http://{_url_host(settings.host)}:{bound_port}"
    print(f"kubefaas local: {len(functions)} function(s) from {directory}")
    for fn in functions:
        print(f"  {fn.key:<32} {base}{_invoke_path(fn, settings.default_namespace)}")
    print(f"kubefaas local: serving on {base} (Ctrl-C to stop)", flush=True)

    secrets = LocalSecrets(result.secrets, settings.secrets_dir)
    backend = LocalBackend(
        settings=settings,
        config_maps=result.config_maps,
        code_folders=folders,
        deps=deps,
        secrets=secrets,
    )
    registry = FunctionRegistry(functions)
    app = create_app(
        settings,
        backend,
        registry,
        background=(autoscale_locally(backend), run_triggers()),
        secrets=secrets,
    )
    backend.tmp_size_exceeded.register(app.state.gateway.metrics.registry)
    if settings.console_enabled:
        # The console deploys by writing into the served folder (docs/console.md).
        app.state.console_store = FolderStore(directory, registry)
        token = settings.admin_token
        login = (
            "log in with $KUBEFAAS_ADMIN_TOKEN"
            if token is not None and token.get_secret_value()
            else "set KUBEFAAS_ADMIN_TOKEN to log in"
        )
        print(f"kubefaas local: console on {base}/console ({login})")
    started = serve(app, settings, sockets=[listener])
    return EXIT_OK if started else EXIT_NOTHING_TO_SERVE


def _install_requirements(
    fn: Function, result: LoadResult, folders: dict[str, Path], deps: DependencyCache
) -> None:
    """Install the function's requirements.txt before serving (docs/architecture.md,
    "Packaging"); a failure is printed and the function answers with it, the rest serve."""
    code = fn.spec.code
    assert code is not None
    text: str | None
    if code.path is not None:
        path = folders[fn.key] / REQUIREMENTS_FILE
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    elif code.inline is not None:
        text = code.inline.get(REQUIREMENTS_FILE)
    else:
        assert code.config_map is not None
        text = result.config_maps[(fn.namespace, code.config_map.name)].get(REQUIREMENTS_FILE)
    if text is None:
        return
    if not deps.path_for(str(fn.spec.runtime), text).is_dir():
        print(f"kubefaas local: installing the requirements of {fn.key} ...", flush=True)
    try:
        installed = deps.ensure(fn.key, str(fn.spec.runtime), text)
    except InstallFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return
    if installed.fresh:
        print(f"kubefaas local: {fn.key}: requirements installed in {installed.path}", flush=True)


def _servable(
    result: LoadResult, directory: Path
) -> tuple[list[Function], list[InvalidFunction], dict[str, Path]]:
    """Valid Functions local mode can run, errors for those it cannot (no code here), and
    the folder of each `spec.code.path` (relative to its manifest's folder)."""
    sources = _sources(directory)
    keep: list[Function] = []
    problems: list[InvalidFunction] = []
    folders: dict[str, Path] = {}
    for fn in result.functions:
        source = sources.get(fn.key, fn.key)
        code = fn.spec.code
        if code is None:
            problems.append(
                InvalidFunction(
                    ["spec.image: local mode runs only functions with spec.runtime and spec.code"],
                    source,
                )
            )
            continue
        if code.path is not None:
            folder = (Path(source).parent / code.path).resolve()
            module = f"{fn.spec.handler_module}.py"
            if not (folder / module).is_file():
                problems.append(
                    InvalidFunction(
                        [
                            f"spec.code.path: {folder} has no {module!r} "
                            f"(spec.handler {fn.spec.handler!r})"
                            if folder.is_dir()
                            else f"spec.code.path: {code.path!r} is not a folder ({folder})"
                        ],
                        source,
                    )
                )
                continue
            folders[fn.key] = folder
        if code.config_map is not None:
            files = result.config_maps.get((fn.namespace, code.config_map.name))
            if files is None:
                problems.append(
                    InvalidFunction(
                        [
                            f"spec.code.configMap.name: ConfigMap {code.config_map.name!r} of "
                            f"namespace {fn.namespace!r} is not in {directory}"
                        ],
                        source,
                    )
                )
                continue
            module = f"{fn.spec.handler_module}.py"
            if module not in files:
                problems.append(
                    InvalidFunction(
                        [
                            f"spec.handler: module {module!r} is not a key of ConfigMap "
                            f"{code.config_map.name!r}"
                        ],
                        source,
                    )
                )
                continue
        keep.append(fn)
    return keep, problems, folders


def _sources(directory: Path) -> dict[str, str]:
    """Function key -> the file (and document) that defines it, for error messages."""
    paths = (
        [directory]
        if directory.is_file()
        else sorted(p for p in directory.iterdir() if p.suffix in MANIFEST_SUFFIXES)
    )
    sources: dict[str, str] = {}
    for path in paths:
        for fn in load_file(path).functions:
            sources.setdefault(fn.key, str(path))
    return sources


def _invoke_path(fn: Function, default_namespace: str) -> str:
    if fn.namespace == default_namespace:
        return f"/function/{fn.name}"
    return f"/function/{fn.namespace}/{fn.name}"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubefaas_gateway.local_mode",
        description="Serve the Function manifests of a folder locally (no cluster).",
    )
    parser.add_argument("directory", type=Path, help="folder (or file) of Function manifests")
    parser.add_argument("--host", help=f"default $KUBEFAAS_HOST or {DEFAULT_HOST}")
    parser.add_argument(
        "--port", type=int, help=f"default $KUBEFAAS_PORT or {DEFAULT_PORT}; 0 = any free port"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="default $KUBEFAAS_STATE_DIR or .state; holds the async queue's SQLite file",
    )
    parser.add_argument(
        "--redis-url", help="keep the async queue in Redis (default $KUBEFAAS_REDIS_URL)"
    )
    parser.add_argument("--console", action="store_true", help="serve the web console")
    args = parser.parse_args(argv)
    from_env = Settings()
    return serve_local(
        args.directory,
        host=args.host if args.host is not None else from_env.host,
        port=args.port if args.port is not None else from_env.port,
        state_dir=args.state_dir,
        redis_url=args.redis_url,
        console=args.console or from_env.console_enabled,
    )


if __name__ == "__main__":
    sys.exit(main())
