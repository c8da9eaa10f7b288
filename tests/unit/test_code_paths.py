"""Source trees in inline code: the path rule is one rule, in the model and in the CRD."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kubefaas.api import InvalidFunction, parse_function
from kubefaas.crd import function_crd
from tests.code_paths import BAD_PATHS, GOOD_PATHS


def document(inline: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "tree"},
        "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1", **inline}}},
    }


def crd_path_rule() -> str:
    spec = function_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = spec["properties"]["code"]["properties"]["inline"]["x-kubernetes-validations"]
    (rule,) = rules
    text: str = rule["rule"]
    return text


def crd_accepts(path: str) -> bool:
    """Evaluate the CRD's CEL rule for one key: `size(name) <= N && name.matches('RE')`."""
    found = re.fullmatch(r"self\.all\(name, size\(name\) <= (\d+) && name\.matches\('(.*)'\)\)",
                         crd_path_rule())  # fmt: skip
    assert found, crd_path_rule()
    return len(path) <= int(found[1]) and re.search(found[2], path) is not None


@pytest.mark.parametrize("path", GOOD_PATHS)
def test_a_good_path_passes_the_model_and_the_crd(path: str) -> None:
    fn = parse_function(document({path: "y = 2"}))
    assert fn.spec.code is not None
    assert fn.spec.code.inline is not None
    assert path in fn.spec.code.inline
    assert crd_accepts(path)


@pytest.mark.parametrize("path", BAD_PATHS)
def test_a_bad_path_is_refused_by_the_model_and_the_crd(path: str) -> None:
    with pytest.raises(InvalidFunction, match="inline file paths must be relative") as caught:
        parse_function(document({path: "y = 2"}))
    assert repr(path) in str(caught.value)
    assert not crd_accepts(path)


def test_a_file_that_is_also_a_folder_is_refused() -> None:
    with pytest.raises(InvalidFunction, match=r"'pkg' is also the folder of 'pkg/x\.py'"):
        parse_function(document({"pkg": "", "pkg/x.py": ""}))


def test_code_path_is_a_third_exclusive_source() -> None:
    fn = parse_function(
        {**document({}), "spec": {"runtime": "python3.11", "code": {"path": "./src"}}}
    )
    assert fn.spec.code is not None
    assert fn.spec.code.path == "./src"
    with pytest.raises(InvalidFunction, match=r"exactly one of code\.inline, code\.configMap"):
        parse_function(
            {
                **document({}),
                "spec": {"runtime": "python3.11", "code": {"path": "./src", "inline": {"a": ""}}},
            }
        )
