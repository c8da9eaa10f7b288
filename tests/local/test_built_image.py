"""A built function image runs: its layers, unpacked as a container runtime does, serve the
handler through the real runtime, which finds the code at the code path and the
dependencies through the image config's KUBEFAAS_DEPS_DIR (docs/packaging.md)."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from kubefaas import naming, oci
from kubefaas.build import build_image, image_dependency_cache
from tests.loopback import free_port
from tests.unit.test_oci import base_image, function_folder
from tests.wheels import offline_index

pytestmark = pytest.mark.local

RUNTIME_SOURCE = Path(__file__).resolve().parents[2] / "runtime"
HANDLER = """\
import tinytext
from pkg import helper

def handler(event, context):
    return {"text": tinytext.shout(helper.name())}
"""


def unpack(image: oci.Image, root: Path) -> None:
    for layer in image.layers:
        data = layer.blob.data
        if layer.blob.media_type == oci.MEDIA_LAYER_GZIP:
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(root, filter="tar")


def test_the_unpacked_image_serves_with_its_dependencies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in offline_index(tmp_path / "wheels").items():
        monkeypatch.setenv(name, value)
    folder = function_folder(tmp_path / "fn", source=HANDLER)
    (folder / "pkg" / "helper.py").write_text("def name():\n    return 'from the image'\n")
    built = build_image(folder, base=base_image(), cache=image_dependency_cache(tmp_path))
    root = tmp_path / "rootfs"
    unpack(built.image, root)

    # The image's own Env, with paths moved under the unpacked root (no chroot here).
    image_env = dict(v.split("=", 1) for v in built.image.config["config"]["Env"])
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": str(RUNTIME_SOURCE),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "KUBEFAAS_CODE_DIR": str(root / naming.CODE_MOUNT_PATH.strip("/")),
        "KUBEFAAS_DEPS_DIR": str(root / image_env["KUBEFAAS_DEPS_DIR"].strip("/")),
        "KUBEFAAS_HANDLER": "main.handler",
        "TMPDIR": str(tmp_path),
    }
    log = tmp_path / "runtime.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "kubefaas_runtime"],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 15
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            while True:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "runtime not ready in 15 s"
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            answer = client.post("/", json={})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"text": "FROM THE IMAGE!"}
    finally:
        process.kill()
        process.wait(10)
