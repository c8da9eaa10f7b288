"""Turning a Function object as the API server returns it into the validated model.

The gateway's discovery, the operator's reconcile and the operator's autoscaler all read
Functions from the API; they share this one rule about what is kept:

- `status` is left out: it is written by the operator, routing and reconciling act on the
  spec alone, and a status the model does not know must not stop a function from serving;
- of the metadata only what the platform reads is kept (name, namespace, labels,
  annotations, generation, uid), so thousands of Functions stay small in memory and
  server-set fields (managedFields, resourceVersion, ...) are never refused as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kubefaas.api import Function, parse_function

KEPT_METADATA: Final = ("name", "namespace", "labels", "annotations", "generation", "uid")


def object_key(obj: Mapping[str, Any]) -> str:
    """`namespace/name` of an API object."""
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def function_from_object(obj: Mapping[str, Any]) -> Function:
    """The Function an API object describes; raises `InvalidFunction` naming the object."""
    metadata = obj.get("metadata") or {}
    kept = {k: metadata[k] for k in KEPT_METADATA if metadata.get(k) is not None}
    document = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": kept,
        "spec": obj.get("spec"),
    }
    return parse_function(document, source=f"Function {object_key(obj)}")
