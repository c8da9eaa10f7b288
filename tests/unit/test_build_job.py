"""The build Job's builder (`python -m kubefaas.build_job`) as a real process, against a real
registry (Debian's docker-registry on 127.0.0.1) and a real PEP 503 package index served
from a temp folder over loopback: what it pushes is what a kubelet would pull."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubefaas import build_job, oci
from tests.unit.test_oci import base_image
from tests.unit.test_oci_push import REGISTRY, free_port, get
from tests.wheels import write_wheel

HANDLER = (
    "import tinytext\nfrom pkg.words import word\n"
    "def handler(event, context):\n    return tinytext.shout(word())\n"
)


def start_registry(
    folder: Path, *, htpasswd: Path | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    config = folder / "registry.yml"
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" if htpasswd else ""
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )
    assert REGISTRY is not None, "docker-registry is not installed: run `make system-deps`"
    with (folder / "registry.log").open("wb") as log:
        process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=log, stderr=log)
    give_up = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            break
        except urllib.error.HTTPError as exc:
            exc.close()
            break  # 401: up, and asking for credentials
        except OSError:
            if time.monotonic() > give_up or process.poll() is not None:
                process.kill()
                raise RuntimeError((folder / "registry.log").read_text()) from None
            time.sleep(0.1)
    return f"127.0.0.1:{port}", process


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "registry"
    folder.mkdir()
    host, process = start_registry(folder)
    yield host
    process.terminate()
    process.wait(10)


class PackageIndex:
    """A PEP 503 simple index in a folder, served by `python -m http.server` on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def add(self, name: str, version: str, files: dict[str, str]) -> None:
        project = self.root / "simple" / name
        wheel = write_wheel(project, name, version, files)
        links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in sorted(project.glob("*.whl")))
        (project / "index.html").write_text(f"<!DOCTYPE html><html><body>{links}</body></html>")
        assert wheel.is_file()

    def start(self) -> PackageIndex:
        port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}/simple/"
        give_up = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(self.url, timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def index(tmp_path: Path) -> Iterator[PackageIndex]:
    served = PackageIndex(tmp_path / "index")
    served.add(
        "tinytext",
        "1.0",
        {"tinytext/__init__.py": "def shout(text):\n    return text.upper() + '!'\n"},
    )
    served.start()
    yield served
    served.stop()


def config_map_mount(root: Path, files: dict[str, str]) -> Path:
    """A folder laid out as the kubelet mounts a ConfigMap with `items`: the files in a
    timestamped folder, `..data` linking to it, and each top-level name linking into it."""
    root.mkdir(parents=True)
    stamp = root / "..2026_12_04_03_00_00.000000001"
    for path, text in files.items():
        (stamp / path).parent.mkdir(parents=True, exist_ok=True)
        (stamp / path).write_text(text)
    (root / "..data").symlink_to(stamp.name)
    for top in {path.split("/")[0] for path in files}:
        (root / top).symlink_to(f"..data/{top}")
    return root


def run_builder(
    tmp_path: Path, *, code: Path, base: str, target: str, index_url: str, **extra: str
) -> tuple[int, dict[str, Any], str]:
    log = tmp_path / "termination-log"
    log.unlink(missing_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path / "home"),
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_INDEX_URL": index_url,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        build_job.ENV_CODE_DIR: str(code),
        build_job.ENV_WORK_DIR: str(tmp_path / "work"),
        build_job.ENV_BASE: base,
        build_job.ENV_TARGET: target,
        build_job.ENV_RUNTIME: "python3.11",
        build_job.ENV_TERMINATION_LOG: str(log),
        **extra,
    }
    done = subprocess.run(
        [sys.executable, "-m", "kubefaas.build_job"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, json.loads(log.read_text()), done.stdout + done.stderr


def manifest_of(host: str, name: str, reference: str) -> dict[str, Any]:
    body, headers = get(f"http://{host}/v2/{name}/manifests/{reference}", oci.MEDIA_MANIFEST)
    assert headers["Docker-Content-Digest"] == oci.sha256(body)
    found: dict[str, Any] = json.loads(body)
    return found


def layer_names(host: str, name: str, digest: str) -> list[str]:
    blob, _ = get(f"http://{host}/v2/{name}/blobs/{digest}")
    assert oci.sha256(blob) == digest
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return tar.getnames()


def push_base(host: str) -> tuple[oci.Image, str]:
    image = base_image()
    digest = oci.push(image, f"{host}/kubefaas-runtime:1", scheme="http")
    return image, f"{host}/kubefaas-runtime@{digest}"


def test_the_builder_installs_assembles_pushes_and_reports_the_digest(
    registry: str, index: PackageIndex, tmp_path: Path
) -> None:
    base, base_ref = push_base(registry)
    files = {
        "main.py": HANDLER,
        "pkg/__init__.py": "",
        "pkg/words.py": "def word():\n    return 'hi'\n",
        "requirements.txt": "tinytext==1.0\n",
    }
    code = config_map_mount(tmp_path / "code", files)
    expected = build_job.code_digest({p: t.encode() for p, t in files.items()})
    status, message, output = run_builder(
        tmp_path,
        code=code,
        base=base_ref,
        target=f"{registry}/default-page:one",
        index_url=index.url,
        **{build_job.ENV_CODE_DIGEST: expected},
    )
    assert status == 0, output
    assert message["image"] == f"{registry}/default-page@{message['digest']}"
    assert message["depsReused"] is False

    manifest = manifest_of(registry, "default-page", message["digest"])
    assert manifest_of(registry, "default-page", "one") == manifest
    layers = [layer["digest"] for layer in manifest["layers"]]
    # The runtime's layers as they are (mounted from its repository), then deps, then code.
    assert layers[:-2] == [layer.blob.digest for layer in base.layers]
    assert layers[-2:] == [message["depsLayer"], message["codeLayer"]]
    deps_files = layer_names(registry, "default-page", message["depsLayer"])
    assert "opt/kubefaas/deps/tinytext/__init__.py" in deps_files
    code_files = layer_names(registry, "default-page", message["codeLayer"])
    assert sorted(n for n in code_files if n.endswith((".py", ".txt"))) == [
        "var/task/main.py",
        "var/task/pkg/__init__.py",
        "var/task/pkg/words.py",
        "var/task/requirements.txt",
    ]
    assert not [n for n in code_files if "..data" in n or "..2026" in n]
    config_blob, _ = get(f"http://{registry}/v2/default-page/blobs/{manifest['config']['digest']}")
    config = json.loads(config_blob)
    assert f"KUBEFAAS_DEPS_DIR={oci.DEPS_DIR}" in config["config"]["Env"]
    assert "KUBEFAAS_DEPS_DIR=stale" not in config["config"]["Env"]
    assert config["config"]["User"] == "65532"
    # Every diff_id is the digest of its layer's uncompressed tar, as a kubelet checks.
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        blob, _ = get(f"http://{registry}/v2/default-page/blobs/{layer['digest']}")
        assert oci.sha256(gzip.decompress(blob)) == diff_id


def test_a_code_only_change_reuses_the_dependencies_layer_without_running_pip(
    registry: str, index: PackageIndex, tmp_path: Path
) -> None:
    _, base_ref = push_base(registry)
    files = {"main.py": HANDLER, "pkg/__init__.py": "", "pkg/words.py": "def word(): return 'a'\n"}
    files["requirements.txt"] = "tinytext==1.0  # the only one\n"
    target = f"{registry}/default-page"
    first = run_builder(
        tmp_path / "1",
        code=config_map_mount(tmp_path / "1" / "code", files),
        base=base_ref,
        target=f"{target}:one",
        index_url=index.url,
    )
    assert first[0] == 0, first[2]
    # The index goes away: the second build can only succeed without pip.
    index.stop()
    files["pkg/words.py"] = "def word(): return 'b'\n"
    second = run_builder(
        tmp_path / "2",
        code=config_map_mount(tmp_path / "2" / "code", files),
        base=base_ref,
        target=f"{target}:two",
        index_url=index.url,
    )
    assert second[0] == 0, second[2]
    assert second[1]["depsReused"] is True
    assert second[1]["depsLayer"] == first[1]["depsLayer"]
    assert second[1]["codeLayer"] != first[1]["codeLayer"]
    assert second[1]["digest"] != first[1]["digest"]
    one = manifest_of(registry, "default-page", "one")["layers"]
    two = manifest_of(registry, "default-page", "two")["layers"]
    assert one[:-1] == two[:-1]
    assert one[-1] != two[-1]


def test_a_failed_install_reports_the_requirement_and_pips_message(
    registry: str, index: PackageIndex, tmp_path: Path
) -> None:
    _, base_ref = push_base(registry)
    files = {"main.py": HANDLER, "requirements.txt": "tinytext==1.0\nno-such-pkg==9.9\n"}
    status, message, output = run_builder(
        tmp_path,
        code=config_map_mount(tmp_path / "code", files),
        base=base_ref,
        target=f"{registry}/default-broken:one",
        index_url=index.url,
    )
    assert status == 1, output
    assert "image" not in message
    assert message["error"].startswith("pip could not install requirements.txt")
    assert "no-such-pkg==9.9" in message["error"]
    assert "ERROR:" in message["error"]
    # Nothing was tagged for the function.
    with pytest.raises(urllib.error.HTTPError) as missing:
        get(f"http://{registry}/v2/default-broken/manifests/one", oci.MEDIA_MANIFEST)
    assert missing.value.code == 404
    missing.value.close()


def test_code_that_is_not_what_the_operator_asked_for_is_not_built(
    registry: str, index: PackageIndex, tmp_path: Path
) -> None:
    _, base_ref = push_base(registry)
    files = {"main.py": HANDLER, "requirements.txt": "tinytext==1.0\n"}
    status, message, _ = run_builder(
        tmp_path,
        code=config_map_mount(tmp_path / "code", files),
        base=base_ref,
        target=f"{registry}/default-page:one",
        index_url=index.url,
        **{build_job.ENV_CODE_DIGEST: "0" * 64},
    )
    assert status == 1
    assert "the code changed" in message["error"]


def test_the_builder_pushes_with_credentials_from_a_docker_config(
    index: PackageIndex, tmp_path: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        hashed = crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH))
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"builder:{hashed}\n")
    folder = tmp_path / "registry"
    folder.mkdir()
    host, process = start_registry(folder, htpasswd=htpasswd)
    try:
        files = {"main.py": HANDLER, "requirements.txt": "tinytext==1.0\n"}
        code = config_map_mount(tmp_path / "code", files)
        docker_config = tmp_path / "config.json"
        token = base64.b64encode(b"builder:s3cret").decode()
        # The base must come from the registry too: push it with the same credentials.
        docker_config.write_text(json.dumps({"auths": {host: {"auth": token}}}))
        from kubefaas import registry as client_module

        client = client_module.connect(
            host, plain_http=True, auths=client_module.load_docker_config(docker_config)
        )
        base = base_image()
        for blob in (base.config_blob(), *(layer.blob for layer in base.layers)):
            client.upload("kubefaas-runtime", blob)
        digest = client.put_manifest(
            "kubefaas-runtime", "1", base.manifest_blob().data, oci.MEDIA_MANIFEST
        )
        common = {
            "code": code,
            "base": f"{host}/kubefaas-runtime@{digest}",
            "target": f"{host}/default-page:one",
            "index_url": index.url,
        }
        refused = run_builder(tmp_path / "anonymous", **common)  # type: ignore[arg-type]
        assert refused[0] == 1
        assert "401" in refused[1]["error"]
        status, message, output = run_builder(
            tmp_path / "with-secret",
            **common,  # type: ignore[arg-type]
            **{build_job.ENV_DOCKER_CONFIG: str(docker_config)},
        )
        assert status == 0, output
        request = urllib.request.Request(
            f"http://{host}/v2/default-page/manifests/{message['digest']}",
            headers={"Accept": oci.MEDIA_MANIFEST, "Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert oci.sha256(response.read()) == message["digest"]
    finally:
        process.terminate()
        process.wait(10)
