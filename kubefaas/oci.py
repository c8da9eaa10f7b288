"""OCI images of functions, assembled without Docker (docs/architecture.md, "Packaging").

A function image is the runtime image's layers, then a dependencies layer (the installed
requirements under `DEPS_DIR`), then a code layer (the function's folder under the code
path), with the runtime's config plus `KUBEFAAS_DEPS_DIR`. Layers are deterministic
gzip'd tars (sorted entries, mtime 0, owner root, modes normalised), so the same inputs
give the same digests: an unchanged dependency layer is the same blob, which a registry
already has and a kubelet already pulled.

`read_archive` reads a base image from an OCI image-layout tarball (what `kubefaas build`
writes, and what the platform's image build writes); `write_archive` writes one;
`push` uploads one through the OCI distribution API (blob uploads, then the manifest).
Only the standard library is used: the core package stays small.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
DEPS_DIR = "/opt/kubefaas/deps"
# Never in a layer: bytecode is rebuilt (or not written) at run time.
_SKIPPED = {"__pycache__", ".git"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes with their media type (a layer, a config, a manifest)."""

    media_type: str
    data: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
        }
        if self.annotations:
            found["annotations"] = dict(self.annotations)
        return found


@dataclass(frozen=True)
class Layer:
    """A layer blob and its diff_id (the digest of the uncompressed tar)."""

    blob: Blob
    diff_id: str
    created_by: str = ""


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _walk(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED)
        for name in sorted([*dirs, *files]):
            if name.endswith(".pyc"):
                continue
            yield Path(root) / name


def tar_folder(folder: Path, prefix: str) -> bytes:
    """A deterministic tar of `folder`'s contents at `prefix` (its parents included)."""
    prefix = prefix.strip("/")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        parts = prefix.split("/")
        for depth in range(1, len(parts) + 1):
            tar.addfile(_info("/".join(parts[:depth]), tarfile.DIRTYPE, 0o755))
        for path in sorted(_walk(folder), key=lambda p: p.relative_to(folder).as_posix()):
            name = f"{prefix}/{path.relative_to(folder).as_posix()}"
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                info = _info(name, tarfile.SYMTYPE, 0o777)
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISDIR(mode):
                tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
            elif stat.S_ISREG(mode):
                data = path.read_bytes()
                executable = mode & 0o111
                info = _info(name, tarfile.REGTYPE, 0o755 if executable else 0o644, len(data))
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def layer_from_folder(folder: Path, prefix: str, created_by: str) -> Layer:
    """A gzip'd layer of `folder` at `prefix`; the same files give the same digest."""
    raw = tar_folder(folder, prefix)
    compressed = gzip.compress(raw, compresslevel=6, mtime=0)
    return Layer(Blob(MEDIA_LAYER_GZIP, compressed), sha256(raw), created_by)


@dataclass(frozen=True)
class Image:
    """An image: its config document and layers, bottom first."""

    config: Mapping[str, Any]
    layers: tuple[Layer, ...]

    def config_blob(self) -> Blob:
        return Blob(MEDIA_CONFIG, _json(self.config))

    def manifest_blob(self) -> Blob:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": self.config_blob().descriptor(),
            "layers": [layer.blob.descriptor() for layer in self.layers],
        }
        return Blob(MEDIA_MANIFEST, _json(manifest))

    @property
    def digest(self) -> str:
        """The manifest digest: what `image@sha256:...` pins."""
        return self.manifest_blob().digest


def extend(base: Image, layers: Iterable[Layer], *, env: Mapping[str, str]) -> Image:
    """`base` plus `layers` on top, its config's Env updated with `env`."""
    added = tuple(layers)
    config = json.loads(json.dumps(base.config))
    runtime = config.setdefault("config", {})
    variables = [v for v in runtime.get("Env") or [] if v.split("=", 1)[0] not in env]
    runtime["Env"] = variables + [f"{k}={v}" for k, v in env.items()]
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), *(layer.diff_id for layer in added)]
    history = config.setdefault("history", [])
    history.extend({"created_by": layer.created_by or "kubefaas build"} for layer in added)
    return Image(config, (*base.layers, *added))


# --- OCI image-layout archives -------------------------------------------------------------


def read_archive(path: Path) -> Image:
    """The image of an OCI image-layout tarball (its first linux/amd64 or only manifest)."""
    with tarfile.open(path) as tar:

        def blob(digest: str) -> bytes:
            member = tar.extractfile(f"blobs/{digest.replace(':', '/')}")
            if member is None:
                raise ValueError(f"{path}: blob {digest} is missing")
            data = member.read()
            if sha256(data) != digest:
                raise ValueError(f"{path}: blob {digest} does not match its digest")
            return data

        index_file = tar.extractfile("index.json")
        if index_file is None:
            raise ValueError(f"{path}: not an OCI image layout (no index.json)")
        descriptor = _pick(json.loads(index_file.read())["manifests"], path)
        manifest = json.loads(blob(descriptor["digest"]))
        if manifest.get("mediaType") == MEDIA_INDEX or "manifests" in manifest:
            descriptor = _pick(manifest["manifests"], path)
            manifest = json.loads(blob(descriptor["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        layers = tuple(
            Layer(Blob(item["mediaType"], blob(item["digest"])), diff_id)
            for item, diff_id in zip(manifest["layers"], diff_ids, strict=True)
        )
    return Image(config, layers)


def _pick(manifests: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    for item in manifests:
        platform = item.get("platform") or {}
        if platform.get("os", "linux") == "linux" and platform.get("architecture", "amd64") in (
            "amd64",
        ):
            return item
    raise ValueError(f"{path}: no linux/amd64 image in the index")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))


def write_archive(image: Image, out: Path, *, tag: str | None = None) -> str:
    """Write `image` as an OCI image-layout tarball; return its manifest digest."""
    manifest = image.manifest_blob()
    annotations = {REF_ANNOTATION: tag} if tag else {}
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                **Blob(MEDIA_MANIFEST, manifest.data, annotations).descriptor(),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".tmp")
    with tarfile.open(staging, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "index.json", _json(index))
        tar.addfile(_info("blobs", tarfile.DIRTYPE, 0o755))
        tar.addfile(_info("blobs/sha256", tarfile.DIRTYPE, 0o755))
        written: set[str] = set()
        for blob in (manifest, image.config_blob(), *(layer.blob for layer in image.layers)):
            if blob.digest not in written:
                written.add(blob.digest)
                _add(tar, f"blobs/sha256/{blob.digest[7:]}", blob.data)
    staging.replace(out)
    return manifest.digest


# --- the OCI distribution API ----------------------------------------------------------------


class PushError(RuntimeError):
    """The registry refused an upload; the message has its status and answer."""


def split_reference(reference: str) -> tuple[str, str, str]:
    """`host[:port]/name[:tag]` -> (host, name, tag); the tag defaults to `latest`."""
    host, _, rest = reference.partition("/")
    if not rest or ("." not in host and ":" not in host and host != "localhost"):
        raise ValueError(f"{reference!r}: expected REGISTRY/NAME[:TAG], e.g. 127.0.0.1:5000/fn:1")
    name, _, tag = rest.partition(":")
    return host, name, tag or "latest"


def _request(
    method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
) -> Any:
    """The response (None for a HEAD answered 404); PushError for any other HTTP error."""
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return response
    except urllib.error.HTTPError as exc:
        if method == "HEAD" and exc.code == 404:
            return None
        raise PushError(f"{method} {url}: {exc.code} {exc.read()[:500]!r}") from exc


def push(image: Image, reference: str, *, scheme: str = "https") -> str:
    """Upload `image` as `reference` (REGISTRY/NAME[:TAG]); return the manifest digest.

    Blobs the registry already has (an unchanged runtime or dependencies layer) are not
    sent again. `scheme` is `http` for a registry on a loopback address.
    """
    host, name, tag = split_reference(reference)
    base = f"{scheme}://{host}/v2/{name}"
    for blob in (image.config_blob(), *(layer.blob for layer in image.layers)):
        if _request("HEAD", f"{base}/blobs/{blob.digest}") is not None:
            continue
        started = _request("POST", f"{base}/blobs/uploads/", b"")
        location = urllib.parse.urljoin(f"{scheme}://{host}", started.headers["Location"])
        joiner = "&" if "?" in location else "?"
        _request(
            "PUT",
            f"{location}{joiner}digest={urllib.parse.quote(blob.digest)}",
            blob.data,
            {"Content-Type": "application/octet-stream"},
        )
    manifest = image.manifest_blob()
    _request("PUT", f"{base}/manifests/{tag}", manifest.data, {"Content-Type": MEDIA_MANIFEST})
    return manifest.digest
