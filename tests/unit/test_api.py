"""The Function API model: defaults, bounds and cross-field rules a user hits on apply."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubefaas import limits
from kubefaas.api import Function, InvalidFunction, parse_function
from kubefaas.quantity import mebibytes, parse_quantity

BASE: dict[str, Any] = {
    "apiVersion": "kubefaas.io/v1alpha1",
    "kind": "Function",
    "metadata": {"name": "hello"},
    "spec": {
        "runtime": "python3.11",
        "code": {"inline": {"main.py": "def handler(e, c):\n    return e\n"}},
    },
}


def manifest(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    for key, value in spec.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    return doc


def problems(doc: dict[str, Any]) -> str:
    with pytest.raises(InvalidFunction) as caught:
        parse_function(doc, "fn.yaml")
    return str(caught.value)


def test_minimal_manifest_gets_every_default_of_the_design() -> None:
    fn = parse_function(BASE)
    spec = fn.spec
    assert fn.key == "default/hello"
    assert spec.handler == "main.handler"
    assert spec.event_format == "json"
    assert spec.memory == "256Mi"
    assert spec.timeout_seconds == 30
    assert spec.tmp_size == "512Mi"
    assert (spec.scaling.min_scale, spec.scaling.max_scale) == (0, 20)
    assert spec.scaling.target_concurrency == 10
    assert spec.scaling.container_concurrency == 0
    assert spec.scaling.reserved_concurrency is None
    assert spec.scaling.scale_to_zero_after_seconds == 120
    assert spec.async_.max_retries == 2
    assert spec.async_.max_event_age_seconds == 21600


def test_round_trip_through_aliases_is_lossless() -> None:
    fn = parse_function(manifest(scaling={"maxScale": 3}, eventFormat="http"))
    again = Function.model_validate(fn.model_dump(by_alias=True, exclude_none=True))
    assert again == fn
    assert fn.model_dump(by_alias=True)["spec"]["async"]["maxRetries"] == 2


@pytest.mark.parametrize(
    ("spec", "field", "rule"),
    [
        ({"timeoutSeconds": 0}, "spec.timeoutSeconds", "greater than or equal to 1"),
        ({"timeoutSeconds": 901}, "spec.timeoutSeconds", "less than or equal to 900"),
        ({"memory": "32Mi"}, "spec.memory", "between 64Mi and 10Gi"),
        ({"memory": "11Gi"}, "spec.memory", "between 64Mi and 10Gi"),
        ({"memory": "lots"}, "spec.memory", "should match pattern"),
        ({"tmpSize": "20Gi"}, "spec.tmpSize", "between 64Mi and 10Gi"),
        ({"scaling": {"maxScale": 1001}}, "spec.scaling.maxScale", "less than or equal"),
        ({"scaling": {"maxScale": 0}}, "spec.scaling.maxScale", "greater than or equal"),
        ({"scaling": {"targetConcurrency": 0}}, "spec.scaling.targetConcurrency", "greater"),
        ({"scaling": {"minScale": 5, "maxScale": 2}}, "spec.scaling", "minScale must not exceed"),
        (
            {"scaling": {"scaleToZeroAfterSeconds": 5}},
            "spec.scaling",
            "0 (never) or at least 10",
        ),
        ({"async": {"maxRetries": 11}}, "spec.async.maxRetries", "less than or equal to 10"),
        ({"async": {"maxEventAgeSeconds": 59}}, "spec.async.maxEventAgeSeconds", "greater"),
        ({"image": "example/fn:1"}, "spec", "exactly one of spec.runtime and spec.image"),
        ({"runtime": None}, "spec", "exactly one of spec.runtime and spec.image"),
        ({"runtime": None, "image": "x:1"}, "spec", "spec.code goes with spec.runtime"),
        ({"code": None}, "spec", "spec.runtime needs spec.code"),
        ({"runtime": "python2.7"}, "spec.runtime", "python3.11"),
        ({"handler": "main"}, "spec.handler", "should match pattern"),
        ({"handler": "app.handler"}, "spec", "handler's module must be one of the files"),
        ({"code": {"inline": {"main.py": ""}, "configMap": {"name": "c"}}}, "spec.code", "exactly"),
        ({"code": {"inline": {"../b.py": ""}}}, "spec.code", "inline file paths"),
        ({"eventFormat": "xml"}, "spec.eventFormat", "'json' or 'http'"),
        ({"env": [{"name": "A"}, {"name": "A"}]}, "spec", "env names must be unique"),
        ({"env": [{"name": "1BAD"}]}, "spec.env.0.name", "should match pattern"),
        ({"memroy": "1Gi"}, "spec.memroy", "Extra inputs are not permitted"),
        (
            {"async": {"onSuccess": {"url": "http://x", "function": "y"}}},
            "spec.async.onSuccess",
            "exactly one of url and function",
        ),
    ],
)
def test_bad_spec_is_refused_naming_field_and_rule(
    spec: dict[str, Any], field: str, rule: str
) -> None:
    message = problems(manifest(**spec))
    assert message.startswith("fn.yaml: invalid Function:")
    assert f"{field}:" in message
    assert rule in message


def test_name_too_long_for_a_service_is_refused() -> None:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = "a" * 64
    assert "metadata.name" in problems(doc)


def test_name_must_be_a_dns_label() -> None:
    doc = copy.deepcopy(BASE)
    doc["metadata"]["name"] = "Hello_World"
    assert "metadata.name" in problems(doc)


def test_inline_code_over_the_configmap_budget_is_refused() -> None:
    big = "#" * (limits.INLINE_CODE_MAX_BYTES + 1)
    assert "put it in a ConfigMap" in problems(manifest(code={"inline": {"main.py": big}}))


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidFunction, match="expected a mapping, got list"):
        parse_function([1, 2], "x.yaml")


@pytest.mark.parametrize(
    ("text", "size"),
    [("256Mi", 256 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("1.5Ki", 1536), ("1e3", 1000)],
)
def test_quantities(text: str, size: int) -> None:
    assert parse_quantity(text) == size


@pytest.mark.parametrize("text", ["", "100m", "Mi", "-1Gi", "1 Gi", "1.5.2"])
def test_bad_quantities_name_the_rule(text: str) -> None:
    with pytest.raises(ValueError, match="not a size quantity"):
        parse_quantity(text)


def test_memory_in_mebibytes_rounds_up() -> None:
    assert mebibytes("256Mi") == 256
    assert mebibytes("1G") == 954


@given(st.integers(min_value=0, max_value=limits.SCALE_MAX), st.integers(1, limits.SCALE_MAX))
def test_min_and_max_scale_accepted_exactly_when_ordered(low: int, high: int) -> None:
    doc = manifest(scaling={"minScale": low, "maxScale": high})
    if low <= high:
        assert parse_function(doc).spec.scaling.min_scale == low
    else:
        assert "minScale must not exceed" in problems(doc)
