"""Requirement sets are content-addressed: what pip would install decides the key, and
an install (or a failed one) is not repeated."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kubefaas.deps import DependencyCache, InstallFailed, requirement_lines, requirements_key
from tests.wheels import offline_index, write_wheel


def test_comments_and_blank_lines_do_not_change_the_key() -> None:
    plain = "tinytext==1.0\nJinja2>=3.1\n"
    noted = "# templates\n\ntinytext==1.0   # shouting\nJinja2>=3.1\n\n"
    assert requirement_lines(noted) == ["tinytext==1.0", "Jinja2>=3.1"]
    assert requirements_key("python3.11", noted, abi="a") == requirements_key(
        "python3.11", plain, abi="a"
    )


@pytest.mark.parametrize(
    ("runtime", "text", "abi"),
    [
        ("python3.12", "tinytext==1.0\n", "a"),  # another runtime
        ("python3.11", "tinytext==1.0\n", "b"),  # another interpreter ABI / platform
        ("python3.11", "tinytext>=1.0\n", "a"),  # another requirement
        ("python3.11", "Jinja2>=3.1\ntinytext==1.0\n", "a"),  # one more (pip order matters)
    ],
)
def test_any_change_that_matters_makes_a_new_key(runtime: str, text: str, abi: str) -> None:
    assert requirements_key(runtime, text, abi=abi) != requirements_key(
        "python3.11", "tinytext==1.0\n", abi="a"
    )


def test_an_install_is_reused_and_a_failure_is_remembered_until_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    for name, value in offline_index(wheels).items():
        monkeypatch.setenv(name, value)
    cache = DependencyCache(tmp_path / "deps", python=sys.executable, abi="test")
    first = cache.ensure("default/a", "python3.11", "tinytext==1.0\n")
    assert first.fresh
    assert (first.path / "tinytext" / "__init__.py").is_file()
    second = cache.ensure("default/b", "python3.11", "# same set\ntinytext==1.0\n")
    assert (second.path, second.fresh) == (first.path, False)
    # Nothing half-installed is left next to the set.
    assert sorted(
        p.name for p in (tmp_path / "deps").iterdir() if not p.name.endswith(".lock")
    ) == [first.key]

    with pytest.raises(InstallFailed, match=r"requirement 'later==2\.0'") as caught:
        cache.ensure("default/c", "python3.11", "later==2.0\n")
    assert caught.value.function == "default/c"
    assert "Could not find a version" in caught.value.pip_output
    write_wheel(wheels, "later", "2.0", {"later.py": "X = 2\n"})
    # The same cache does not run pip again for a set that failed ...
    with pytest.raises(InstallFailed, match=r"later==2\.0"):
        cache.ensure("default/c", "python3.11", "later==2.0\n")
    # ... a new one (a restart) does, and now succeeds.
    restarted = DependencyCache(tmp_path / "deps", python=sys.executable, abi="test")
    assert restarted.ensure("default/c", "python3.11", "later==2.0\n").fresh


def test_an_ignored_plain_http_index_leads_the_pip_message() -> None:
    from kubefaas.deps import _pip_message

    output = (
        "Looking in indexes: http://10.0.0.9:8000/simple/\n"
        "WARNING: The repository located at 10.0.0.9 is not a trusted or secure host and is "
        "being ignored.\n"
        "ERROR: Could not find a version that satisfies the requirement tinytext==1.0 "
        "(from versions: none)\n"
        "ERROR: No matching distribution found for tinytext==1.0\n"
    )
    message = _pip_message(output)
    assert message.startswith("WARNING: The repository located at 10.0.0.9 is not a trusted")
    assert message.endswith("No matching distribution found for tinytext==1.0")
