"""How a live child differs from what the builders want, and the body that repairs it.

Pure, like the builders. The comparison is "desired is contained in live": the API server
adds defaults (``terminationMessagePath``, ``clusterIP``, ``defaultMode``...), so extra
keys in a live mapping are not drift. Lists the operator owns (containers, env, volumes,
ports) must have exactly the desired length, so an env var or container added by hand is
drift. Quantities compare by value (``1.5Gi`` is the API server's ``1536Mi``).
``spec.replicas`` is never compared: the autoscaler owns it.

The repair is a whole-object replace (PUT) carrying the live ``resourceVersion``: if
anyone (the autoscaler scaling, a person editing) wrote in between, the API server
answers 409 and nothing is overwritten; the caller reads again and retries.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from kubefaas import limits
from kubefaas.api import API_VERSION, Function

QUANTITY_KEYS = frozenset({"cpu", "memory", "ephemeral-storage", "sizeLimit"})


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)(m|[KMGTPE]i|[kMGTPE])?$")
_FACTORS: dict[str | None, Decimal] = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{f"{s}i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def _quantity(value: Any) -> Decimal | None:
    """A resource quantity's exact value ("500m" == "0.5", "1536Mi" == "1.5Gi")."""
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _FACTORS[match.group(2)]
    except InvalidOperation:
        return None


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where `live` does not hold what `desired` says (see the module docstring)."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in live:
                found.append(where)
            elif key in QUANTITY_KEYS and not isinstance(value, Mapping):
                if _quantity(value) != _quantity(live[key]):
                    found.append(where)
            else:
                found.extend(differences(value, live[key], where))
        return found
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found.extend(differences(want, have, f"{path}[{index}]"))
        return found
    return [] if desired == live else [path]


def controller_uid(live: Mapping[str, Any]) -> str | None:
    """The uid of the object controlling `live` (its controller ownerReference), if any."""
    for ref in live.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def controlled_by(child: Mapping[str, Any], fn: Function) -> bool:
    """True when `fn` is the controller of `child` (ownerReference uid, kind and apiVersion).

    A Deployment of the same name and labels that the Function does not own is someone
    else's: the autoscaler never scales it (see docs/architecture.md).
    """
    uid = fn.metadata.uid
    if not uid:
        return False
    return any(
        ref.get("controller") is True
        and ref.get("uid") == uid
        and ref.get("kind") == limits.KIND
        and ref.get("apiVersion") == API_VERSION
        for ref in child.get("metadata", {}).get("ownerReferences") or []
    )


def _metadata_drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    found = differences(
        desired["metadata"].get("labels", {}), live.get("metadata", {}).get("labels") or {}
    )
    drift = [f"metadata.labels.{key}" for key in found]
    want_uid = desired["metadata"]["ownerReferences"][0]["uid"]
    if controller_uid(live) != want_uid:
        drift.append("metadata.ownerReferences")
    return drift


def deployment_drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Paths of `live` (a Deployment) to repair; empty when it is as it should be."""
    want = {k: v for k, v in desired["spec"].items() if k != "replicas"}
    drift = _metadata_drift(desired, live)
    drift.extend(f"spec.{path}" for path in differences(want, live.get("spec", {})))
    # A selector with more labels than ours would still be contained: compare exactly.
    if live.get("spec", {}).get("selector") != desired["spec"]["selector"]:
        drift.append("spec.selector")
    return sorted(set(drift))


def service_drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Paths of `live` (a Service) to repair; an extra selector label is drift too."""
    drift = _metadata_drift(desired, live)
    drift.extend(f"spec.{path}" for path in differences(desired["spec"], live.get("spec", {})))
    if live.get("spec", {}).get("selector") != desired["spec"]["selector"]:
        drift.append("spec.selector")
    return sorted(set(drift))


def config_map_drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Paths of `live` (a code ConfigMap) to repair: its files must be exactly the code."""
    drift = _metadata_drift(desired, live)
    if (live.get("data") or {}) != desired["data"]:
        drift.append("data")
    if live.get("binaryData"):
        drift.append("binaryData")
    return drift


def network_policy_drift(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Paths of `live` (a Function's NetworkPolicy) to repair. The spec must be exactly ours:
    a peer or port added by hand would let someone past the gateway."""
    drift = _metadata_drift(desired, live)
    live_spec = live.get("spec", {})
    for key, want in desired["spec"].items():
        if live_spec.get(key) != want:
            drift.append(f"spec.{key}")
    return sorted(set(drift))


def selector_changed(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """A Deployment's selector is immutable: a different one means delete and recreate."""
    return bool(live.get("spec", {}).get("selector") != desired["spec"]["selector"])


def _merged_metadata(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """Desired metadata, keeping what others put there (annotations, extra owners...)."""
    live_meta = live.get("metadata", {})
    meta = copy.deepcopy(dict(live_meta))
    meta.pop("managedFields", None)
    meta["labels"] = {**(live_meta.get("labels") or {}), **desired["metadata"]["labels"]}
    ours = desired["metadata"]["ownerReferences"]
    others = [
        ref
        for ref in live_meta.get("ownerReferences") or []
        if not ref.get("controller") and ref.get("uid") != ours[0]["uid"]
    ]
    meta["ownerReferences"] = [*copy.deepcopy(ours), *others]
    return meta


def repaired_deployment(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body that makes `live` match `desired`, keeping the live replica count.

    The pod template is replaced whole (a container or env var added by hand goes), but
    annotations others put on it (``kubectl rollout restart``) are kept so a repair does
    not undo them.
    """
    body = copy.deepcopy(dict(desired))
    body["metadata"] = _merged_metadata(desired, live)
    live_spec = live.get("spec", {})
    live_replicas = live_spec.get("replicas")
    if live_replicas is not None:
        body["spec"]["replicas"] = max(int(live_replicas), int(desired["spec"]["replicas"]))
    template_meta = body["spec"]["template"]["metadata"]
    live_annotations = live_spec.get("template", {}).get("metadata", {}).get("annotations") or {}
    template_meta["annotations"] = {**live_annotations, **template_meta["annotations"]}
    body.pop("status", None)
    return body


def repaired_service(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body for a Service: the live spec (cluster IPs are immutable) with ours over it."""
    body = copy.deepcopy(dict(desired))
    body["metadata"] = _merged_metadata(desired, live)
    spec = copy.deepcopy(dict(live.get("spec", {})))
    spec.update(copy.deepcopy(dict(desired["spec"])))
    body["spec"] = spec
    return body


def repaired_network_policy(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body for a Function's NetworkPolicy: exactly the desired spec."""
    body = copy.deepcopy(dict(desired))
    body["metadata"] = _merged_metadata(desired, live)
    return body


def repaired_config_map(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body for the code ConfigMap: exactly the desired files."""
    body = copy.deepcopy(dict(desired))
    body["metadata"] = _merged_metadata(desired, live)
    return body
