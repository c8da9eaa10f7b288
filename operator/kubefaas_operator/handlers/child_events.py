"""A Function's Deployment, Service, code ConfigMap or NetworkPolicy changed or went away.

Deleted or drifted (edited by hand): reconcile the parent Function, which recreates or
repairs it. A Deployment that only moved its own status (scaled by the autoscaler, pods
became ready): refresh the Function's replica counts and readiness.

The watches are filtered server-side by our labels (see `settings`), so the operator
never streams the cluster's other ConfigMaps or Deployments.
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from kubefaas import naming
from kubefaas_operator import reconcile
from kubefaas_operator.context import OperatorContext

CHILD_LABELS: dict[str, Any] = {
    naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
    naming.FUNCTION_LABEL: kopf.PRESENT,
}
CHILD_SELECTOR = f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY},{naming.FUNCTION_LABEL}"
"""The same filter as a server-side label selector for the watch requests."""

CHILD_RESOURCES = {
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("", "v1", "services"),
    "ConfigMap": ("", "v1", "configmaps"),
    "NetworkPolicy": ("networking.k8s.io", "v1", "networkpolicies"),
}


def _handler(kind: str) -> Any:
    def on_child_event(
        type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        context: OperatorContext = memo.context
        outcome = context.observed(
            f"child-{kind.lower()}",
            lambda: reconcile.on_child_event(
                context.kube, context.config, kind=kind, event_type=type, child=body
            ),
        )
        changed = [a for a in outcome.actions if not a.startswith("unchanged")]
        if changed and outcome.subject is not None:
            # On the Function, where `kubectl describe fn` shows who undid a hand edit.
            message = f"{kind} {body.get('metadata', {}).get('name')} changed by someone else: "
            subject = kopf.Body(cast(kopf.RawBody, outcome.subject))
            kopf.event(
                subject, type="Normal", reason="Repaired", message=message + "; ".join(changed)
            )
        if changed:
            logger.info("; ".join(changed))
        if outcome.problem is not None:
            logger.warning(f"{outcome.problem.reason}: {outcome.problem.message}")

    on_child_event.__name__ = f"on_{kind.lower()}_event"
    return on_child_event


def register(registry: kopf.OperatorRegistry) -> None:
    for kind, (group, version, plural) in CHILD_RESOURCES.items():
        kopf.on.event(
            group=group,
            version=version,
            plural=plural,
            labels=CHILD_LABELS,
            id=f"{kind.lower()}-event",
            registry=registry,
        )(_handler(kind))
