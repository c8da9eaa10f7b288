"""Real function code in local mode: a third-party package from requirements.txt and the
function's own sub-package, installed once and reused (docs/packaging.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.wheels import offline_index

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.local.conftest import ManifestDir, RunningGateway

pytestmark = pytest.mark.local

HANDLER = """\
import tinytext
from shapes.greeting import greet

def handler(event, context):
    return {"text": tinytext.shout(greet(event.get("name", "world")))}
"""
TREE = {
    "main.py": HANDLER,
    "shapes/__init__.py": "",
    "shapes/greeting.py": "def greet(name):\n    return 'hello ' + name\n",
    "requirements.txt": "# what the handler imports\ntinytext==1.0\n",
}


def write_function(manifest_dir: ManifestDir, name: str, code: dict[str, Any]) -> None:
    document = {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": name},
        "spec": {"runtime": "python3.11", "code": code},
    }
    (manifest_dir.path / f"{name}.yaml").write_text(yaml.safe_dump(document))


def test_a_function_imports_a_requirement_and_its_own_package(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    tmp_path: Path,
) -> None:
    pip_env = offline_index(tmp_path / "wheels")
    write_function(manifest_dir, "tree", {"inline": TREE})
    # The same code as a folder next to the manifest (spec.code.path).
    folder = manifest_dir.path / "src"
    for path, source in TREE.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(source)
    write_function(manifest_dir, "folder", {"path": "./src"})
    state = tmp_path / "state"

    gateway = start_gateway(manifest_dir.path, env=pip_env, state_dir=state)
    for name in ("tree", "folder"):
        response = gateway.invoke(name, {"name": "kube"})
        assert response.status_code == 200, response.text
        assert response.json() == {"text": "HELLO KUBE!"}
    # One install for the two functions: the same (runtime, requirements) pair.
    assert gateway.stdout().count("requirements installed") == 1
    installed = [p for p in (state / "local" / "deps").iterdir() if p.is_dir()]
    assert len(installed) == 1
    assert (installed[0] / "tinytext" / "__init__.py").is_file()
    gateway.terminate()

    # A restart (and its cold starts) reuses the folder: pip does not run again.
    again = start_gateway(manifest_dir.path, env=pip_env, state_dir=state)
    assert again.invoke("tree", {"name": "again"}).json() == {"text": "HELLO AGAIN!"}
    assert "installing the requirements" not in again.stdout()
    assert "requirements installed" not in again.stdout()


def test_a_changed_requirements_file_makes_a_new_install(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    tmp_path: Path,
) -> None:
    pip_env = offline_index(tmp_path / "wheels")
    state = tmp_path / "state"
    write_function(manifest_dir, "tree", {"inline": TREE})
    start_gateway(manifest_dir.path, env=pip_env, state_dir=state).terminate()
    changed = {**TREE, "requirements.txt": "tinytext>=1.0\n"}
    write_function(manifest_dir, "tree", {"inline": changed})
    gateway = start_gateway(manifest_dir.path, env=pip_env, state_dir=state)
    assert "requirements installed" in gateway.stdout()
    assert gateway.invoke("tree", {}).json() == {"text": "HELLO WORLD!"}
    assert len([p for p in (state / "local" / "deps").iterdir() if p.is_dir()]) == 2


def test_a_bad_requirement_is_refused_clearly_and_the_rest_serve(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    tmp_path: Path,
) -> None:
    pip_env = offline_index(tmp_path / "wheels")
    write_function(manifest_dir, "good", {"inline": TREE})
    broken = {**TREE, "requirements.txt": "no-such-package-kf==9.9\n"}
    write_function(manifest_dir, "broken", {"inline": broken})
    manifest_dir.add_function("plain", "def handler(event, context):\n    return 'plain'\n")

    gateway = start_gateway(manifest_dir.path, env=pip_env)
    stderr = gateway.stderr()
    assert "function default/broken" in stderr
    assert "no-such-package-kf==9.9" in stderr
    assert "ERROR: Could not find a version" in stderr  # pip's own message
    assert gateway.invoke("good", {}).json() == {"text": "HELLO WORLD!"}
    assert gateway.invoke("plain", {}).json() == "plain"
    refused = gateway.invoke("broken", {})
    assert refused.status_code >= 500
    assert "no-such-package-kf==9.9" in refused.text
    assert "requirements.txt" in refused.text


def test_requirements_in_a_configmap_are_installed_too(
    manifest_dir: ManifestDir,
    start_gateway: Callable[..., RunningGateway],
    tmp_path: Path,
) -> None:
    pip_env = offline_index(tmp_path / "wheels")
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "shout-code"},
        "data": {
            "main.py": "import tinytext\ndef handler(event, context):\n"
            "    return tinytext.shout('cm')\n",
            "requirements.txt": "tinytext==1.0\n",
        },
    }
    (manifest_dir.path / "cm.yaml").write_text(yaml.safe_dump(config_map))
    write_function(manifest_dir, "from-cm", {"configMap": {"name": "shout-code"}})
    gateway = start_gateway(manifest_dir.path, env=pip_env)
    assert gateway.invoke("from-cm", {}).json() == "CM!"
