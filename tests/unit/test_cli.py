"""The `kubefaas` command line as a user meets it: real commands, their output and exit codes.

Most cases call `main(argv)` in-process (fast, output captured); one runs the installed
module as a separate process, so what a shell sees (exit status, streams) is checked too.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubefaas import __version__, limits
from kubefaas.cli import EXIT_USAGE, build_parser, main
from tests.manifests import deep_merge

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _parser_commands() -> dict[str, str]:
    """Command -> one-line help, as the parser itself holds them."""
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help or "" for choice in action._choices_actions}


def _help_commands(text: str) -> dict[str, str]:
    """Command -> help line, read from the "commands:" section of `kubefaas --help`."""
    section = text.split("\ncommands:\n", 1)[1]
    found = {}
    for line in section.splitlines():
        match = re.match(r"^ {4}(\S+) +(\S.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def _example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return document


def test_help_lists_exactly_the_commands_the_parser_has(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listed = _help_commands(capsys.readouterr().out)
    assert listed == _parser_commands()
    assert set(listed) >= {"local", "validate", "crd", "operator", "gateway", "dlq"}


@pytest.mark.parametrize("command", sorted(_parser_commands()))
def test_every_listed_command_answers_its_own_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: kubefaas {command}")


def test_no_command_prints_the_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert capsys.readouterr().out.startswith("usage: kubefaas")


def test_version_is_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert capsys.readouterr().out.strip() == f"kubefaas {pyproject['project']['version']}"
    assert __version__ == pyproject["project"]["version"]


def test_crd_prints_the_crd_checked_into_the_repository_and_the_chart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["crd"]) == 0
    printed = capsys.readouterr().out
    assert printed == (ROOT / "crds" / "function.yaml").read_text(encoding="utf-8")
    assert printed == (ROOT / "charts" / "kubefaas" / "crds" / "function.yaml").read_text(
        encoding="utf-8"
    )
    crd = yaml.safe_load(printed)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "functions.kubefaas.io"


def test_validate_accepts_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    names = sorted(_example(path.stem)["metadata"]["name"] for path in EXAMPLES.glob("*.yaml"))
    assert sorted(captured.out.splitlines()) == [f"ok: default/{name}" for name in names]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"spec": {"runtime": None}},
            "spec: set exactly one of spec.runtime and spec.image",
        ),
        (
            {"spec": {"timeoutSeconds": limits.TIMEOUT_MAX + 1}},
            f"spec.timeoutSeconds: Input should be less than or equal to {limits.TIMEOUT_MAX}",
        ),
        (
            {"spec": {"scaling": {"maxScale": 5000}}},
            "spec.scaling.maxScale: Input should be less than or equal to 1000 (got 5000)",
        ),
        ({"spec": {"memory": "lots"}}, "spec.memory: String should match pattern"),
    ],
)
def test_validate_names_the_file_the_field_and_the_rule(
    change: dict[str, Any], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = deep_merge(_example("hello"), change)
    bad["spec"] = {k: v for k, v in bad["spec"].items() if v is not None}
    bad["metadata"]["name"] = "broken"
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "hello.yaml").write_text((EXAMPLES / "hello.yaml").read_text())

    assert main(["validate", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith(f"error: {tmp_path / 'broken.yaml'}: invalid Function: ")
    assert message in line
    # A bad manifest never hides the good ones next to it.
    assert captured.out == "ok: default/hello\n"


def test_validate_reports_a_yaml_syntax_error_with_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.yaml").write_text("kind: Function\nspec: [unclosed\n")
    assert main(["validate", str(tmp_path / "broken.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'broken.yaml'}: invalid Function: not valid YAML" in err


def test_validate_a_path_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert main(["validate", str(missing)]) == EXIT_USAGE
    assert capsys.readouterr().err == f"error: {missing}: no such file or folder\n"


def test_the_installed_command_exits_with_the_status_and_streams_a_shell_sees(
    tmp_path: Path,
) -> None:
    bad = deep_merge(_example("hello"), {"spec": {"scaling": {"minScale": 5, "maxScale": 2}}})
    (tmp_path / "hello.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [sys.executable, "-m", "kubefaas.cli", "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "spec.scaling: scaling.minScale must not exceed scaling.maxScale" in result.stderr
    assert "Traceback" not in result.stderr
