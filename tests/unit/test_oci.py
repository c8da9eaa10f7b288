"""Function images against the OCI image spec: media types, digests, diff_ids, layer order,
and deterministic layers (same inputs -> same digest), as a registry and containerd see them."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kubefaas import naming, oci
from kubefaas.build import build_image, empty_folder_layer, image_dependency_cache
from kubefaas.cli import main
from kubefaas.deps import InstallFailed
from tests.wheels import offline_index

HANDLER = "import tinytext\ndef handler(event, context):\n    return tinytext.shout('hi')\n"


@pytest.fixture
def pip_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in offline_index(tmp_path / "wheels").items():
        monkeypatch.setenv(name, value)


def base_image() -> oci.Image:
    layer = empty_folder_layer("usr/local/lib/kubefaas-runtime")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin", "KUBEFAAS_DEPS_DIR=stale"], "User": "65532"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created_by": "base"}],
    }
    return oci.Image(config, (layer,))


def function_folder(root: Path, *, source: str = HANDLER, requirements: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(source)
    (root / "pkg").mkdir(exist_ok=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "__pycache__").mkdir(exist_ok=True)
    (root / "pkg" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    if requirements:
        (root / "requirements.txt").write_text("tinytext==1.0\n")
    return root


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_layout(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def layer_names(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return [m.name for m in tar.getmembers()]


def test_the_archive_is_a_valid_oci_layout_with_verified_digests(
    tmp_path: Path, pip_env: None
) -> None:
    built = build_image(
        function_folder(tmp_path / "fn"), base=base_image(), cache=image_dependency_cache(tmp_path)
    )
    archive = tmp_path / "fn.tar"
    digest = oci.write_archive(built.image, archive, tag="1")
    files = read_layout(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["mediaType"] == oci.MEDIA_INDEX
    (entry,) = index["manifests"]
    assert entry["mediaType"] == oci.MEDIA_MANIFEST
    assert entry["digest"] == digest
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "1"}
    # Every blob is stored under its own digest.
    blobs = {
        f"sha256:{name.rsplit('/', 1)[1]}": data for name, data in files.items() if "blobs/" in name
    }
    assert all(sha(data) == name for name, data in blobs.items())
    manifest: dict[str, Any] = json.loads(blobs[digest])
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == oci.MEDIA_MANIFEST
    assert manifest["config"]["mediaType"] == oci.MEDIA_CONFIG
    config = json.loads(blobs[manifest["config"]["digest"]])
    assert manifest["config"]["size"] == len(blobs[manifest["config"]["digest"]])
    layers = manifest["layers"]
    assert [item["mediaType"] for item in layers] == [oci.MEDIA_LAYER_GZIP] * 3
    assert all(item["size"] == len(blobs[item["digest"]]) for item in layers)
    # diff_ids are the digests of the uncompressed layers, in the same order.
    assert config["rootfs"]["diff_ids"] == [
        sha(gzip.decompress(blobs[item["digest"]])) for item in layers
    ]
    assert len(config["history"]) == 3
    # Order: the runtime, then the dependencies, then the code.
    base, deps, code = (layer_names(blobs[item["digest"]]) for item in layers)
    assert "usr/local/lib/kubefaas-runtime" in base
    assert f"{oci.DEPS_DIR.strip('/')}/tinytext/__init__.py" in deps
    prefix = naming.CODE_MOUNT_PATH.strip("/")
    assert {f"{prefix}/main.py", f"{prefix}/pkg/__init__.py", f"{prefix}/requirements.txt"} <= set(
        code
    )
    assert not any("__pycache__" in name for name in code)
    env = config["config"]["Env"]
    assert f"KUBEFAAS_DEPS_DIR={oci.DEPS_DIR}" in env
    assert "KUBEFAAS_DEPS_DIR=stale" not in env
    assert config["config"]["User"] == "65532"  # the base's config is kept
    assert oci.read_archive(archive).digest == digest


def test_the_same_inputs_give_the_same_digest(tmp_path: Path, pip_env: None) -> None:
    cache = image_dependency_cache(tmp_path / "cache")
    first = build_image(function_folder(tmp_path / "a"), base=base_image(), cache=cache)
    assert first.deps_installed
    # Another folder, other mtimes, a fresh cache: nothing the image depends on changed.
    folder = function_folder(tmp_path / "b")
    os.utime(folder / "main.py", (1, 1))
    second = build_image(
        folder, base=base_image(), cache=image_dependency_cache(tmp_path / "other")
    )
    assert second.image.digest == first.image.digest
    again = build_image(folder, base=base_image(), cache=cache)
    assert not again.deps_installed  # cached by the requirements' hash
    assert again.image.digest == first.image.digest  # the kept layer is the same blob


def test_editing_only_the_code_changes_only_the_code_layer(tmp_path: Path, pip_env: None) -> None:
    cache = image_dependency_cache(tmp_path / "cache")
    before = build_image(function_folder(tmp_path / "fn"), base=base_image(), cache=cache)
    after = build_image(
        function_folder(tmp_path / "fn", source=HANDLER + "# edited\n"),
        base=base_image(),
        cache=cache,
    )
    assert after.deps is not None
    assert before.deps is not None
    assert after.deps.blob.digest == before.deps.blob.digest
    assert after.code.blob.digest != before.code.blob.digest
    assert after.image.digest != before.image.digest


def test_a_folder_without_requirements_has_no_dependencies_layer(tmp_path: Path) -> None:
    built = build_image(
        function_folder(tmp_path / "fn", requirements=False),
        base=base_image(),
        cache=image_dependency_cache(tmp_path),
    )
    assert built.deps is None
    assert len(built.image.layers) == 2


def test_a_bad_requirement_fails_the_build_naming_it(tmp_path: Path, pip_env: None) -> None:
    folder = function_folder(tmp_path / "fn")
    (folder / "requirements.txt").write_text("no-such-package-kf==1\n")
    with pytest.raises(InstallFailed, match="no-such-package-kf==1"):
        build_image(folder, base=base_image(), cache=image_dependency_cache(tmp_path))


def test_kubefaas_build_writes_an_archive(
    tmp_path: Path, pip_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.tar"
    oci.write_archive(base_image(), base)
    out = tmp_path / "fn.tar"
    code = main(
        [
            "build",
            str(function_folder(tmp_path / "fn")),
            "--base",
            str(base),
            "-o",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"image digest: {oci.read_archive(out).digest}" in printed
    assert "dependencies layer: sha256:" in printed


def test_kubefaas_build_refuses_a_push_reference_without_a_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", str(tmp_path), "--base", "x", "--push", "fn:1"]) == 2
    assert "expected REGISTRY/NAME[:TAG]" in capsys.readouterr().err
