"""Appliers: bring one child object in line with what a builder produced, idempotently.

Create when absent; when present, compare (`drift`) and replace only what drifted, with
the live resourceVersion, so a concurrent writer (the autoscaler, a person, a second
reconcile) makes the write fail with 409 instead of being overwritten; the applier then
reads again and decides again. A reconcile that changes nothing writes nothing.

Replicas: a new Deployment is created with `minScale` replicas; afterwards the replica
count is never written except to raise it to `minScale`, and a repair carries the live
count. (Not server-side apply: a field manager that once applied `spec.replicas` and later
omits it makes the API server drop the field, resetting the Deployment to 1 replica.)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kubefaas import limits, naming
from kubefaas.kubeapi import ApiError
from kubefaas_operator import drift
from kubefaas_operator.kube_sync import Kube, namespaced

MAX_ATTEMPTS = 5
"""Reads and writes per object before a run of 409s is reported as an error."""

FUNCTION_GROUP_VERSION = f"{limits.API_GROUP}/{limits.API_VERSION}"


@dataclass(frozen=True)
class Applied:
    """The live object after `ensure_*`, and what it took."""

    object: dict[str, Any]
    action: str
    """created | unchanged | repaired | recreated | scaled"""
    drift: list[str] = field(default_factory=list)

    def describe(self) -> str:
        meta = self.object.get("metadata", {})
        text = f"{self.action} {self.object.get('kind', 'object')} {meta.get('name')}"
        return f"{text} (drifted: {', '.join(self.drift)})" if self.drift else text


class NameConflictError(Exception):
    """The child's name is taken by an object this Function does not control."""

    def __init__(self, kind: str, name: str, owner: str | None) -> None:
        self.kind = kind
        self.name = name
        self.owner = owner
        by = f"an object with uid {owner}" if owner else "nobody (created by hand?)"
        super().__init__(
            f"{kind} {name!r} already exists and is controlled by {by}; "
            "delete it or rename the Function"
        )


def function_path(namespace: str, name: str | None = None) -> str:
    return namespaced(FUNCTION_GROUP_VERSION, limits.PLURAL, namespace, name)


def read_function(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(function_path(namespace, name))


def read_config_map(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(namespaced("v1", "configmaps", namespace, name))


def read_deployment(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(namespaced("apps/v1", "deployments", namespace, name))


def patch_function_status(
    kube: Kube, namespace: str, name: str, status: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Merge-patch the keys of `status` the operator owns; None if the Function is gone."""
    try:
        return kube.patch_status(function_path(namespace, name), status)
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


def _ours(desired: Mapping[str, Any], live: Mapping[str, Any]) -> None:
    """Refuse to touch an object of the same name that this Function does not control.

    An object that lost its ownerReference but still carries our labels for this Function
    is ours (repaired by re-adding the reference); anything else is someone else's.
    """
    want = desired["metadata"]["ownerReferences"][0]["uid"]
    owner = drift.controller_uid(live)
    if owner == want:
        return
    labels = live.get("metadata", {}).get("labels") or {}
    function = desired["metadata"]["labels"][naming.FUNCTION_LABEL]
    mine = (
        owner is None
        and labels.get(naming.MANAGED_BY_LABEL) == naming.MANAGED_BY
        and labels.get(naming.FUNCTION_LABEL) == function
    )
    if not mine:
        raise NameConflictError(str(desired["kind"]), str(desired["metadata"]["name"]), owner)


def _ensure(
    kube: Kube,
    desired: Mapping[str, Any],
    *,
    collection: str,
    find_drift: Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]],
    repaired: Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]],
    live: Mapping[str, Any] | None,
    when_unchanged: Callable[[dict[str, Any]], Applied | None] | None = None,
) -> Applied:
    """Create or repair; `live` is the object as just read (None: absent)."""
    path = f"{collection}/{desired['metadata']['name']}"
    current: dict[str, Any] | None = dict(live) if live is not None else None
    for attempt in range(MAX_ATTEMPTS):
        if attempt > 0:
            current = kube.get(path)
        if current is None:
            try:
                return Applied(kube.create(collection, desired), "created")
            except ApiError as exc:
                if exc.conflict:  # created meanwhile (a second reconcile): read it
                    continue
                raise
        _ours(desired, current)
        found = find_drift(desired, current)
        if not found:
            try:
                extra = when_unchanged(current) if when_unchanged is not None else None
            except ApiError as exc:
                if exc.conflict:
                    continue
                raise
            return extra if extra is not None else Applied(current, "unchanged")
        body = repaired(desired, current)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        try:
            return Applied(kube.replace(path, body), "repaired", found)
        except ApiError as exc:
            if exc.conflict or exc.not_found:
                continue
            raise
    raise ApiError(409, "Conflict", f"{path} kept changing during {MAX_ATTEMPTS} attempts")


class _Unread(enum.Enum):
    UNREAD = enum.auto()


UNREAD: Final = _Unread.UNREAD
"""`ensure_*(live=UNREAD)`: the caller has not read the object; it is read first.
`live=None` instead says "probably absent" (a Function just created): the object is
created straight away, and only a 409 makes the applier read and compare it."""


LiveHint = Mapping[str, Any] | Literal[_Unread.UNREAD] | None


def _read(kube: Kube, path: str, live: LiveHint) -> Mapping[str, Any] | None:
    return kube.get(path) if live is UNREAD else live


def ensure_config_map(
    kube: Kube, desired: Mapping[str, Any], *, live: LiveHint = UNREAD
) -> Applied:
    """Create or repair the code ConfigMap (its files must be exactly the inline code)."""
    meta = desired["metadata"]
    collection = namespaced("v1", "configmaps", meta["namespace"])
    return _ensure(
        kube,
        desired,
        collection=collection,
        find_drift=drift.config_map_drift,
        repaired=drift.repaired_config_map,
        live=_read(kube, f"{collection}/{meta['name']}", live),
    )


def ensure_service(kube: Kube, desired: Mapping[str, Any], *, live: LiveHint = UNREAD) -> Applied:
    """Create or repair the Service (cluster IPs kept: they are immutable)."""
    meta = desired["metadata"]
    collection = namespaced("v1", "services", meta["namespace"])
    return _ensure(
        kube,
        desired,
        collection=collection,
        find_drift=drift.service_drift,
        repaired=drift.repaired_service,
        live=_read(kube, f"{collection}/{meta['name']}", live),
    )


NETWORK_POLICY_GROUP_VERSION: Final = "networking.k8s.io/v1"


def network_policy_path(namespace: str, name: str) -> str:
    return namespaced(NETWORK_POLICY_GROUP_VERSION, "networkpolicies", namespace, name)


def ensure_network_policy(
    kube: Kube, desired: Mapping[str, Any], *, live: LiveHint = UNREAD
) -> Applied:
    """Create or repair a Function's NetworkPolicy (its spec must be exactly ours)."""
    meta = desired["metadata"]
    collection = namespaced(NETWORK_POLICY_GROUP_VERSION, "networkpolicies", meta["namespace"])
    return _ensure(
        kube,
        desired,
        collection=collection,
        find_drift=drift.network_policy_drift,
        repaired=drift.repaired_network_policy,
        live=_read(kube, f"{collection}/{meta['name']}", live),
    )


def ensure_deployment(
    kube: Kube,
    desired: Mapping[str, Any],
    *,
    live: LiveHint = UNREAD,
) -> Applied:
    """Create or repair the Deployment without ever lowering its replica count.

    `desired["spec"]["replicas"]` is the floor (`minScale`; the live count when the caller
    built it with a hint). `live` is the object as the caller just read it (None: absent),
    which saves a read; by default it is read here.
    """
    meta = desired["metadata"]
    collection = namespaced("apps/v1", "deployments", meta["namespace"])
    path = f"{collection}/{meta['name']}"
    floor = int(desired["spec"]["replicas"])
    live = _read(kube, path, live)

    if live is not None and drift.selector_changed(desired, live):
        # The selector is immutable: only a new object can carry ours. The old one's pods
        # go with it (background propagation); the autoscaler brings capacity back.
        _ours(desired, live)
        kube.delete(path)
        created = ensure_deployment(kube, desired, live=None)
        return Applied(created.object, "recreated", ["spec.selector"])

    def raise_to_floor(current: dict[str, Any]) -> Applied | None:
        replicas = current.get("spec", {}).get("replicas")
        if replicas is None or int(replicas) >= floor:
            return None
        patch = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "spec": {"replicas": floor},
        }
        return Applied(kube.patch(path, patch), "scaled", [f"spec.replicas {replicas}->{floor}"])

    return _ensure(
        kube,
        desired,
        collection=collection,
        find_drift=drift.deployment_drift,
        repaired=drift.repaired_deployment,
        live=live,
        when_unchanged=raise_to_floor,
    )


def delete_if_controlled(kube: Kube, path: str, uid: str) -> bool:
    """Delete the object at `path` if the object with `uid` controls it (a stale child)."""
    live = kube.get(path)
    if live is None or drift.controller_uid(live) != uid:
        return False
    kube.delete(path)
    return True
