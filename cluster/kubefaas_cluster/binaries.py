"""Build and cache the Kubernetes binaries and helm from Go modules; install Debian tools.

Why build: these machines reach the Go module proxy and Debian's archive but no release
downloads. ``go install k8s.io/kubernetes/cmd/...@v1.34.4`` is refused because that module
maps its staging modules to local folders with ``replace``, which Go ignores for a
dependency. A small wrapper module restores the mapping with the published ``v0.x.y``
staging versions and builds all six commands in ONE ``go build`` so that the shared
packages compile once.

Cache layout (``$KUBEFAAS_CACHE``, default ``~/.cache/kubefaas``)::

    k8s-<version>/
        src/go.mod, go.sum      generated wrapper module (rewritten on every build)
        bin/<command>           kube-apiserver ... kubectl, and helm
        kubernetes.stamp        JSON, written LAST after a complete Kubernetes build
        helm-<version>.stamp    JSON, written last after helm is built
        logs/build.log          output of every go command, appended

A stamp holds ``{"version": str, "commands": [str], "go": str, "seconds": float,
"finished": str}``. Binaries are only trusted when the stamp exists and names the pinned
version, so a build interrupted half way is redone, never reused. The Go module and build
caches stay where Go keeps them (``go env GOMODCACHE GOCACHE``); keep them between CI runs
to make a rebuild a matter of linking.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kubefaas_cluster import versions

CACHE_ENV = "KUBEFAAS_CACHE"
WRAPPER_MODULE = "kubefaas.local/k8s-build"
# Used only when the Kubernetes go.mod carries no godebug line of its own.
DEFAULT_GODEBUG = "default=go1.24"


class BuildError(RuntimeError):
    """A go or apt command failed; the message names the log to read."""


class MissingBinary(RuntimeError):
    """A binary the cluster needs is not built yet."""


def cache_root() -> Path:
    """The per-user cache that survives between runs (``$KUBEFAAS_CACHE`` overrides it)."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path.home() / ".cache" / "kubefaas"


@dataclass(frozen=True)
class BinaryCache:
    """Where one Kubernetes version's binaries, stamps and build logs live."""

    root: Path

    @classmethod
    def default(cls, *, version: str = versions.KUBERNETES_VERSION) -> BinaryCache:
        return cls(root=cache_root() / f"k8s-{version}")

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def src_dir(self) -> Path:
        return self.root / "src"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "build.log"

    @property
    def kubernetes_stamp(self) -> Path:
        return self.root / "kubernetes.stamp"

    def helm_stamp(self, version: str) -> Path:
        return self.root / f"helm-{version}.stamp"

    def binary(self, name: str) -> Path:
        """The path of a built binary; raises `MissingBinary` with the command that builds it."""
        path = self.bin_dir / name
        stamp = self.helm_stamp(versions.HELM_VERSION) if name == "helm" else self.kubernetes_stamp
        if not (path.is_file() and stamp.is_file()):
            raise MissingBinary(
                f"{path} is not built yet; run `make k8s-binaries` "
                f"(python -m kubefaas_cluster build)"
            )
        return path


def staging_version(kubernetes_version: str) -> str:
    """Staging modules are tagged ``v0.<minor>.<patch>`` for Kubernetes ``v1.<minor>.<patch>``."""
    match = re.fullmatch(r"v1\.(\d+\.\d+.*)", kubernetes_version)
    if match is None:
        raise ValueError(f"kubernetes version {kubernetes_version!r} is not of the form v1.X.Y")
    return f"v0.{match.group(1)}"


@dataclass(frozen=True)
class UpstreamGoMod:
    """What the wrapper module copies from k8s.io/kubernetes's own go.mod."""

    go_directive: str
    godebug: str
    staging_modules: tuple[str, ...]


def parse_upstream_go_mod(text: str) -> UpstreamGoMod:
    """Read the go line, the godebug line and the staging ``replace`` targets.

    The staging list changes between releases, so it is read rather than hard-coded.
    """
    go_match = re.search(r"^go\s+(\S+)\s*$", text, re.MULTILINE)
    godebug_match = re.search(r"^godebug\s+(\S+)\s*$", text, re.MULTILINE)
    staging = re.findall(r"^\s*(\S+)\s+=>\s+\./staging/\S+\s*$", text, re.MULTILINE)
    if go_match is None or not staging:
        raise ValueError("the k8s.io/kubernetes go.mod has no go line or no staging replaces")
    return UpstreamGoMod(
        go_directive=go_match.group(1),
        godebug=godebug_match.group(1) if godebug_match else DEFAULT_GODEBUG,
        staging_modules=tuple(staging),
    )


def render_wrapper_go_mod(*, upstream: UpstreamGoMod, kubernetes_version: str) -> str:
    """The wrapper go.mod: require the module, replace its staging modules, keep the tools.

    The ``tool`` directive keeps the requirement through ``go mod tidy``; the godebug line
    matters because the main module, not the dependency, sets the runtime defaults.
    """
    staging = staging_version(kubernetes_version)
    lines = [
        f"module {WRAPPER_MODULE}",
        "",
        f"go {upstream.go_directive}",
        "",
        f"godebug {upstream.godebug}",
        "",
        f"require {versions.KUBERNETES_MODULE} {kubernetes_version}",
        "",
        "replace (",
        *(f"\t{module} => {module} {staging}" for module in upstream.staging_modules),
        ")",
        "",
        "tool (",
        *(f"\t{versions.KUBERNETES_MODULE}/cmd/{cmd}" for cmd in versions.KUBERNETES_COMMANDS),
        ")",
        "",
    ]
    return "\n".join(lines)


def version_ldflags(*, kubernetes_version: str, build_date: str) -> str:
    """``-X`` flags so every binary reports the real version instead of v0.0.0."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\..*", kubernetes_version)
    if match is None:
        raise ValueError(f"kubernetes version {kubernetes_version!r} is not of the form vX.Y.Z")
    values = {
        "gitVersion": kubernetes_version,
        "gitMajor": match.group(1),
        "gitMinor": match.group(2),
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags.extend(f"-X {package}.{key}={value}" for key, value in values.items())
    return " ".join(flags)


def build_date() -> str:
    """RFC 3339 build date; ``SOURCE_DATE_EPOCH`` makes it reproducible."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _go_env(*, module_mode: bool) -> dict[str, str]:
    env = dict(os.environ, CGO_ENABLED="0")
    flags = [f for f in env.get("GOFLAGS", "").split() if not f.startswith("-mod=")]
    if module_mode:
        flags.append("-mod=mod")
    env["GOFLAGS"] = " ".join(flags)
    return env


def _run_logged(args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> str:
    """Run a build command with low priority, appending its output to the build log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"\n=== {datetime.now(UTC).isoformat()} (cwd {cwd}) {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run(
            ["nice", "-n", "10", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        handle.write(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise BuildError(
            f"{' '.join(args[:3])} failed (exit {result.returncode}); see {log}\n{tail}"
        )
    return result.stdout


def _go_version() -> str:
    return subprocess.run(
        ["go", "version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _stamp_matches(stamp: Path, *, version: str, binaries: list[Path]) -> bool:
    if not (stamp.is_file() and all(path.is_file() for path in binaries)):
        return False
    try:
        data = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("version") == version


def _write_stamp(stamp: Path, *, version: str, commands: list[str], seconds: float) -> None:
    data = {
        "version": version,
        "commands": commands,
        "go": _go_version(),
        "seconds": round(seconds, 1),
        "finished": datetime.now(UTC).isoformat(),
    }
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(stamp)


def _require_go() -> None:
    if shutil.which("go") is None:
        raise BuildError("the `go` command is not on PATH; install Go 1.24 or newer")


def ensure_kubernetes(cache: BinaryCache, *, version: str = versions.KUBERNETES_VERSION) -> bool:
    """Build the six Kubernetes commands unless a complete build is cached; True if built."""
    commands = list(versions.KUBERNETES_COMMANDS)
    targets = [cache.bin_dir / cmd for cmd in commands]
    if _stamp_matches(cache.kubernetes_stamp, version=version, binaries=targets):
        return False
    _require_go()
    started = time.monotonic()
    cache.kubernetes_stamp.unlink(missing_ok=True)
    cache.src_dir.mkdir(parents=True, exist_ok=True)
    log = cache.log_file

    info = json.loads(
        _run_logged(
            ["go", "mod", "download", "-json", f"{versions.KUBERNETES_MODULE}@{version}"],
            cwd=cache.root,
            env=_go_env(module_mode=False),
            log=log,
        )
    )
    upstream = parse_upstream_go_mod(Path(info["GoMod"]).read_text(encoding="utf-8"))
    (cache.src_dir / "go.mod").write_text(
        render_wrapper_go_mod(upstream=upstream, kubernetes_version=version), encoding="utf-8"
    )
    env = _go_env(module_mode=True)
    _run_logged(["go", "mod", "tidy"], cwd=cache.src_dir, env=env, log=log)

    staging_out = cache.root / "bin.partial"
    shutil.rmtree(staging_out, ignore_errors=True)
    staging_out.mkdir(parents=True)
    ldflags = version_ldflags(kubernetes_version=version, build_date=build_date())
    packages = [f"{versions.KUBERNETES_MODULE}/cmd/{cmd}" for cmd in commands]
    _run_logged(
        ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", f"{staging_out}/", *packages],
        cwd=cache.src_dir,
        env=env,
        log=log,
    )
    cache.bin_dir.mkdir(parents=True, exist_ok=True)
    for cmd in commands:
        (staging_out / cmd).replace(cache.bin_dir / cmd)
    staging_out.rmdir()
    _write_stamp(
        cache.kubernetes_stamp,
        version=version,
        commands=commands,
        seconds=time.monotonic() - started,
    )
    return True


def ensure_helm(cache: BinaryCache, *, version: str = versions.HELM_VERSION) -> bool:
    """Build helm into the same ``bin/`` unless it is cached; True if built.

    helm's go.mod has no local replaces, so a plain ``go install pkg@version`` works.
    """
    target = cache.bin_dir / "helm"
    stamp = cache.helm_stamp(version)
    if _stamp_matches(stamp, version=version, binaries=[target]):
        return False
    _require_go()
    started = time.monotonic()
    staging_out = cache.root / "helm.partial"
    shutil.rmtree(staging_out, ignore_errors=True)
    staging_out.mkdir(parents=True)
    ldflags = " ".join(
        [
            "-s",
            "-w",
            f"-X helm.sh/helm/v3/internal/version.version={version}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
        ]
    )
    env = _go_env(module_mode=False)
    env["GOBIN"] = str(staging_out)
    _run_logged(
        ["go", "install", "-trimpath", "-ldflags", ldflags, f"{versions.HELM_PACKAGE}@{version}"],
        cwd=cache.root,
        env=env,
        log=cache.log_file,
    )
    cache.bin_dir.mkdir(parents=True, exist_ok=True)
    (staging_out / "helm").replace(target)
    staging_out.rmdir()
    _write_stamp(stamp, version=version, commands=["helm"], seconds=time.monotonic() - started)
    return True


def apt_install(packages: list[str]) -> None:
    """Install Debian packages without starting their services.

    A fresh CI machine may have no package lists, so a failed install is retried once after
    ``apt-get update``. Services are kept from starting because this package runs its own
    copies of etcd and containerd with their own configuration.
    """
    if os.geteuid() != 0:
        raise BuildError(f"installing {' '.join(packages)} needs root; install them and retry")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
        policy.chmod(0o755)
        created_policy = True
    try:
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        if subprocess.run(install, env=env, check=False).returncode == 0:
            return
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"apt-get could not install {' '.join(packages)}: {exc}") from exc
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)


def ensure_command(command: str, *, package: str) -> Path:
    """The path of a system command, installing its Debian package when it is missing."""
    found = shutil.which(command)
    if found is None:
        print(f"installing Debian package {package} for `{command}`", file=sys.stderr)
        apt_install([package])
        found = shutil.which(command)
    if found is None:
        raise BuildError(f"`{command}` is still missing after installing {package}")
    return Path(found)


def ensure_etcd() -> Path:
    """etcd from Debian (3.4.23 meets Kubernetes' documented 3.4.22 minimum)."""
    return ensure_command("etcd", package=versions.ETCD_DEBIAN_PACKAGE)


def build_all(cache: BinaryCache) -> None:
    """Everything ``make k8s-binaries`` promises: Kubernetes, helm and etcd."""
    ensure_etcd()
    for name, step in (("kubernetes", ensure_kubernetes), ("helm", ensure_helm)):
        started = time.monotonic()
        built = step(cache)
        took = time.monotonic() - started
        state = f"built in {took:.0f}s" if built else "cached"
        print(f"{name}: {state} in {cache.bin_dir} (log {cache.log_file})", file=sys.stderr)
