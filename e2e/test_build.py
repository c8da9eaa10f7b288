"""Functions with a requirements.txt, built by the operator's Job on the local cluster, pushed
to the node's registry, pulled by the kubelet, and answering through the gateway
(docs/packaging.md, "On a cluster: the build Job" and "The local cluster's registry").

The module turns builds on for the session's release (`helm upgrade --reuse-values` with
`build.*` pointing at the node registry `kubefaas_cluster.node_registry.HOST`) and serves a
PEP 503 package index on the pod network's gateway address, so pods install from this
machine and never from a public index. It needs the local cluster (`make cluster-up`),
whose `up` runs the registry and pushed the runtime image to it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from e2e.harness import wait_for
from kubefaas import oci
from kubefaas_cluster import node_registry
from tests.wheels import write_wheel

if TYPE_CHECKING:
    from e2e.harness import Release

pytestmark = pytest.mark.e2e

BUILD_SECONDS = 300.0
HANDLER = (
    "import tinytext\nfrom words.pick import word\n\n"
    "def handler(event, context):\n    return {'said': tinytext.shout(word()), 'v': VERSION}\n"
)


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def node_registry_up(release: Release) -> Release:
    """The local cluster, whose `up` runs the node registry (checked before anything binds
    its address)."""
    if release.cluster.local is None:
        pytest.skip("needs the local cluster's node registry (make cluster-up); not coverage")
    if not node_registry.answers():
        pytest.fail(f"the node registry {node_registry.HOST} does not answer", pytrace=False)
    return release


@pytest.fixture(scope="module")
def package_index(node_registry_up: Release) -> Iterator[str]:
    """A PEP 503 index with one hand-made wheel, on the pod network's gateway address."""
    with tempfile.TemporaryDirectory(prefix="kubefaas-index-") as folder:
        project = Path(folder) / "simple" / "tinytext"
        wheel = write_wheel(
            project,
            "tinytext",
            "1.0",
            {"tinytext/__init__.py": "def shout(text):\n    return text.upper() + '!'\n"},
        )
        (project / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
        port = _free_port(node_registry.ADDRESS)
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", node_registry.ADDRESS],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://{node_registry.ADDRESS}:{port}/simple/"
        try:
            wait_for("the package index", lambda: _get(url) is not None, timeout=10)
            yield url
        finally:
            server.terminate()
            server.wait(10)


def _get(url: str, accept: str = "*/*") -> bytes | None:
    try:
        request = urllib.request.Request(url, headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=5) as response:
            data: bytes = response.read()
            return data
    except OSError:
        return None


@pytest.fixture(scope="module")
def builds(node_registry_up: Release, package_index: str) -> Iterator[Release]:
    """The session's release with builds on, then off again."""
    release = node_registry_up
    values = {
        "build": {
            "registry": node_registry.HOST,
            "plainHttp": True,
            "pipIndexUrl": package_index,
            # A plain-HTTP index off loopback: pip ignores it unless told to trust it.
            "pipExtraArgs": f"--trusted-host {node_registry.ADDRESS}",
            "baseImages": {"python3.11": f"{node_registry.HOST}/kubefaas-runtime:0.1.0"},
        }
    }
    chart = Path(__file__).resolve().parents[1] / "charts" / "kubefaas"

    def upgrade(document: dict[str, Any]) -> None:
        release.cluster.helm(
            "upgrade", release.name, str(chart), "-n", release.namespace, "--reuse-values",
            "-f", "-", "--wait", "--timeout=300s", input=yaml.safe_dump(document), timeout=360,
        )  # fmt: skip

    upgrade(values)
    try:
        yield release
    finally:
        upgrade({"build": {"registry": ""}})


def apply(release: Release, name: str, *, main: str, requirements: str) -> None:
    document = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name, "namespace": release.functions_namespace},
        "spec": {
            "runtime": "python3.11",
            "code": {
                "inline": {
                    "main.py": main,
                    "words/__init__.py": "",
                    "words/pick.py": "def word():\n    return 'built'\n",
                    "requirements.txt": requirements,
                }
            },
        },
    }
    release.cluster.kubectl("apply", "-f", "-", input=json.dumps(document))


def status_of(release: Release, name: str) -> dict[str, Any]:
    found = release.cluster.kubectl(
        "get", "fn", name, "-n", release.functions_namespace, "-o", "json", check=False
    )
    if found.returncode != 0:
        return {}
    status: dict[str, Any] = json.loads(found.stdout).get("status") or {}
    return status


def built(release: Release, name: str, reason: str, *, not_image: str | None = None) -> Any:
    def check() -> dict[str, Any] | None:
        status = status_of(release, name)
        for condition in status.get("conditions") or []:
            if condition["type"] == "Built" and condition["reason"] == reason:
                if reason == "Built" and status.get("image") in (None, not_image):
                    return None
                return status
        return None

    return wait_for(
        f"Function {name} Built={reason}", check, timeout=BUILD_SECONDS, explain=release.diagnostics
    )


def deployment_image(release: Release, name: str) -> str:
    found = release.cluster.kubectl(
        "get", "deployment", name, "-n", release.functions_namespace,
        "-o", "jsonpath={.spec.template.spec.containers[0].image}",
    )  # fmt: skip
    return found.stdout.strip()


def manifest(image: str) -> dict[str, Any]:
    repository, digest = image.split("@")
    name = repository.split("/", 1)[1]
    data = _get(f"http://{node_registry.HOST}/v2/{name}/manifests/{digest}", oci.MEDIA_MANIFEST)
    assert data is not None, image
    assert oci.sha256(data) == digest
    found: dict[str, Any] = json.loads(data)
    return found


def invoke_until(release: Release, name: str, want: dict[str, Any]) -> None:
    def check() -> bool:
        response = release.gateway.invoke(name, {})
        return response.status_code == 200 and response.json() == want

    wait_for(f"{name} to answer {want}", check, timeout=120, explain=release.diagnostics)


def test_built_pushed_pulled_answers_then_a_code_edit_rebuilds_only_the_code_layer_and_a_failed_build_leaves_it_serving(  # noqa: E501
    builds: Release,
) -> None:
    release = builds
    name = f"built-{uuid.uuid4().hex[:5]}"
    try:
        apply(release, name, main="VERSION = 1\n" + HANDLER, requirements="tinytext==1.0\n")
        first = built(release, name, "Built")
        image = first["image"]
        assert image.startswith(
            f"{node_registry.HOST}/{release.functions_namespace}-{name}@sha256:"
        )
        wait_for(
            "the Deployment to run the built image",
            lambda: deployment_image(release, name) == image,
            timeout=60,
            explain=release.diagnostics,
        )
        invoke_until(release, name, {"said": "BUILT!", "v": 1})

        # Only the code changes: a new image whose layers are the old ones but the last.
        apply(release, name, main="VERSION = 2\n" + HANDLER, requirements="tinytext==1.0\n")
        second = built(release, name, "Built", not_image=image)["image"]
        before, after = manifest(image)["layers"], manifest(second)["layers"]
        assert before[:-1] == after[:-1], "the runtime and dependency layers were rebuilt"
        assert before[-1] != after[-1]
        invoke_until(release, name, {"said": "BUILT!", "v": 2})

        # A requirement pip cannot find: BuildFailed says so, version 2 keeps serving.
        apply(release, name, main="VERSION = 3\n" + HANDLER, requirements="no-such-pkg==9.9\n")
        failed = built(release, name, "BuildFailed")
        message = next(c for c in failed["conditions"] if c["type"] == "Built")["message"]
        assert "no-such-pkg" in message
        assert failed["image"] == second
        assert deployment_image(release, name) == second
        response = release.gateway.invoke(name, {})
        assert response.status_code == 200, response.text
        assert response.json() == {"said": "BUILT!", "v": 2}
    finally:
        release.cluster.kubectl(
            "delete", "fn", name, "-n", release.functions_namespace, "--wait=false", check=False
        )
