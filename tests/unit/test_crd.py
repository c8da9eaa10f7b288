"""The committed CRD is exactly what the model generates, and it states the model's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubefaas import limits
from kubefaas.api import FunctionSpec
from kubefaas.crd import crd_yaml, function_crd

ROOT = Path(__file__).resolve().parents[2]


def spec_schema() -> dict[str, Any]:
    version = function_crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_committed_crd_matches_the_model() -> None:
    committed = (ROOT / "crds" / "function.yaml").read_text()
    assert committed == crd_yaml(), "crds/function.yaml is stale: run `make crds`"


def test_bounds_come_from_the_one_place_they_are_defined() -> None:
    props = spec_schema()["properties"]
    assert props["timeoutSeconds"]["maximum"] == limits.TIMEOUT_MAX
    assert props["timeoutSeconds"]["default"] == limits.TIMEOUT_DEFAULT
    assert props["scaling"]["properties"]["maxScale"]["maximum"] == limits.SCALE_MAX
    assert props["async"]["properties"]["maxRetries"]["maximum"] == limits.ASYNC_MAX_RETRIES_MAX
    assert limits.MEMORY_MIN in props["memory"]["x-kubernetes-validations"][0]["rule"]


def test_every_cross_field_rule_of_the_model_is_in_the_crd() -> None:
    cel = {rule["rule"] for rule in spec_schema()["x-kubernetes-validations"]}
    assert cel == {rule.cel for rule in FunctionSpec.RULES}


def test_schema_is_structural() -> None:
    """No construct the API server refuses in a structural schema."""
    text = yaml.safe_dump(function_crd())
    for forbidden in ("$ref", "anyOf", "oneOf", "additionalProperties: false", "title:", "const:"):
        assert forbidden not in text


def test_kubectl_get_shows_ready_replicas_url_triggers_age() -> None:
    version = function_crd()["spec"]["versions"][0]
    names = [column["name"] for column in version["additionalPrinterColumns"]]
    assert names[:6] == ["Ready", "Replicas", "Desired", "URL", "Triggers", "Age"]
    assert version["subresources"] == {"status": {}}
    assert function_crd()["spec"]["names"]["shortNames"] == ["fn"]
