"""Build the kubefaas-runtime, -gateway and -operator images without Docker or a registry.

Each image is three uncompressed layers, written as an OCI archive for
``ctr images import`` (see `kubefaas_cluster.oci`):

1. base (shared by all three): Debian bookworm with Python 3.11, see `kubefaas_cluster.rootfs`;
2. deps (per image): the wheels of the image's extra (``runtime``, ``gateway``,
   ``operator``) under ``/usr/local/lib/python3.11/dist-packages``, installed by the host's
   pip for CPython 3.11 on manylinux x86_64, binary wheels only;
3. app (per image): the project wheel, its console scripts (``kubefaas``), and the
   directories the image's Dockerfile creates.

Entrypoint, command, environment, user, working directory, ports and labels are read from
``<component>/Dockerfile`` (`kubefaas_cluster.dockerfile`), so these images stay equivalent
to what ``docker build`` would make. Bytecode is compiled at build time in
``unchecked-hash`` mode: pods run with a read-only root filesystem, and hash-based pycs do
not depend on file times, which layers normalise.

Dependencies are pinned to the versions installed in the Python environment that runs the
builder (the project's virtualenv), so the images run the library versions the test tiers
ran, and the pins are part of the cache key.

Cache (``$KUBEFAAS_CACHE/images/``, default ``~/.cache/kubefaas/images/``)::

    base-<key>/rootfs.tar, directories.json     the base layer (rootfs.py)
    wheel-<key>/kubefaas-<version>-*.whl        project wheel; key = hash of its source files
    deps-<component>-<key>.tar                  key = base, requirements, pins, platform
    kubefaas-<component>-<key>.oci.tar          key = base, deps and wheel keys, Dockerfile
    kubefaas-<component>-<key>.json             {"reference", "digest", "size", "layers"}

An unchanged tree finds every archive by its key and builds nothing; a source change
rebuilds only the wheel and the small app layers. Older entries of the same kind are
deleted when a new one is written, so the cache does not grow with every edit.
"""

from __future__ import annotations

import configparser
import fcntl
import hashlib
import importlib.metadata
import json
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from kubefaas_cluster import images, oci, rootfs
from kubefaas_cluster.binaries import BuildError, cache_root
from kubefaas_cluster.dockerfile import Directory, ImageSpec, parse_dockerfile

# Bump when the layout of the layers or archives changes, so cached ones are rebuilt.
FORMAT_VERSION = 1
COMPONENTS: tuple[str, ...] = ("runtime", "gateway", "operator")
PYTHON_VERSION = "3.11"
# Debian bookworm's python3.11 in the base layer. pip evaluates dependency markers with the
# interpreter it runs on, whatever --python-version says, so a marker on the full version
# (redis: `async-timeout; python_full_version < "3.11.3"`) would follow the host's Python:
# `image_only_requirements` evaluates them for this version and names what pip would miss.
PYTHON_FULL_VERSION = "3.11.2"
PYTHON_ABI = "cp311"
# Bookworm's glibc is 2.36; pip also accepts the older manylinux tags below that.
PLATFORMS: tuple[str, ...] = ("manylinux_2_36_x86_64", "manylinux2014_x86_64")
SITE_PACKAGES = f"usr/local/lib/python{PYTHON_VERSION}/dist-packages"
SCRIPTS_DIR = "usr/local/bin"
SHEBANG = "#!/usr/bin/python3"
# What python:3.11-slim-bookworm (the Dockerfiles' base) sets before their own ENV lines.
BASE_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
PIP_TIMEOUT_SECONDS = 900

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BuiltImage:
    """One image archive, ready for ``ctr images import``."""

    component: str
    reference: str
    archive: Path
    digest: str
    size: int
    layer_sizes: tuple[int, ...]
    built: bool
    seconds: float


# -- pure helpers -----------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def extra_requirements(pyproject: Mapping[str, object], extra: str) -> list[str]:
    """The requirements of ``project[extra]``, with references to the project expanded."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    name = canonical_name(str(project["name"]))
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    if extra not in optional:
        raise BuildError(f"pyproject.toml has no optional dependency group {extra!r}")
    found: set[str] = set(project.get("dependencies", []))
    seen: set[str] = set()
    pending = [extra]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for requirement in optional.get(current, []):
            match = _REQUIREMENT_NAME.match(requirement)
            if match and canonical_name(match.group(1)) == name:
                pending.extend(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
            else:
                found.add(requirement)
    return sorted(found)


def environment_pins(
    requirements: Iterable[str], *, installed: Mapping[str, tuple[str, list[str]]]
) -> list[str]:
    """``name==version`` for every installed distribution the requirements may pull in.

    `installed` maps a canonical name to its version and requirement strings. The walk
    ignores markers and extras, so it may pin a few distributions pip will not install;
    pins of unused names are harmless, and a missing pin would let pip pick a version the
    tests never ran.
    """
    pins: dict[str, str] = {}
    pending = [r for r in requirements]
    while pending:
        match = _REQUIREMENT_NAME.match(pending.pop())
        if not match:
            continue
        name = canonical_name(match.group(1))
        if name in pins or name not in installed:
            continue
        version, requires = installed[name]
        pins[name] = version
        pending.extend(requires)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def image_only_requirements(
    requirements: Iterable[str],
    *,
    installed: Mapping[str, tuple[str, list[str]]],
    builder_python: str | None = None,
) -> list[str]:
    """Requirements the image's Python (PYTHON_FULL_VERSION) needs that the builder's
    (`builder_python`, default the running one) does not, found by walking the installed
    distributions' requirements with their markers evaluated for both; pip is given them
    explicitly (without the marker)."""
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement

    host: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    host["extra"] = ""
    if builder_python is not None:
        host["python_full_version"] = builder_python
    image = {
        **host,
        "python_version": PYTHON_VERSION,
        "python_full_version": PYTHON_FULL_VERSION,
        "implementation_name": "cpython",
        "implementation_version": PYTHON_FULL_VERSION,
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
    }
    added: dict[str, str] = {}
    walked: set[str] = set()
    pending = list(requirements)
    while pending:
        try:
            requirement = Requirement(pending.pop())
        except InvalidRequirement:
            continue
        name = canonical_name(requirement.name)
        if requirement.marker is not None:
            if not requirement.marker.evaluate(image):
                continue
            if not requirement.marker.evaluate(host):
                added[name] = f"{requirement.name}{requirement.specifier}"
        if name in walked or name not in installed:
            continue
        walked.add(name)
        pending.extend(installed[name][1])
    return [added[name] for name in sorted(added)]


def installed_distributions() -> dict[str, tuple[str, list[str]]]:
    """Canonical name -> (version, requirements) of the builder's Python environment."""
    found: dict[str, tuple[str, list[str]]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical_name(name), (dist.version, list(dist.requires or [])))
    return found


def console_script(target: str) -> str:
    """A console script for the entry point ``module:attr[.attr]`` run by the image's Python."""
    module, _, attribute = target.partition(":")
    attribute = attribute.split("[")[0].strip()
    first, _, rest = attribute.partition(".")
    call = f"{first}.{rest}()" if rest else f"{first}()"
    return (
        f"{SHEBANG}\n"
        "import sys\n"
        f"from {module.strip()} import {first}\n\n"
        "if __name__ == '__main__':\n"
        f"    sys.exit({call})\n"
    )


def image_config(spec: ImageSpec) -> oci.ImageConfig:
    """The OCI config of an image described by its Dockerfile's final stage."""
    return oci.ImageConfig(
        entrypoint=spec.entrypoint,
        cmd=spec.cmd,
        env=tuple(f"{k}={v}" for k, v in {**BASE_ENV, **spec.env}.items()),
        working_dir=spec.working_dir,
        user=spec.user,
        labels=spec.labels,
        exposed_ports=spec.exposed_ports,
    )


def _digest(*parts: object) -> str:
    document = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(document).hexdigest()[:16]


# -- the source tree --------------------------------------------------------------------


@dataclass(frozen=True)
class SourceTree:
    """The project checkout the images are built from."""

    root: Path

    @classmethod
    def default(cls) -> SourceTree:
        """The checkout this package was imported from (an editable install of cluster/)."""
        root = Path(__file__).resolve().parents[2]
        if not (root / "pyproject.toml").is_file() or not (root / "runtime").is_dir():
            raise BuildError(
                f"no kubefaas checkout around {Path(__file__).resolve()}: the image builder "
                "needs the source tree (install the tooling from a checkout: `make venv`, "
                "or `pip install -e ./cluster`)"
            )
        return cls(root=root)

    @property
    def pyproject(self) -> dict[str, object]:
        return tomllib.loads((self.root / "pyproject.toml").read_text(encoding="utf-8"))

    @property
    def version(self) -> str:
        return str(self._project["version"])

    @property
    def name(self) -> str:
        return canonical_name(str(self._project["name"]))

    @property
    def _project(self) -> dict[str, object]:
        project = self.pyproject["project"]
        assert isinstance(project, dict)
        return project

    def dockerfile(self, component: str) -> ImageSpec:
        return parse_dockerfile((self.root / component / "Dockerfile").read_text(encoding="utf-8"))

    def wheel_files(self) -> list[Path]:
        """Every file the project wheel is built from, relative to the root, sorted."""
        tool = self.pyproject.get("tool", {})
        assert isinstance(tool, dict)
        find = tool.get("setuptools", {}).get("packages", {}).get("find", {})
        wheres: list[str] = find.get("where", ["."])
        includes: list[str] = find.get("include", ["*"])
        files = [Path("pyproject.toml"), Path("README.md")]
        for where in wheres:
            for package in sorted((self.root / where).iterdir()):
                if not (package / "__init__.py").is_file():
                    continue
                if not any(fnmatch(package.name, pattern) for pattern in includes):
                    continue
                for path in sorted(package.rglob("*")):
                    if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                        files.append(path.relative_to(self.root))
        return sorted(set(files))

    def wheel_key(self) -> str:
        digest = hashlib.sha256()
        for relative in self.wheel_files():
            path = self.root / relative
            digest.update(f"{relative}\0{path.stat().st_mode & 0o111:o}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return _digest("wheel", digest.hexdigest())


# -- layers -----------------------------------------------------------------------------


def _directory_info(name: str, meta: tuple[int, int, int]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode, info.uid, info.gid = meta
    info.mtime = oci.FIXED_MTIME
    return info


def layer_from_tree(
    out: Path,
    tree: Path,
    *,
    base_directories: Mapping[str, tuple[int, int, int]],
    extra_directories: Sequence[Directory] = (),
) -> Path:
    """A layer with everything under `tree` (as if `tree` were ``/``) plus `extra_directories`.

    Files are root-owned 0644 (0755 if executable) with a fixed mtime, so the same tree
    gives the same layer. A directory the base already has keeps the base's mode and owner:
    a layer entry would otherwise change it (``/tmp`` must stay 1777).
    """
    entries: dict[str, tarfile.TarInfo] = {}

    def directory(name: str, meta: tuple[int, int, int] | None = None) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in entries:
                entries[parent] = _directory_info(
                    parent, base_directories.get(parent, (0o755, 0, 0))
                )
        entries[name] = _directory_info(name, meta or base_directories.get(name, (0o755, 0, 0)))

    sources: dict[str, Path] = {}
    for path in sorted(tree.rglob("*")):
        name = path.relative_to(tree).as_posix()
        if path.is_symlink():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = str(path.readlink())
            info.mode = 0o777
        elif path.is_dir():
            directory(name)
            continue
        else:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
            info.size = path.stat().st_size
            sources[name] = path
        info.mtime = oci.FIXED_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        entries[name] = info
    for extra in extra_directories:
        directory(extra.path.strip("/"), (extra.mode, extra.uid, extra.gid))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as layer:
        for name in sorted(entries):
            info = entries[name]
            if name in sources:
                with sources[name].open("rb") as handle:
                    layer.addfile(info, handle)
            else:
                layer.addfile(info)
    return out


def _python311() -> str:
    """An interpreter whose bytecode the image's Python 3.11 accepts (same magic number)."""
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which(f"python{PYTHON_VERSION}")
    if found is None:
        raise BuildError(f"compiling the images' bytecode needs python{PYTHON_VERSION} on PATH")
    return found


def _run(argv: Sequence[str], *, log: Path, what: str) -> None:
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(argv)}\n")
        handle.flush()
        result = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=PIP_TIMEOUT_SECONDS,
        )
    if result.returncode != 0:
        raise BuildError(f"{what} failed (exit {result.returncode}); see {log}")


def _pip_install(target: Path, *args: str, log: Path, what: str) -> None:
    """pip for the image's interpreter, not the host's: binary wheels for CPython 3.11."""
    platforms = [f"--platform={p}" for p in PLATFORMS]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--no-compile",
            f"--target={target}",
            "--only-binary=:all:",
            f"--python-version={PYTHON_FULL_VERSION}",
            "--implementation=cp",
            f"--abi={PYTHON_ABI}",
            *platforms,
            *args,
        ],
        log=log,
        what=what,
    )


def _finish_site(stage: Path) -> None:
    """Scripts with the image's shebang instead of pip's host one, then bytecode."""
    site = stage / SITE_PACKAGES
    shutil.rmtree(site / "bin", ignore_errors=True)
    scripts = stage / SCRIPTS_DIR
    for entry_points in sorted(site.glob("*.dist-info/entry_points.txt")):
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(entry_points, encoding="utf-8")
        if not parser.has_section("console_scripts"):
            continue
        scripts.mkdir(parents=True, exist_ok=True)
        for name, target in parser.items("console_scripts"):
            script = scripts / name
            script.write_text(console_script(target), encoding="utf-8")
            script.chmod(0o755)
    # Errors are ignored as pip ignores them: a file that does not compile is not imported.
    subprocess.run(
        [
            _python311(),
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(stage),
            "-p",
            "/",
            str(site),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=PIP_TIMEOUT_SECONDS,
    )


# -- the builder ------------------------------------------------------------------------


@dataclass
class ImageBuilder:
    """Builds (or finds in the cache) the three images of one source tree."""

    source: SourceTree
    cache_dir: Path
    log: Log = _stderr

    @classmethod
    def default(cls, *, log: Log = _stderr) -> ImageBuilder:
        return cls(source=SourceTree.default(), cache_dir=cache_root() / "images", log=log)

    @property
    def log_file(self) -> Path:
        return self.cache_dir / "build.log"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One builder at a time per cache: `up` and `make images` may overlap."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with (self.cache_dir / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def build(
        self, components: Sequence[str] = COMPONENTS, *, rebuild: bool = False
    ) -> list[BuiltImage]:
        """Every image in `components`, from the cache when its key is unchanged."""
        unknown = [c for c in components if c not in COMPONENTS]
        if unknown:
            raise BuildError(f"unknown image component(s) {unknown}; known: {list(COMPONENTS)}")
        with self._locked():
            if rebuild:
                for stale in self.cache_dir.glob("kubefaas-*"):
                    stale.unlink()
                for stale in self.cache_dir.glob("deps-*.tar"):
                    stale.unlink()
                for stale in [*self.cache_dir.glob("wheel-*"), *self.cache_dir.glob("base-*")]:
                    shutil.rmtree(stale)
            # Read once: every image of one build gets the same project wheel and pins.
            wheel_key = self.source.wheel_key()
            installed = installed_distributions()
            return [
                self._image(component, wheel_key=wheel_key, installed=installed)
                for component in components
            ]

    def _image(
        self, component: str, *, wheel_key: str, installed: Mapping[str, tuple[str, list[str]]]
    ) -> BuiltImage:
        started = time.monotonic()
        version = self.source.version
        reference = oci.normalize_reference(f"kubefaas-{component}:{version}")
        spec = self.source.dockerfile(component)
        recipe = rootfs.BaseRecipe()
        requirements = extra_requirements(self.source.pyproject, component)
        pins = environment_pins(requirements, installed=installed)
        requirements = [
            *requirements,
            *image_only_requirements(requirements, installed=installed),
        ]
        deps_key = _digest(
            "deps", recipe.key, requirements, pins, PLATFORMS, PYTHON_ABI, PYTHON_FULL_VERSION
        )
        key = _digest("image", reference, recipe.key, deps_key, wheel_key, spec.__dict__)
        archive = self.cache_dir / f"kubefaas-{component}-{key}.oci.tar"
        meta = archive.with_name(archive.name.removesuffix(".oci.tar") + ".json")
        if archive.is_file() and meta.is_file():
            recorded = json.loads(meta.read_text(encoding="utf-8"))
            return BuiltImage(
                component=component,
                reference=reference,
                archive=archive,
                digest=recorded["digest"],
                size=archive.stat().st_size,
                layer_sizes=tuple(recorded["layers"]),
                built=False,
                seconds=time.monotonic() - started,
            )
        base, built_base = rootfs.ensure_base(self.cache_dir, recipe=recipe)
        if built_base:
            self.log(f"images: built the base rootfs ({_mib(base.tar.stat().st_size)})")
        deps = self._deps_layer(
            component, key=deps_key, requirements=requirements, pins=pins, base=base
        )
        wheel = self._wheel(wheel_key)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix="app-") as tmp:
            stage = Path(tmp) / "tree"
            _pip_install(
                stage / SITE_PACKAGES,
                "--no-deps",
                str(wheel),
                log=self.log_file,
                what=f"installing {wheel.name}",
            )
            _finish_site(stage)
            extra = list(spec.directories)
            # WORKDIR creates a missing directory and leaves an existing one (/tmp) alone.
            if spec.working_dir.strip("/") not in base.directories:
                extra.append(Directory(path=spec.working_dir))
            app = layer_from_tree(
                Path(tmp) / "app.tar",
                stage,
                base_directories=base.directories,
                extra_directories=extra,
            )
            layers = [base.tar, deps, app]
            partial = archive.with_suffix(".partial")
            digest = oci.write_oci_archive(
                partial, reference=reference, layers=layers, config=image_config(spec)
            )
            sizes = [layer.stat().st_size for layer in layers]
        partial.replace(archive)
        meta.write_text(
            json.dumps({"reference": reference, "digest": digest, "layers": sizes}),
            encoding="utf-8",
        )
        self._prune(f"kubefaas-{component}-", keep=key)
        seconds = time.monotonic() - started
        self.log(f"images: built {reference} in {seconds:.1f}s ({_mib(archive.stat().st_size)})")
        return BuiltImage(
            component=component,
            reference=reference,
            archive=archive,
            digest=digest,
            size=archive.stat().st_size,
            layer_sizes=tuple(sizes),
            built=True,
            seconds=seconds,
        )

    def _wheel(self, key: str) -> Path:
        """The project wheel, built from a copy of exactly the files the key was made from."""
        directory = self.cache_dir / f"wheel-{key}"
        found = sorted(directory.glob("*.whl"))
        if found:
            return found[0]
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix="wheel-build-") as tmp:
            tree, out = Path(tmp) / "src", Path(tmp) / "out"
            for relative in self.source.wheel_files():
                (tree / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.source.root / relative, tree / relative)
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    f"--wheel-dir={out}",
                    str(tree),
                ],
                log=self.log_file,
                what="building the project wheel",
            )
            wheels = sorted(out.glob("*.whl"))
            if len(wheels) != 1:
                raise BuildError(f"expected one project wheel, pip wrote {wheels}")
            directory.mkdir(parents=True, exist_ok=True)
            target = directory / wheels[0].name
            shutil.move(wheels[0], target)
        self._prune("wheel-", keep=key)
        return target

    def _deps_layer(
        self,
        component: str,
        *,
        key: str,
        requirements: Sequence[str],
        pins: Sequence[str],
        base: rootfs.BaseLayer,
    ) -> Path:
        layer = self.cache_dir / f"deps-{component}-{key}.tar"
        if layer.is_file():
            return layer
        started = time.monotonic()
        project = self.source.name
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix="deps-") as tmp:
            stage = Path(tmp) / "tree"
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text(
                "".join(f"{pin}\n" for pin in pins if not pin.startswith(f"{project}==")),
                encoding="utf-8",
            )
            _pip_install(
                stage / SITE_PACKAGES,
                f"--constraint={constraints}",
                *requirements,
                log=self.log_file,
                what=f"installing the {component} dependencies",
            )
            _finish_site(stage)
            partial = layer.with_suffix(".partial")
            layer_from_tree(partial, stage, base_directories=base.directories)
        partial.replace(layer)
        self._prune(f"deps-{component}-", keep=key)
        self.log(
            f"images: {component} dependencies in {time.monotonic() - started:.1f}s "
            f"({_mib(layer.stat().st_size)})"
        )
        return layer

    def _prune(self, prefix: str, *, keep: str) -> None:
        for stale in self.cache_dir.glob(f"{prefix}*"):
            if keep in stale.name:
                continue
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


# -- containerd -------------------------------------------------------------------------


def image_digest_in_containerd(reference: str, *, ctr: Path, address: Path) -> str | None:
    """The manifest digest containerd holds under `reference`, if any."""
    result = subprocess.run(
        [
            str(ctr),
            f"--address={address}",
            f"--namespace={images.CONTAINERD_NAMESPACE}",
            "images",
            "ls",
            f"name=={reference}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        return None
    for line in result.stdout.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 3 and columns[0] == reference:
            return columns[2]
    return None


def import_images(built: Iterable[BuiltImage], *, ctr: Path, address: Path) -> list[str]:
    """Import every archive containerd does not already hold; return the references imported.

    An image whose tag already points at the same manifest digest is skipped: its content is
    in containerd's store, which survives restarts. Anything else is imported (idempotent),
    which also moves the tag to a rebuilt image.
    """
    imported = []
    for image in built:
        if image_digest_in_containerd(image.reference, ctr=ctr, address=address) == image.digest:
            continue
        images.import_archive(image.archive, ctr=ctr, address=address)
        imported.append(image.reference)
    return imported
