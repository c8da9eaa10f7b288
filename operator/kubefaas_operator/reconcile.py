"""One Function, end to end: read what exists, build what should, apply, report in status.

Level-triggered and free of kopf, so the create/update/resume handlers, the children
watch and the periodic resync all run the same code, and tests drive it with a fake API.
Every step is idempotent; a reconcile interrupted anywhere (operator killed) and run
again converges to the same objects, because every name is derived from the Function's.

Order: code ConfigMap, then Deployment (its pods mount the ConfigMap), then Service, then
NetworkPolicy (when `OperatorConfig.network_policy` is on), then stale objects, then
status. A Function that cannot be deployed (its ConfigMap missing, its runtime unknown...)
leaves its existing Deployment untouched and says why in
``status.conditions[Ready]``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubefaas import naming
from kubefaas.api import Function, InvalidFunction
from kubefaas.kubeapi import ApiError
from kubefaas.objects import function_from_object
from kubefaas_operator import (
    apply,
    build_jobs,
    builds,
    children,
    destination_status,
    drift,
    network_policy,
    status,
)
from kubefaas_operator.config import OperatorConfig
from kubefaas_operator.kube_sync import Kube, namespaced
from kubefaas_operator.status import NotReady

logger = logging.getLogger(__name__)

Clock = Callable[[], str]


def utc_now() -> str:
    """RFC 3339, second precision, as Kubernetes writes condition times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Outcome:
    """What a reconcile did and found, for the caller to log, post as events, or retry."""

    problem: NotReady | None = None
    actions: list[str] = field(default_factory=list)
    """``created Deployment hello``, ``repaired Service hello (drifted: spec.ports)``."""
    warnings: list[str] = field(default_factory=list)
    status: dict[str, Any] | None = None
    skipped: bool = False
    """True when there was nothing to do (the Function is gone or being deleted)."""
    subject: dict[str, Any] | None = None
    """The Function object reconciled, as read (to attach events to)."""

    @property
    def changed(self) -> bool:
        return any(not a.startswith("unchanged") for a in self.actions)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep plain-dict copy of a (possibly kopf-wrapped) object body."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return copy.copy(value)

    result: dict[str, Any] = convert(body)
    return result


def parse(body: Mapping[str, Any]) -> Function:
    """The Function model of an object as read from the API (kopf's body or a listed dict),
    by the one rule every reader of Functions shares (`kubefaas.objects`)."""
    return function_from_object(_plain(body))


def _code_files(config_map: Mapping[str, Any]) -> dict[str, str]:
    return {**(config_map.get("binaryData") or {}), **(config_map.get("data") or {})}


def _write_status(
    kube: Kube,
    fn: Function,
    *,
    previous: Mapping[str, Any] | None,
    deployment: Mapping[str, Any] | None,
    problem: NotReady | None,
    config: OperatorConfig,
    now: Clock,
) -> dict[str, Any]:
    moment = now()
    wanted = status.build_status(
        fn=fn,
        deployment=deployment,
        problem=problem,
        gateway_url=config.gateway_url,
        previous=previous,
        now=moment,
    )
    wanted["conditions"] = destination_status.with_destinations(
        wanted["conditions"], fn, config.destination_rule, now=moment
    )
    if status.status_differs(previous, wanted):
        apply.patch_function_status(kube, fn.namespace, fn.name, wanted)
    return wanted


def reconcile(
    kube: Kube,
    config: OperatorConfig,
    body: Mapping[str, Any],
    *,
    now: Clock = utc_now,
    new: bool = False,
) -> Outcome:
    """Bring the children of the Function `body` in line with it, and write its status.

    `new`: the Function was just created, so its children most likely do not exist yet:
    create them without reading first (a 409 falls back to read-and-compare). That halves
    the API calls of a bulk `kubectl apply`.
    """
    meta = body.get("metadata", {})
    if meta.get("deletionTimestamp"):
        return Outcome(skipped=True)
    previous = _plain(body.get("status") or {})
    outcome = Outcome(subject=_plain(body))
    try:
        fn = parse(body)
    except InvalidFunction as exc:
        # The CRD refuses such objects; one stored under an older schema can still exist.
        outcome.problem = NotReady(status.REASON_INVALID_SPEC, "; ".join(exc.problems))
        logger.warning("%s/%s is invalid: %s", meta.get("namespace"), meta.get("name"), exc)
        generation = meta.get("generation")
        wanted = status.build_problem_status(
            previous=previous,
            problem=outcome.problem,
            generation=int(generation) if generation is not None else None,
            now=now(),
        )
        if status.status_differs(previous, wanted):
            apply.patch_function_status(kube, str(meta["namespace"]), str(meta["name"]), wanted)
        outcome.status = wanted
        return outcome

    deployment: dict[str, Any] | None = None
    try:
        deployment = _apply_children(kube, config, fn, outcome, new=new, previous=previous, now=now)
    except children.UnknownRuntimeError as exc:
        outcome.problem = NotReady(status.REASON_UNKNOWN_RUNTIME, str(exc))
    except apply.NameConflictError as exc:
        outcome.problem = NotReady(status.REASON_NAME_CONFLICT, str(exc), retry=True)
    except ApiError as exc:
        if exc.namespace_terminating:
            # The namespace is being deleted: its Functions go with it, nothing to repair.
            return Outcome(skipped=True, subject=outcome.subject)
        outcome.problem = NotReady(
            status.REASON_APPLY_FAILED, f"the API server refused a change: {exc}", retry=True
        )
    if outcome.problem is not None and deployment is None:
        try:
            deployment = apply.read_deployment(kube, fn.namespace, fn.name)
        except ApiError:
            deployment = None
    outcome.status = _write_status(
        kube,
        fn,
        previous=previous,
        deployment=deployment,
        problem=outcome.problem,
        config=config,
        now=now,
    )
    return outcome


def _apply_children(
    kube: Kube,
    config: OperatorConfig,
    fn: Function,
    outcome: Outcome,
    *,
    new: bool,
    previous: dict[str, Any],
    now: Clock,
) -> dict[str, Any] | None:
    """Apply ConfigMap, Deployment, Service; set `outcome.problem` and stop if blocked.

    Returns the live Deployment (None when it was left alone because of a problem).
    """
    uid = str(fn.metadata.uid)
    ignored = children.shadowed_env(fn)
    if ignored:
        outcome.warnings.append(
            f"spec.env {', '.join(ignored)} ignored: the runtime launch contract sets them"
        )
    children.resolve_image(fn, config.runtime_images)  # UnknownRuntimeError before any write

    own_code = naming.code_config_map_name(fn.name)
    code = fn.spec.code
    files: dict[str, str] | None = None
    code_bytes: dict[str, bytes] | None = None
    if code is not None and code.path is not None:
        # A workstation folder (docs/architecture.md, "Packaging"): the cluster cannot see it.
        outcome.problem = NotReady(
            status.REASON_INVALID_SPEC,
            f"spec.code.path {code.path!r} is a folder on the machine that applied the "
            "manifest, which the cluster cannot read: run `kubefaas deploy DIR` (builds an "
            "image and applies the Function with spec.image), or put the files in "
            "spec.code.inline or a ConfigMap",
        )
        return None
    if code is not None and code.inline is not None:
        files = dict(code.inline)
        code_bytes = build_jobs.code_files(inline=files)
        applied = apply.ensure_config_map(
            kube, children.build_config_map(fn), live=None if new else apply.UNREAD
        )
        outcome.actions.append(applied.describe())
    elif code is not None and code.config_map is not None:
        source = apply.read_config_map(kube, fn.namespace, code.config_map.name)
        if source is None:
            outcome.problem = NotReady(
                status.REASON_CODE_NOT_FOUND,
                f"spec.code.configMap: ConfigMap {code.config_map.name!r} not found in "
                f"namespace {fn.namespace!r}; create it, the Function deploys then",
                retry=True,
            )
            return None
        files = _code_files(source)
        code_bytes = build_jobs.code_files(config_map=source)
        module = f"{fn.spec.handler_module}.py"
        if module not in files:
            outcome.problem = NotReady(
                status.REASON_HANDLER_NOT_FOUND,
                f"spec.handler {fn.spec.handler!r}: ConfigMap {code.config_map.name!r} has no "
                f"key {module!r} (it has: {', '.join(sorted(files)) or 'none'})",
                retry=True,
            )
            return None

    built_image: str | None = None
    if config.build is not None and build_jobs.needs_build(fn, code_bytes):
        # docs/packaging.md, "On a cluster: the build Job".
        assert code_bytes is not None
        step = builds.ensure(kube, config, fn, code_bytes, previous=previous, now=now)
        if step.action:
            outcome.actions.append(step.action)
        if step.image is None:
            outcome.problem = step.problem
            return None
        built_image = step.image
    else:
        builds.clear(kube, fn, previous)

    live = None if new else apply.read_deployment(kube, fn.namespace, fn.name)
    # A built image holds the code: the pods change with the image, not with the files.
    checksum = children.pod_checksum(fn, {"image": built_image} if built_image else files)
    version = children.function_version(
        checksum=checksum, live=live, generation=fn.metadata.generation or 1
    )
    replicas = (live or {}).get("spec", {}).get("replicas")
    desired = children.build_deployment(
        fn,
        image_for_runtime=config.runtime_images,
        replicas_hint=int(replicas) if replicas is not None else None,
        checksum=checksum,
        version=version,
        built_image=built_image,
    )
    applied = apply.ensure_deployment(kube, desired, live=live)
    outcome.actions.append(applied.describe())
    deployment = applied.object

    service = apply.ensure_service(
        kube, children.build_service(fn), live=None if new else apply.UNREAD
    )
    outcome.actions.append(service.describe())
    _apply_network_policy(kube, config, fn, outcome, new=new)

    if files is not None and (code is None or code.inline is None):
        # The code moved from inline to a ConfigMap of the user's: ours is stale.
        path = namespaced("v1", "configmaps", fn.namespace, own_code)
        if apply.delete_if_controlled(kube, path, uid):
            outcome.actions.append(f"deleted ConfigMap {own_code} (code now in a ConfigMap)")
    return deployment


def _apply_network_policy(
    kube: Kube, config: OperatorConfig, fn: Function, outcome: Outcome, *, new: bool
) -> None:
    """On: create or repair the Function's NetworkPolicy. Off: delete the one we made."""
    if config.network_policy:
        applied = apply.ensure_network_policy(
            kube, network_policy.for_config(config, fn), live=None if new else apply.UNREAD
        )
        outcome.actions.append(applied.describe())
    elif not new:
        path = apply.network_policy_path(fn.namespace, fn.name)
        if apply.delete_if_controlled(kube, path, str(fn.metadata.uid)):
            outcome.actions.append(f"deleted NetworkPolicy {fn.name} (network policies off)")


# --- children -----------------------------------------------------------------------------

CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "NetworkPolicy")


def parent_of(child: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the Function a child belongs to, from its owner or its label."""
    meta = child.get("metadata", {})
    namespace = meta.get("namespace")
    if not namespace:
        return None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Function" and ref.get("controller"):
            return str(namespace), str(ref.get("name"))
    name = (meta.get("labels") or {}).get(naming.FUNCTION_LABEL)
    return (str(namespace), str(name)) if name else None


def child_drift(
    kind: str,
    fn: Function,
    child: Mapping[str, Any],
    config: OperatorConfig,
    *,
    status: Mapping[str, Any] | None = None,
) -> list[str]:
    """What differs between a live child and the Function, without any API call.

    `status` is the Function object's status: a built image (`status.image`) is what its
    Deployment runs.

    The Deployment is compared with the checksum and version it carries (the code they
    hash is checked by a full reconcile); an unknown runtime is not drift (the reconcile
    reports it).
    """
    if kind == "Deployment":
        replicas = child.get("spec", {}).get("replicas")
        try:
            desired = children.build_deployment(
                fn,
                image_for_runtime=config.runtime_images,
                replicas_hint=int(replicas) if replicas is not None else None,
                checksum=children.live_checksum(child) or "",
                version=children.live_version(child) or fn.metadata.generation or 1,
                built_image=build_jobs.running_image(fn, status),
            )
        except children.UnknownRuntimeError:
            return []
        return drift.deployment_drift(desired, child)
    if kind == "Service":
        return drift.service_drift(children.build_service(fn), child)
    if kind == "ConfigMap":
        code = fn.spec.code
        if code is None or code.inline is None:
            return ["(stale: the code is no longer inline)"]
        return drift.config_map_drift(children.build_config_map(fn), child)
    if kind == "NetworkPolicy":
        if not config.network_policy:
            return ["(stale: function network policies are off)"]
        return drift.network_policy_drift(network_policy.for_config(config, fn), child)
    raise ValueError(f"not a child kind: {kind}")


def on_child_event(
    kube: Kube,
    config: OperatorConfig,
    *,
    kind: str,
    event_type: str | None,
    child: Mapping[str, Any],
    now: Clock = utc_now,
) -> Outcome:
    """React to a watch event on a child: repair, recreate, or refresh the parent's status.

    A deleted child, or one that drifted, gets a full reconcile of its Function; a
    Deployment that only changed its own status (scaled, pods ready) updates the
    Function's replica counts and readiness.
    """
    parent = parent_of(child)
    if parent is None:
        return Outcome(skipped=True)
    body = apply.read_function(kube, *parent)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return Outcome(skipped=True)
    if event_type == "DELETED":
        return reconcile(kube, config, body, now=now)
    owner = drift.controller_uid(child)
    if owner is not None and owner != body["metadata"].get("uid"):
        return Outcome(skipped=True)  # a child of an earlier Function of that name
    try:
        fn = parse(body)
    except InvalidFunction:
        return Outcome(skipped=True)
    previous = body.get("status") or {}
    # A Function changed since its last reconcile: its own handler is about to apply the
    # change, so a difference now is that change, not someone else's edit.
    settled = previous.get("observedGeneration") == body["metadata"].get("generation")
    if settled and child_drift(kind, fn, child, config, status=previous):
        return reconcile(kube, config, body, now=now)
    outcome = Outcome()
    if kind == "Deployment":
        wanted = status.refresh_status(previous=previous, deployment=child, now=now())
        if status.status_differs(previous, wanted):
            apply.patch_function_status(kube, fn.namespace, fn.name, wanted)
        outcome.status = wanted
    return outcome


# How soon to try a Function again that could not be deployed. A missing ConfigMap is
# usually being created right now (`kubectl apply -f dir/` applies the Function first when
# it sorts first), so look again soon, then settle into a slower pace.
CODE_NOT_FOUND_RETRY_SECONDS = 3.0
SLOW_RETRY_SECONDS = 30.0
FAST_RETRIES = 20
API_ERROR_BACKOFF_SECONDS = (2.0, 5.0, 10.0, 30.0, 60.0)


def retry_delay(problem: NotReady, retry: int) -> float:
    """Seconds before retrying a Function after `retry` earlier attempts failed."""
    if problem.reason == status.REASON_CODE_NOT_FOUND:
        return CODE_NOT_FOUND_RETRY_SECONDS if retry < FAST_RETRIES else SLOW_RETRY_SECONDS
    if problem.reason == status.REASON_APPLY_FAILED:
        return API_ERROR_BACKOFF_SECONDS[min(retry, len(API_ERROR_BACKOFF_SECONDS) - 1)]
    return SLOW_RETRY_SECONDS if retry >= 3 else 10.0
