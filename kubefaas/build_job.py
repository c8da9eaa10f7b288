"""`python -m kubefaas.build_job`: the builder the operator's build Job runs.

See docs/packaging.md, "On a cluster: the build Job". It runs in the runtime image (which
has pip), as the restricted pod's non-root user, with a read-only root and an `emptyDir`
work folder, and needs only the standard library:

1. copy the function's code from the mounted ConfigMap (the kubelet's `..data` links
   resolved), and check it is the code the operator asked for (`KUBEFAAS_BUILD_CODE_DIGEST`);
2. the dependencies layer: found in the target repository under the tag
   `deps-<requirements key>` (a code-only change reuses it without running pip), or
   installed with pip (`PIP_INDEX_URL`, `KUBEFAAS_BUILD_PIP_ARGS`) and pushed under that tag;
3. the code layer, then the image = base runtime image + dependencies + code (base layers
   mounted registry-side from the base's repository, never moved through the pod);
4. push it as `KUBEFAAS_BUILD_TARGET` and write the result as one JSON line to the
   termination message (`/dev/termination-log`), which the operator reads from the pod's
   status: `{"image": "REGISTRY/NAME@sha256:...", ...}`, or `{"error": "..."}` with the
   last lines of pip's output. Exit status 0 or 1 alike.

Environment (set by the operator, `kubefaas_operator.build_jobs`): see `BuildSettings`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubefaas import naming, oci, registry
from kubefaas.build import IMAGE_ABI, image_dependency_cache
from kubefaas.deps import REQUIREMENTS_FILE, InstallFailed, requirements_key

TERMINATION_LOG = "/dev/termination-log"
# The kubelet keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_MAX = 4000
DEPS_TAG_PREFIX = "deps-"

ENV_CODE_DIR = "KUBEFAAS_BUILD_CODE_DIR"
ENV_CODE_DIGEST = "KUBEFAAS_BUILD_CODE_DIGEST"
ENV_WORK_DIR = "KUBEFAAS_BUILD_WORK_DIR"
ENV_BASE = "KUBEFAAS_BUILD_BASE"
ENV_TARGET = "KUBEFAAS_BUILD_TARGET"
ENV_RUNTIME = "KUBEFAAS_BUILD_RUNTIME"
ENV_PIP_ARGS = "KUBEFAAS_BUILD_PIP_ARGS"
ENV_PLAIN_HTTP = "KUBEFAAS_BUILD_PLAIN_HTTP"
ENV_DOCKER_CONFIG = "KUBEFAAS_BUILD_DOCKER_CONFIG"
ENV_TERMINATION_LOG = "KUBEFAAS_BUILD_TERMINATION_LOG"


# --- keys shared with the operator ----------------------------------------------------------


def code_digest(files: Mapping[str, bytes]) -> str:
    """The hash of a function's files (path -> content), as the operator and builder see them."""
    digest = hashlib.sha256()
    for path in sorted(files):
        data = files[path]
        digest.update(f"{path}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def deps_key(runtime: str, requirements: str) -> str:
    """The dependencies layer's key: the requirements alone (and the image's ABI)."""
    return requirements_key(runtime, requirements, abi=IMAGE_ABI)


def build_key(*, runtime: str, base: str, target: str, files: Mapping[str, bytes]) -> str:
    """What a built image is for: an unchanged key is never rebuilt."""
    payload = {"runtime": runtime, "base": base, "target": target, "code": code_digest(files)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- settings -------------------------------------------------------------------------------


class BuildError(RuntimeError):
    """The build cannot go on; the message is what the Function's `Built` condition says."""


@dataclass(frozen=True)
class BuildSettings:
    code_dir: Path
    work_dir: Path
    base: str
    target: str
    runtime: str
    code_digest: str | None = None
    pip_args: tuple[str, ...] = ()
    plain_http: bool = False
    docker_config: Path | None = None
    termination_log: Path = Path(TERMINATION_LOG)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> BuildSettings:
        missing = [n for n in (ENV_CODE_DIR, ENV_BASE, ENV_TARGET) if not environ.get(n)]
        if missing:
            raise BuildError(f"the builder needs {', '.join(missing)} in its environment")
        config = environ.get(ENV_DOCKER_CONFIG, "").strip()
        return cls(
            code_dir=Path(environ[ENV_CODE_DIR]),
            work_dir=Path(environ.get(ENV_WORK_DIR) or "/tmp/kubefaas-build"),
            base=environ[ENV_BASE].strip(),
            target=environ[ENV_TARGET].strip(),
            runtime=environ.get(ENV_RUNTIME, "").strip() or "python3.11",
            code_digest=environ.get(ENV_CODE_DIGEST, "").strip() or None,
            pip_args=tuple(shlex.split(environ.get(ENV_PIP_ARGS, ""))),
            plain_http=environ.get(ENV_PLAIN_HTTP, "").strip().lower() in ("1", "true", "yes"),
            docker_config=Path(config) if config else None,
            termination_log=Path(environ.get(ENV_TERMINATION_LOG) or TERMINATION_LOG),
        )


# --- the build ------------------------------------------------------------------------------


def copy_code(source: Path, destination: Path) -> dict[str, bytes]:
    """Copy a mounted code folder (the kubelet's `..data` entries skipped, its links
    followed) to `destination`; return its files (path -> content)."""
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(source, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".."))
        for name in sorted(names):
            if name.startswith(".."):
                continue
            path = Path(root) / name
            relative = path.relative_to(source).as_posix()
            data = path.read_bytes()
            files[relative] = data
            out = destination / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    return files


@dataclass(frozen=True)
class Result:
    image: str
    digest: str
    deps_layer: str | None
    code_layer: str
    deps_reused: bool

    def message(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "digest": self.digest,
            "depsLayer": self.deps_layer,
            "codeLayer": self.code_layer,
            "depsReused": self.deps_reused,
        }


def _dependencies(
    client: registry.Registry, name: str, settings: BuildSettings, code: Path
) -> tuple[dict[str, Any], str, bool] | None:
    """(layer descriptor, diff_id, reused) of the dependencies, present in `name`."""
    requirements = code / REQUIREMENTS_FILE
    if not requirements.is_file():
        return None
    text = requirements.read_text(encoding="utf-8")
    key = deps_key(settings.runtime, text)
    tag = f"{DEPS_TAG_PREFIX}{key}"
    found = client.manifest(name, tag)
    if found is not None:
        _, manifest = found
        config = json.loads(client.blob(name, manifest["config"]["digest"]))
        layer = manifest["layers"][0]
        if client.has_blob(name, layer["digest"]):
            return dict(layer), str(config["rootfs"]["diff_ids"][0]), True
    cache = image_dependency_cache(settings.work_dir / "cache", extra_pip_args=settings.pip_args)
    installed = cache.ensure(settings.target, settings.runtime, text)
    layer = oci.layer_from_folder(
        installed.path, oci.DEPS_DIR, f"kubefaas build: {REQUIREMENTS_FILE} {key}"
    )
    client.upload(name, layer.blob)
    # A one-layer image under `deps-<key>` records the layer for the next build.
    config_blob = oci.Blob(
        oci.MEDIA_CONFIG,
        oci._json(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            }
        ),
    )
    client.upload(name, config_blob)
    marker = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.blob.descriptor()],
    }
    client.put_manifest(name, tag, oci._json(marker), oci.MEDIA_MANIFEST)
    return layer.blob.descriptor(), layer.diff_id, False


def build(settings: BuildSettings) -> Result:
    """Build and push the image; BuildError or InstallFailed if it cannot be."""
    work = settings.work_dir
    code = work / "code"
    shutil.rmtree(code, ignore_errors=True)
    files = copy_code(settings.code_dir, code)
    if settings.code_digest is not None and code_digest(files) != settings.code_digest:
        raise BuildError(
            "the code changed while the build was starting (the ConfigMap was updated); "
            "the operator starts a new build"
        )
    auths = registry.load_docker_config(settings.docker_config)
    target = registry.Reference.parse(settings.target)
    base_ref = registry.Reference.parse(settings.base)
    client = registry.connect(target.host, plain_http=settings.plain_http, auths=auths)
    base_client = (
        client
        if base_ref.host == target.host
        else registry.connect(base_ref.host, plain_http=settings.plain_http, auths=auths)
    )
    found = base_client.manifest(base_ref.name, base_ref.selector)
    if found is None:
        raise BuildError(f"the base image {settings.base} is not in its registry")
    _, base_manifest = found
    base_config = json.loads(base_client.blob(base_ref.name, base_manifest["config"]["digest"]))
    for descriptor in base_manifest["layers"]:
        if base_client is client:
            client.copy_blob(descriptor, source=base_ref.name, target=target.name)
        elif not client.has_blob(target.name, descriptor["digest"]):
            data = base_client.blob(base_ref.name, descriptor["digest"])
            client.upload(target.name, oci.Blob(descriptor["mediaType"], data))

    layers: list[dict[str, Any]] = [dict(d) for d in base_manifest["layers"]]
    diff_ids: list[str] = []
    env: dict[str, str] = {}
    deps = _dependencies(client, target.name, settings, code)
    if deps is not None:
        layers.append(deps[0])
        diff_ids.append(deps[1])
        env["KUBEFAAS_DEPS_DIR"] = oci.DEPS_DIR
    code_layer = oci.layer_from_folder(code, naming.CODE_MOUNT_PATH, "kubefaas build: code")
    client.upload(target.name, code_layer.blob)
    layers.append(code_layer.blob.descriptor())
    diff_ids.append(code_layer.diff_id)

    # The base config with the added layers' diff_ids, history and environment.
    added = [oci.Layer(oci.Blob(oci.MEDIA_LAYER_GZIP, b""), d) for d in diff_ids]
    config = oci.extend(oci.Image(base_config, ()), added, env=env).config
    config_blob = oci.Blob(oci.MEDIA_CONFIG, oci._json(config))
    client.upload(target.name, config_blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": layers,
    }
    digest = client.put_manifest(
        target.name, target.tag or "latest", oci._json(manifest), oci.MEDIA_MANIFEST
    )
    return Result(
        image=target.with_digest(digest),
        digest=digest,
        deps_layer=str(deps[0]["digest"]) if deps is not None else None,
        code_layer=code_layer.blob.digest,
        deps_reused=deps[2] if deps is not None else False,
    )


def _report(path: Path, document: Mapping[str, Any]) -> None:
    text = json.dumps(document, sort_keys=True)
    if len(text) > TERMINATION_MESSAGE_MAX and "error" in document:
        error = str(document["error"])
        text = json.dumps({"error": "..." + error[-(TERMINATION_MESSAGE_MAX - 100) :]})
    print(text, flush=True)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"kubefaas build: cannot write the termination message {path}: {exc}", flush=True)


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    log = Path(environ.get(ENV_TERMINATION_LOG) or TERMINATION_LOG)
    try:
        settings = BuildSettings.from_environment(environ)
        log = settings.termination_log
        result = build(settings)
    except InstallFailed as exc:
        _report(log, {"error": f"pip could not install {REQUIREMENTS_FILE}: {exc.pip_output}"})
        return 1
    except (BuildError, registry.RegistryError, oci.PushError, OSError, ValueError) as exc:
        _report(log, {"error": str(exc)})
        return 1
    _report(log, result.message())
    return 0


if __name__ == "__main__":
    sys.exit(main())
