"""Generate the Function CRD from the Python model (`crds/function.yaml`).

The model in `kubefaas.api` is the single source: this module turns pydantic's JSON schema
into a structural OpenAPI v3 schema the API server accepts: `$ref`s inlined, `Optional`
unions collapsed (a null is pruned by the API server), titles dropped, `additionalProperties:
false` dropped (structural schemas forbid it; unknown fields are refused by the API server's
strict field validation), and each model's cross-field `Rule`s emitted as CEL
`x-kubernetes-validations`. A test regenerates it and compares with the committed file.
"""

from __future__ import annotations

from typing import Any

import yaml

from kubefaas import limits
from kubefaas.api import NAME_RULES, FunctionSpec, FunctionStatus

# Nested objects whose fields all have defaults: the API server fills them in, so
# `kubectl get fn -o yaml` shows the effective scaling and async settings. Their own
# default is the object of their fields' defaults.
_DEFAULTED_OBJECTS = {"scaling", "async"}

_KEEP = {
    "type",
    "description",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
    "items",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "properties",
    "required",
    "additionalProperties",
    "format",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
        return merged
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express union {node['anyOf']} in a structural schema")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return {**_resolve(branches[0], defs), **rest}
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "const":
            out["enum"] = [value]
        elif key in _KEEP:
            out[key] = value
    if out.get("default", 0) is None:
        del out["default"]
    if "properties" in out:
        out["properties"] = {
            name: _structural(child, defs) for name, child in out["properties"].items()
        }
        for name in _DEFAULTED_OBJECTS & set(out["properties"]):
            child = out["properties"][name]
            # The full defaults, not `{}`: the API server checks a default against the
            # object's CEL rules as it stands, and `self.minScale` on `{}` is an error
            # ("no such key") that makes the whole CRD invalid.
            child.setdefault(
                "default",
                {
                    key: prop["default"]
                    for key, prop in child.get("properties", {}).items()
                    if "default" in prop
                },
            )
        out["type"] = "object"
    if "items" in out:
        out["items"] = _structural(out["items"], defs)
    additional = out.get("additionalProperties")
    if additional is False:
        del out["additionalProperties"]
    elif additional is True:
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(additional, dict):
        out["additionalProperties"] = _structural(additional, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _schema_of(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}))


def openapi_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of the Function kind."""
    return {
        "type": "object",
        "description": "A serverless function: handler code, runtime, scaling and async policy.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _schema_of(FunctionSpec),
            "status": _schema_of(FunctionStatus),
        },
        "x-kubernetes-validations": [dict(rule) for rule in NAME_RULES],
    }


PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "URL", "type": "string", "jsonPath": ".status.url"},
    {"name": "Triggers", "type": "string", "jsonPath": ".status.triggersSummary"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Reason",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
]


def function_crd() -> dict[str, Any]:
    """The CustomResourceDefinition object for `functions.kubefaas.io`."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{limits.PLURAL}.{limits.API_GROUP}"},
        "spec": {
            "group": limits.API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": limits.KIND,
                "listKind": f"{limits.KIND}List",
                "plural": limits.PLURAL,
                "singular": limits.SINGULAR,
                "shortNames": list(limits.SHORT_NAMES),
                "categories": ["kubefaas"],
            },
            "versions": [
                {
                    "name": limits.API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full: anchors would puzzle a reader of the CRD."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated from kubefaas/api.py by `make crds` (kubefaas crd). Do not edit.\n"


def crd_yaml() -> str:
    """The committed text of crds/function.yaml."""
    return HEADER + yaml.dump(function_crd(), Dumper=_Dumper, sort_keys=False, width=100)
