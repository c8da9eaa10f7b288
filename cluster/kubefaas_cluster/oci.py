"""Write OCI image archives with the standard library, for import with ``ctr images import``.

There is no registry and no Docker engine here, so images are written as OCI image-layout
tarballs. An archive holds::

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 one manifest descriptor, annotated with
                               io.containerd.image.name=<full reference> (the name containerd
                               imports it under) and org.opencontainers.image.ref.name=<tag>
    blobs/sha256/<hex>         the manifest, the config and each layer

Layers are uncompressed tars (media type ``...layer.v1.tar``), so a layer's digest is also
its ``diff_id``. Tar entries get a fixed mtime and owner so the same input gives the same
digest, which keeps re-imports at every cluster start cheap and idempotent.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
FIXED_MTIME = 0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One regular file of a layer built in memory."""

    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (what ``docker inspect`` shows as Config)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    working_dir: str = "/"
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()


def normalize_reference(reference: str) -> str:
    """The full name a pod's ``image:`` means: ``name:tag`` is ``docker.io/library/name:tag``.

    A reference without a tag is refused: ``:latest`` would make the kubelet try to pull.
    """
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        raise ValueError(f"image reference {reference!r} needs an explicit tag")
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}@{digest}" if digest else name


def _tar_info(name: str, *, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def layer_from_entries(out: Path, entries: Mapping[str, FileEntry]) -> Path:
    """A layer tar with the given files (parents created as 0755 directories)."""
    directories: set[str] = set()
    for path in entries:
        parts = path.strip("/").split("/")[:-1]
        directories.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted(directories):
            tar.addfile(_tar_info(directory, kind=tarfile.DIRTYPE, mode=0o755))
        for path in sorted(entries):
            entry = entries[path]
            info = _tar_info(path.strip("/"), kind=tarfile.REGTYPE, mode=entry.mode)
            info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data))
    return out


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


def _json_blob(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _tar_info(name, kind=tarfile.REGTYPE, mode=0o644, size=len(data))
    tar.addfile(info, io.BytesIO(data))


def write_oci_archive(
    out: Path,
    *,
    reference: str,
    layers: Iterable[Path],
    config: ImageConfig,
    architecture: str = "amd64",
) -> str:
    """Write an OCI archive of `layers` (uncompressed tars, bottom first); return its digest.

    `reference` is normalised with `normalize_reference`, so ``kubefaas-runtime:0.1.0`` is
    imported as ``docker.io/library/kubefaas-runtime:0.1.0``, the name pods resolve it to.
    """
    full_name = normalize_reference(reference)
    layer_info = [(path, *_sha256_file(path)) for path in layers]
    runtime: dict[str, object] = {"Env": list(config.env), "WorkingDir": config.working_dir}
    if config.entrypoint:
        runtime["Entrypoint"] = list(config.entrypoint)
    if config.cmd:
        runtime["Cmd"] = list(config.cmd)
    if config.user:
        runtime["User"] = config.user
    if config.labels:
        runtime["Labels"] = dict(config.labels)
    if config.exposed_ports:
        runtime["ExposedPorts"] = {port: {} for port in config.exposed_ports}
    config_blob = _json_blob(
        {
            "architecture": architecture,
            "os": "linux",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": [digest for _, digest, _ in layer_info]},
            "history": [{"created_by": f"kubefaas layer {path.name}"} for path, _, _ in layer_info],
        }
    )
    config_digest = f"sha256:{hashlib.sha256(config_blob).hexdigest()}"
    manifest_blob = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": _descriptor(MEDIA_CONFIG, config_digest, len(config_blob)),
            "layers": [_descriptor(MEDIA_LAYER, d, s) for _, d, s in layer_info],
        }
    )
    manifest_digest = f"sha256:{hashlib.sha256(manifest_blob).hexdigest()}"
    tag = full_name.rsplit(":", 1)[-1] if "@" not in full_name else ""
    annotations = {NAME_ANNOTATION: full_name}
    if tag:
        annotations[REF_ANNOTATION] = tag
    index_blob = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    **_descriptor(MEDIA_MANIFEST, manifest_digest, len(manifest_blob)),
                    "annotations": annotations,
                    "platform": {"architecture": architecture, "os": "linux"},
                }
            ],
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", _json_blob({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", index_blob)
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_tar_info(directory, kind=tarfile.DIRTYPE, mode=0o755))
        _add_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_blob)
        _add_bytes(tar, f"blobs/sha256/{config_digest[7:]}", config_blob)
        written: set[str] = set()
        for path, digest, _ in layer_info:
            if digest in written:
                continue
            written.add(digest)
            info = tar.gettarinfo(str(path), arcname=f"blobs/sha256/{digest[7:]}")
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    tmp.replace(out)
    return manifest_digest
