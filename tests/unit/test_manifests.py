"""Loading a folder of manifests: good ones load, bad ones are named with file and field."""

from __future__ import annotations

from pathlib import Path

from kubefaas.manifests import load_directory

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
apiVersion: kubefaas.io/v1alpha1
kind: Function
metadata: {name: ok}
spec:
  runtime: python3.11
  code: {inline: {main.py: "def handler(e, c): return 1"}}
"""


def test_every_example_is_a_valid_function() -> None:
    result = load_directory(ROOT / "examples")
    assert result.errors == []
    names = {fn.name for fn in result.functions}
    assert {"hello", "counter", "tmp-cache", "http", "slow", "fail"} <= names


def test_bad_documents_are_reported_and_good_ones_still_load(tmp_path: Path) -> None:
    bad = GOOD.replace("name: ok", "name: bad").replace("runtime: python3.11", "runtime: java")
    (tmp_path / "multi.yaml").write_text(GOOD + "---\n" + bad)
    (tmp_path / "broken.yaml").write_text("spec: [unclosed\n")
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = load_directory(tmp_path)
    assert [fn.name for fn in result.functions] == ["ok"]
    messages = sorted(str(e) for e in result.errors)
    assert len(messages) == 2
    assert "broken.yaml: invalid Function: not valid YAML" in messages[0]
    assert "multi.yaml#2: invalid Function: spec.runtime:" in messages[1]


def test_same_function_twice_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    result = load_directory(tmp_path)
    assert len(result.functions) == 1
    assert "defined twice" in str(result.errors[0])


def test_configmaps_and_other_kinds_are_not_functions(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: code}\ndata: {main.py: x}\n"
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
    )
    result = load_directory(tmp_path)
    assert result.errors == []
    assert result.config_maps == {("default", "code"): {"main.py": "x"}}
