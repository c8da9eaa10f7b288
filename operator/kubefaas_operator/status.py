"""Pure status computation: a Function's status and Ready condition from what was found.

No I/O and no kopf (an import-linter contract keeps it so): `reconcile` and the children
watch pass in the Function, its Deployment as read and the problem found, if any, plus the
time as an RFC 3339 string, and write what comes back. The children the status describes
are built in `children`.

The Ready condition's reason says where readiness came from: the first group of reasons is
derived from the Deployment, the second from a Function the operator could not turn into
children (see `NotReady`). Only the operator's own keys are written; other conditions and
`desiredReplicas` (the autoscaler's) are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubefaas import naming
from kubefaas.api import Function

# Ready condition reasons. The first group is derived from the Deployment, the second from
# a Function the operator could not turn into children.
CONDITION_READY: Final = "Ready"
REASON_DEPLOYED: Final = "Deployed"
REASON_SCALED_TO_ZERO: Final = "ScaledToZero"
REASON_RUNNING: Final = "Running"
REASON_DEPLOYMENT_MISSING: Final = "DeploymentMissing"
REASON_ROLLOUT_STUCK: Final = "RolloutStuck"
REASON_REPLICA_FAILURE: Final = "ReplicaFailure"
DEPLOYMENT_REASONS: Final = frozenset(
    {
        REASON_DEPLOYED,
        REASON_SCALED_TO_ZERO,
        REASON_RUNNING,
        REASON_DEPLOYMENT_MISSING,
        REASON_ROLLOUT_STUCK,
        REASON_REPLICA_FAILURE,
    }
)
REASON_CODE_NOT_FOUND: Final = "CodeNotFound"
REASON_HANDLER_NOT_FOUND: Final = "HandlerNotFound"
REASON_UNKNOWN_RUNTIME: Final = "UnknownRuntime"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_NAME_CONFLICT: Final = "NameConflict"
REASON_APPLY_FAILED: Final = "ApplyFailed"


@dataclass(frozen=True)
class NotReady:
    """Why a Function cannot be (fully) deployed: becomes ``Ready=False`` with this reason.

    `retry` says whether trying again later may help without the user changing the
    Function (a ConfigMap about to be created, an API error) or not (an unknown runtime).
    """

    reason: str
    message: str
    retry: bool = False


def _deployment_condition(deployment: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in deployment.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind:
            found: Mapping[str, Any] = condition
            return found
    return None


def deployment_readiness(deployment: Mapping[str, Any] | None) -> tuple[bool, str, str]:
    """(ready, reason, message) of a Function whose Deployment is as it should be."""
    if deployment is None:
        return False, REASON_DEPLOYMENT_MISSING, "the Deployment does not exist (yet)"
    failure = _deployment_condition(deployment, "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        return False, REASON_REPLICA_FAILURE, str(failure.get("message", "pods cannot be created"))
    progressing = _deployment_condition(deployment, "Progressing")
    if progressing is not None and progressing.get("status") == "False":
        return False, REASON_ROLLOUT_STUCK, str(progressing.get("message", "rollout stuck"))
    wanted = deployment.get("spec", {}).get("replicas")
    wanted = 1 if wanted is None else int(wanted)
    ready = int(deployment.get("status", {}).get("readyReplicas") or 0)
    if wanted == 0:
        return True, REASON_SCALED_TO_ZERO, "no instances; the next request starts one"
    if ready > 0:
        return True, REASON_RUNNING, f"{ready} of {wanted} instance(s) ready"
    return True, REASON_DEPLOYED, f"deployed; waiting for {wanted} instance(s) to become ready"


def _replicas(deployment: Mapping[str, Any] | None) -> tuple[int, int]:
    status = (deployment or {}).get("status") or {}
    return int(status.get("replicas") or 0), int(status.get("readyReplicas") or 0)


def _ready_condition(
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int | None,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    status = "True" if ready else "False"
    # The transition time moves only when the status flips, as `kubectl wait` and humans
    # reading "Ready since ..." expect.
    since = now
    if previous is not None and previous.get("status") == status:
        since = str(previous.get("lastTransitionTime") or now)
    condition: dict[str, Any] = {
        "type": CONDITION_READY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def ready_condition_of(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The Ready condition in a Function's status, if any."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == CONDITION_READY:
            found: Mapping[str, Any] = condition
            return found
    return None


def _with_ready(previous: Mapping[str, Any] | None, ready: dict[str, Any]) -> list[Any]:
    others = [c for c in (previous or {}).get("conditions") or [] if c.get("type") != "Ready"]
    return [*others, ready]


def build_status(
    *,
    fn: Function,
    deployment: Mapping[str, Any] | None,
    problem: NotReady | None,
    gateway_url: str,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The Function's status after a reconcile (the keys the operator owns).

    `problem` is why the children could not be brought in line, if so; else readiness
    follows the Deployment. `previous` is the current status (conditions other than Ready,
    and `desiredReplicas`, belong to others and are kept). `now` is an RFC 3339 time.
    """
    if problem is not None:
        ready, reason, message = False, problem.reason, problem.message
    else:
        ready, reason, message = deployment_readiness(deployment)
    condition = _ready_condition(
        ready=ready,
        reason=reason,
        message=message,
        generation=fn.metadata.generation,
        previous=ready_condition_of(previous),
        now=now,
    )
    replicas, ready_replicas = _replicas(deployment)
    status: dict[str, Any] = {
        "conditions": _with_ready(previous, condition),
        "replicas": replicas,
        "readyReplicas": ready_replicas,
        "url": naming.function_url(gateway_url, fn.namespace, fn.name),
    }
    if fn.metadata.generation is not None:
        status["observedGeneration"] = fn.metadata.generation
    return status


def build_problem_status(
    *,
    previous: Mapping[str, Any] | None,
    problem: NotReady,
    generation: int | None,
    now: str,
) -> dict[str, Any]:
    """The status of a Function that could not even be read as one (an invalid spec)."""
    condition = _ready_condition(
        ready=False,
        reason=problem.reason,
        message=problem.message,
        generation=generation,
        previous=ready_condition_of(previous),
        now=now,
    )
    status: dict[str, Any] = {"conditions": _with_ready(previous, condition)}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def refresh_status(
    *, previous: Mapping[str, Any] | None, deployment: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """The status after the Deployment alone changed (scaled, pods became ready).

    Replica counts follow the Deployment. The Ready condition follows it too, unless it
    holds a problem found by the last reconcile (CodeNotFound...): only a reconcile, which
    knows the Function, may clear those.
    """
    replicas, ready_replicas = _replicas(deployment)
    status: dict[str, Any] = {"replicas": replicas, "readyReplicas": ready_replicas}
    current = ready_condition_of(previous)
    if current is None or current.get("reason") in DEPLOYMENT_REASONS:
        ready, reason, message = deployment_readiness(deployment)
        generation = current.get("observedGeneration") if current is not None else None
        condition = _ready_condition(
            ready=ready,
            reason=reason,
            message=message,
            generation=int(generation) if generation is not None else None,
            previous=current,
            now=now,
        )
        status["conditions"] = _with_ready(previous, condition)
    return status


def status_differs(current: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """True when writing `wanted` would change what the user sees (times aside)."""

    def strip(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: strip(v) for k, v in value.items() if k != "lastTransitionTime"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    current = current or {}
    return any(strip(current.get(key)) != strip(value) for key, value in wanted.items())
