"""A local function's code folder and its installed requirements (`kubefaas local`).

See docs/architecture.md, "Packaging". Code comes from inline files or a ConfigMap of the
manifest folder (written, as a tree, under `<state_dir>/local/code/<namespace>/<name>/`),
or from a folder next to the manifest (`spec.code.path`, used in place). A
`requirements.txt` at its top is installed once per distinct set by `kubefaas.deps`
into `<state_dir>/local/deps/<hash>/`, which every instance puts on `sys.path`.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from kubefaas.api import Function, valid_file_path
from kubefaas.deps import REQUIREMENTS_FILE, DependencyCache, InstallFailed
from kubefaas_gateway.errors import NoCapacity

ConfigMaps = Mapping[tuple[str, str], Mapping[str, str]]


def local_dependency_cache(state_dir: Path, python: str) -> DependencyCache:
    """The cache `kubefaas local` installs into; `python` is the runtime's interpreter."""
    abi = sys.implementation.cache_tag if python == sys.executable else Path(python).name
    return DependencyCache(state_dir.resolve() / "local" / "deps", python=python, abi=abi)


def write_code(
    fn: Function,
    *,
    code_root: Path,
    config_maps: ConfigMaps,
    code_folders: Mapping[str, Path],
) -> Path:
    """The folder the function's instances run from; NoCapacity says why there is none."""
    code = fn.spec.code
    if code is None:
        raise NoCapacity(
            f"function {fn.key} runs the image {fn.spec.image!r}; local mode runs "
            "only functions with spec.runtime and spec.code"
        )
    if code.path is not None:
        folder = code_folders.get(fn.key)
        if folder is None or not folder.is_dir():
            raise NoCapacity(f"function {fn.key}: spec.code.path {code.path!r} is not a folder")
        return folder
    files: Mapping[str, str]
    if code.inline is not None:
        files = code.inline
    else:
        assert code.config_map is not None  # the model allows exactly one
        found = config_maps.get((fn.namespace, code.config_map.name))
        if found is None:
            raise NoCapacity(
                f"function {fn.key}: ConfigMap {fn.namespace}/{code.config_map.name} "
                "(spec.code.configMap.name) is not in the manifest folder"
            )
        files = found
    target = code_root / fn.namespace / fn.name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name, source in files.items():
        if not valid_file_path(name):
            raise NoCapacity(f"function {fn.key}: {name!r} is not a valid code file path")
        # A source tree: nested paths make folders.
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(source, encoding="utf-8")
    return target


def requirements_of(code_dir: Path) -> str | None:
    path = code_dir / REQUIREMENTS_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


def ensure_dependencies(fn: Function, code_dir: Path, cache: DependencyCache) -> Path | None:
    """The installed requirements of the function (None when it has none); blocking."""
    requirements = requirements_of(code_dir)
    if requirements is None:
        return None
    try:
        return cache.ensure(fn.key, str(fn.spec.runtime), requirements).path
    except InstallFailed as exc:
        raise NoCapacity(str(exc)) from exc
