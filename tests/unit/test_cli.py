"""The `kubefaas` command line as a user meets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubefaas.cli import main
from kubefaas.crd import crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("local", "validate", "crd", "operator", "gateway", "dlq"):
        assert f"  {command}" in out


def test_crd_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()


def test_validate_reports_field_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = (ROOT / "examples" / "hello.yaml").read_text().replace("runtime: python3.11", "")
    (tmp_path / "hello.yaml").write_text(bad)
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        "hello.yaml: invalid Function: spec: set exactly one of spec.runtime and spec.image" in err
    )


def test_validate_examples_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "examples")]) == 0
    assert "ok: default/hello" in capsys.readouterr().out
