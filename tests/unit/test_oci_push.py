"""`kubefaas build --push` against a real registry: Debian's docker-registry (CNCF
distribution) started on 127.0.0.1 by the test. What a kubelet would pull is what was built:
the manifest by tag has the image's digest, every blob is served under its digest, and an
unchanged layer is not uploaded twice."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubefaas import oci
from kubefaas.api import parse_function
from kubefaas.build import build_image, image_dependency_cache
from kubefaas.cli import main
from tests.unit.test_oci import base_image, function_folder
from tests.wheels import offline_index

REGISTRY = shutil.which("docker-registry")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = tmp_path / "registry.log"
    assert REGISTRY is not None, "docker-registry is not installed: run `make system-deps`"
    with log.open("wb") as out:
        process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=out, stderr=out)
    try:
        give_up = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > give_up or process.poll() is not None:
                    raise RuntimeError(log.read_text()) from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(10)


def get(url: str, accept: str = "*/*") -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read(), dict(response.headers)


def test_a_pushed_image_is_served_by_digest_and_unchanged_layers_are_not_resent(
    registry: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in offline_index(tmp_path / "wheels").items():
        monkeypatch.setenv(name, value)
    host, log = registry
    cache = image_dependency_cache(tmp_path / "cache")
    built = build_image(function_folder(tmp_path / "fn"), base=base_image(), cache=cache)
    digest = oci.push(built.image, f"{host}/team/hello:1", scheme="http")
    assert digest == built.image.digest

    body, headers = get(f"http://{host}/v2/team/hello/manifests/1", oci.MEDIA_MANIFEST)
    assert headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    manifest = json.loads(body)
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob, _ = get(f"http://{host}/v2/team/hello/blobs/{descriptor['digest']}")
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == descriptor["digest"]
        assert len(blob) == descriptor["size"]
    # By digest, as a Deployment pins it.
    by_digest, _ = get(f"http://{host}/v2/team/hello/manifests/{digest}", oci.MEDIA_MANIFEST)
    assert by_digest == body

    uploads_before = log.read_text().count("POST /v2/team/hello/blobs/uploads/")
    edited = build_image(
        function_folder(tmp_path / "fn", source="def handler(e, c):\n    return 2\n"),
        base=base_image(),
        cache=cache,
    )
    oci.push(edited.image, f"{host}/team/hello:2", scheme="http")
    uploads = log.read_text().count("POST /v2/team/hello/blobs/uploads/") - uploads_before
    assert uploads == 2  # the new code layer and the new config; base and deps were there


def test_kubefaas_deploy_pushes_and_pins_the_function_by_digest(
    registry: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in offline_index(tmp_path / "wheels").items():
        monkeypatch.setenv(name, value)
    host, _ = registry
    base = tmp_path / "base.tar"
    oci.write_archive(base_image(), base)
    manifests = tmp_path / "manifests"
    function_folder(manifests / "src")
    (manifests / "fn.yaml").write_text(
        "apiVersion: kubefaas.io/v1alpha1\nkind: Function\nmetadata: {name: hello}\n"
        "spec: {runtime: python3.11, code: {path: ./src}, timeoutSeconds: 7}\n"
        "---\napiVersion: kubefaas.io/v1alpha1\nkind: Function\nmetadata: {name: flat}\n"
        "spec: {runtime: python3.11, code: {inline: {main.py: 'x = 1'}}}\n"
    )
    code = main(
        [
            "deploy",
            str(manifests),
            "--base",
            str(base),
            "--registry",
            host,
            "--cache-dir",
            str(tmp_path / "cache"),
            "--dry-run",
        ]
    )
    assert code == 0
    hello, flat = (parse_function(d) for d in yaml.safe_load_all(capsys.readouterr().out))
    assert hello.spec.code is None
    assert hello.spec.runtime is None
    assert hello.spec.timeout_seconds == 7
    assert hello.spec.image is not None
    repository, _, digest = hello.spec.image.partition("@")
    assert repository == f"{host}/default-hello"
    # What the kubelet pulls by that digest is the image that was built.
    name = repository.removeprefix(f"{host}/")
    body, headers = get(f"http://{host}/v2/{name}/manifests/{digest}", oci.MEDIA_MANIFEST)
    assert headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    # A function the cluster can run as it is stays as it is.
    assert flat.spec.code is not None
    assert flat.spec.code.inline == {"main.py": "x = 1"}
