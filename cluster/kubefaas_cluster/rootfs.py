"""The base layer every kubefaas image shares: Debian bookworm with Python 3.11, via mmdebstrap.

No registry can be reached, so the equivalent of ``python:3.11-slim-bookworm`` is made from
Debian's archive: ``mmdebstrap --variant=essential`` plus ``python3`` (3.11 in bookworm,
matching the ``python3.11`` runtime name) and ``python-is-python3`` (the runtime image's
entrypoint calls ``python``). Merged /usr comes from mmdebstrap's own hook instead of the
``usrmerge`` package, which would pull in Perl. Manuals, info pages and translations are
never unpacked; copyright files are kept.

The tarball mmdebstrap writes is then filtered into the layer: device nodes are dropped (the
container runtime mounts its own /dev), apt and dpkg leftovers and install logs are removed,
and /etc/passwd and /etc/group gain the ``nonroot`` user 65532 that every kubefaas pod runs
as. File times are kept as Debian unpacked them: the standard library's bytecode records
its sources' mtimes, and changing them would make every interpreter start recompile.

Cache (``$KUBEFAAS_CACHE/images/base-<key>/``): ``rootfs.tar`` (the layer) and
``directories.json`` (``{path: [mode, uid, gid]}`` of every directory in it, so upper
layers can repeat a directory's metadata instead of changing it). The key hashes the
recipe below, so changing a package list or a mirror builds a new base and nothing else does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kubefaas_cluster.binaries import BuildError, ensure_command

# Bump when the filtering below changes, so cached bases are rebuilt.
FORMAT_VERSION = 1
NONROOT_UID = 65532
NONROOT_NAME = "nonroot"
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
MMDEBSTRAP_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that decides the base layer's content."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = ("python3", "python-is-python3")
    sources: tuple[str, ...] = (
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    )
    # dpkg --path-exclude/--path-include, in order (the last match wins).
    dpkg_paths: tuple[str, ...] = (
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
    )
    # The interpreter the runtime name promises; the build fails if the base lacks it.
    python: str = "usr/bin/python3.11"

    @property
    def key(self) -> str:
        document = json.dumps([FORMAT_VERSION, self.__dict__], sort_keys=True).encode()
        return hashlib.sha256(document).hexdigest()[:16]


@dataclass(frozen=True)
class BaseLayer:
    """A built base layer and the metadata of its directories."""

    tar: Path
    directories: dict[str, tuple[int, int, int]]
    key: str


def _drop(name: str) -> bool:
    """Entries of the mmdebstrap tarball that do not belong in an image layer."""
    if name.startswith("dev/"):
        return True
    prefixes = ("var/cache/apt/", "var/lib/apt/lists/", "var/log/", "var/cache/ldconfig/")
    if name.startswith(prefixes) and not name.endswith("/"):
        return True
    return name.endswith("-old") and name.startswith(("var/lib/dpkg/", "var/cache/debconf/"))


def _with_nonroot(name: str, data: bytes) -> bytes:
    line = {
        "etc/passwd": f"{NONROOT_NAME}:x:{NONROOT_UID}:{NONROOT_UID}:{NONROOT_NAME}:/tmp:"
        "/usr/sbin/nologin\n",
        "etc/group": f"{NONROOT_NAME}:x:{NONROOT_UID}:\n",
    }[name]
    text = data.decode()
    if f":{NONROOT_UID}:" in text:
        return data
    return (text if text.endswith("\n") else text + "\n").encode() + line.encode()


def filter_rootfs(raw: Path, out: Path) -> dict[str, tuple[int, int, int]]:
    """Rewrite mmdebstrap's tarball `raw` as the layer `out`; return its directories."""
    directories: dict[str, tuple[int, int, int]] = {}
    with tarfile.open(raw) as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as layer:
        for member in source:
            name = member.name.removeprefix("./").rstrip("/")
            if not name or name == "." or _drop(name + ("/" if member.isdir() else "")):
                continue
            if member.isdev():
                continue
            member.name = name
            if member.islnk():
                member.linkname = member.linkname.removeprefix("./")
            if member.isdir():
                directories[name] = (member.mode, member.uid, member.gid)
            if member.isreg() and name in ("etc/passwd", "etc/group"):
                handle = source.extractfile(member)
                assert handle is not None
                data = _with_nonroot(name, handle.read())
                member.size = len(data)
                layer.addfile(member, io.BytesIO(data))
            elif member.isreg():
                layer.addfile(member, source.extractfile(member))
            else:
                layer.addfile(member)
    return directories


def _mmdebstrap(recipe: BaseRecipe, out: Path, *, log: Path) -> None:
    mmdebstrap = ensure_command("mmdebstrap", package="mmdebstrap")
    argv = [
        str(mmdebstrap),
        "--variant=essential",
        f"--include={','.join(recipe.packages)}",
        *(f"--dpkgopt={option}" for option in recipe.dpkg_paths),
    ]
    if MERGED_USR_HOOK.is_dir():
        argv.append(f"--hook-dir={MERGED_USR_HOOK}")
    argv += [recipe.suite, str(out), *recipe.sources]
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(argv)}\n")
        handle.flush()
        # mmdebstrap reads a sources.list from stdin when stdin is not a terminal.
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=MMDEBSTRAP_TIMEOUT_SECONDS,
        )
    if result.returncode != 0:
        raise BuildError(f"mmdebstrap failed (exit {result.returncode}); see {log}")


def ensure_base(cache_dir: Path, *, recipe: BaseRecipe | None = None) -> tuple[BaseLayer, bool]:
    """The cached base layer, built first if missing; the flag says whether it was built."""
    recipe = recipe or BaseRecipe()
    directory = cache_dir / f"base-{recipe.key}"
    tar, meta = directory / "rootfs.tar", directory / "directories.json"
    if tar.is_file() and meta.is_file():
        loaded = json.loads(meta.read_text(encoding="utf-8"))
        dirs = {name: (int(v[0]), int(v[1]), int(v[2])) for name, v in loaded.items()}
        return BaseLayer(tar=tar, directories=dirs, key=recipe.key), False
    if os.geteuid() != 0:
        raise BuildError("building the base image runs mmdebstrap as root: run it as root")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix="build-") as tmp:
        raw = Path(tmp) / "mmdebstrap.tar"
        _mmdebstrap(recipe, raw, log=directory / "mmdebstrap.log")
        partial = Path(tmp) / "rootfs.tar"
        dirs = filter_rootfs(raw, partial)
        with tarfile.open(partial) as check:
            names = set(check.getnames())
        if recipe.python not in names:
            raise BuildError(
                f"the base rootfs has no /{recipe.python}; packages: {recipe.packages}"
            )
        meta.write_text(json.dumps(dirs, sort_keys=True), encoding="utf-8")
        partial.replace(tar)
    # Other bases are from older recipes: nothing refers to them any more.
    for stale in cache_dir.glob("base-*"):
        if stale != directory:
            shutil.rmtree(stale, ignore_errors=True)
    return BaseLayer(tar=tar, directories=dirs, key=recipe.key), True
