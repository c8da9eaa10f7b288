"""`kubefaas deploy DIR` for real: build, push to Debian's docker-registry on 127.0.0.1, and
apply the Functions to a real API server with kubectl (docs/packaging.md). What is stored
is what a kubelet would run: the built image pinned by the digest the registry serves."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kubefaas import oci
from kubefaas.api import parse_function
from kubefaas.cli import main
from kubefaas_cluster.pytest_plugin import KubeApi
from tests.unit.test_oci import base_image, function_folder
from tests.unit.test_oci_push import get, registry
from tests.wheels import offline_index

__all__ = ["registry"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd(kube_api: KubeApi) -> None:
    kube_api.kubectl("apply", "-f", str(ROOT / "crds" / "function.yaml"))
    kube_api.kubectl(
        "wait", "--for=condition=Established", "crd/functions.kubefaas.io", "--timeout=60s"
    )


def test_kubefaas_deploy_applies_the_built_function_by_digest_and_the_rest_as_they_are(
    kube_api: KubeApi,
    crd: None,
    namespace: str,
    registry: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in offline_index(tmp_path / "wheels").items():
        monkeypatch.setenv(name, value)
    host, _ = registry
    base = tmp_path / "base.tar"
    oci.write_archive(base_image(), base)
    manifests = tmp_path / "manifests"
    function_folder(manifests / "src")
    (manifests / "fn.yaml").write_text(
        f"apiVersion: kubefaas.io/v1alpha1\nkind: Function\n"
        f"metadata: {{name: hello, namespace: {namespace}}}\n"
        "spec: {runtime: python3.11, code: {path: ./src}, timeoutSeconds: 7}\n"
        f"---\napiVersion: kubefaas.io/v1alpha1\nkind: Function\n"
        f"metadata: {{name: flat, namespace: {namespace}}}\n"
        "spec: {runtime: python3.11, code: {inline: {main.py: 'x = 1'}}}\n"
    )
    kubectl = f"{kube_api.bin_dir / 'kubectl'} --kubeconfig={kube_api.kubeconfig}"
    argv = [
        "deploy",
        str(manifests),
        "--base",
        str(base),
        "--registry",
        host,
        "--plain-http",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--kubectl",
        kubectl,
    ]
    assert main(argv) == 0

    stored = {
        item["metadata"]["name"]: parse_function(item)
        for item in kube_api.kubectl_json("get", "fn", "-n", namespace)["items"]
    }
    assert set(stored) == {"hello", "flat"}
    hello = stored["hello"]
    assert hello.spec.runtime is None
    assert hello.spec.code is None
    assert hello.spec.timeout_seconds == 7
    assert hello.spec.image is not None
    repository, _, digest = hello.spec.image.partition("@")
    assert repository == f"{host}/{namespace}-hello"
    body, headers = get(
        f"http://{host}/v2/{namespace}-hello/manifests/{digest}", oci.MEDIA_MANIFEST
    )
    assert headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    assert stored["flat"].spec.code is not None
    assert stored["flat"].spec.code.inline == {"main.py": "x = 1"}

    # Deploying the same folder again changes nothing: the same digest is applied.
    assert main(argv) == 0
    again = kube_api.kubectl_json("get", "fn", "hello", "-n", namespace)
    assert again["spec"]["image"] == hello.spec.image
    assert again["metadata"]["generation"] == 1


def test_kubefaas_deploy_reports_a_refused_function_and_stores_nothing(
    kube_api: KubeApi,
    crd: None,
    namespace: str,
    registry: tuple[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host, _ = registry
    base = tmp_path / "base.tar"
    oci.write_archive(base_image(), base)
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        f"apiVersion: kubefaas.io/v1alpha1\nkind: Function\n"
        f"metadata: {{name: bad, namespace: {namespace}}}\n"
        "spec: {runtime: python3.11, code: {inline: {main.py: 'x = 1'}}, timeoutSeconds: 0}\n"
    )
    kubectl = f"{kube_api.bin_dir / 'kubectl'} --kubeconfig={kube_api.kubeconfig}"
    code = main(
        ["deploy", str(manifest), "--base", str(base), "--registry", host, "--kubectl", kubectl]
    )
    assert code != 0
    assert "timeoutSeconds" in capsys.readouterr().err
    assert kube_api.kubectl_json("get", "fn", "-n", namespace)["items"] == []
