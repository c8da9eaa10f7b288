"""Source trees on a cluster: nested inline paths land at their paths in the pod's code
folder (ConfigMap keys cannot hold '/', so the volume's items map keys back to paths), and
a workstation folder (`code.path`) is refused by the operator with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubefaas.api import Function, parse_function
from kubefaas_operator import children
from tests.fake_kube import FakeKube
from tests.unit.test_operator_reconcile import NS, add_function, fn_path, ready, run

IMAGES = {"python3.11": "registry.example/kubefaas-runtime:1.2.3"}
TREE = {
    "main.py": "from pkg.sub import mod\ndef handler(event, context):\n    return mod.X\n",
    "pkg/__init__.py": "",
    "pkg/sub/__init__.py": "",
    "pkg/sub/mod.py": "X = 1\n",
    "templates/page.html": "<p>{{ name }}</p>\n",
}


def function(code: dict[str, Any]) -> Function:
    return parse_function(
        {
            "apiVersion": "kubefaas.io/v1alpha1",
            "kind": "Function",
            "metadata": {"name": "tree", "namespace": NS, "uid": "u1", "generation": 1},
            "spec": {"runtime": "python3.11", "code": code},
        }
    )


def code_volume(fn: Function) -> dict[str, Any]:
    deployment = children.build_deployment(fn, image_for_runtime=IMAGES, replicas_hint=None)
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    found: dict[str, Any] = next(v for v in volumes if v["name"] == "code")
    return found


def materialise(config_map: dict[str, Any], volume: dict[str, Any], root: Path) -> None:
    """Lay the ConfigMap out as the kubelet does: each item's key at its path."""
    data = config_map["data"]
    items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        target = root / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])


def test_every_file_of_a_tree_is_mounted_at_its_path(tmp_path: Path) -> None:
    fn = function({"inline": TREE})
    config_map = children.build_config_map(fn)
    # Keys are valid ConfigMap keys (no '/'), one per file.
    assert len(config_map["data"]) == len(TREE)
    assert all("/" not in key for key in config_map["data"])
    volume = code_volume(fn)
    paths = sorted(item["path"] for item in volume["configMap"]["items"])
    assert paths == sorted(TREE)
    materialise(config_map, volume, tmp_path)
    on_disk = {
        str(p.relative_to(tmp_path)): p.read_text() for p in tmp_path.rglob("*") if p.is_file()
    }
    assert on_disk == TREE


def test_flat_code_keeps_its_keys_and_needs_no_items() -> None:
    fn = function({"inline": {"main.py": "x = 1\n", "util.py": "y = 2\n"}})
    assert set(children.build_config_map(fn)["data"]) == {"main.py", "util.py"}
    assert "items" not in code_volume(fn)["configMap"]


def test_a_moved_file_changes_the_pod_checksum() -> None:
    """Moving a file within the tree rolls the pods (the checksum covers the paths)."""
    one = function({"inline": {"main.py": "", "a/x.py": "1"}})
    two = function({"inline": {"main.py": "", "b/x.py": "1"}})
    assert children.pod_checksum(one, one.spec.code.inline) != children.pod_checksum(  # type: ignore[union-attr]
        two,
        two.spec.code.inline,  # type: ignore[union-attr]
    )


def test_the_operator_refuses_code_path_with_a_clear_message() -> None:
    kube = FakeKube()
    add_function(kube, "local", code={"path": "./src"})
    outcome = run(kube, "local")
    assert outcome.problem is not None
    condition = ready(kube, "local")
    assert condition["status"] == "False"
    assert "spec.code.path './src'" in condition["message"]
    assert "kubefaas deploy" in condition["message"]
    assert [p for p in kube.objects if p != fn_path("local")] == []
