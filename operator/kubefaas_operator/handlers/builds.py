"""A build Job changed (docs/packaging.md, "On a cluster: the build Job").

When a Job of a Function finishes or goes away, reconcile the Function: it reads the
Job's result (`builds.ensure`), records `status.image` and the `Built` condition, and rolls
the Deployment onto the new image. A running Job's own updates need nothing.

The watch is filtered server-side by the Jobs' labels (see `settings`).
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from kubefaas import naming
from kubefaas_operator import apply, build_jobs, reconcile
from kubefaas_operator.context import OperatorContext

BUILD_LABELS: dict[str, Any] = {
    naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
    naming.COMPONENT_LABEL: build_jobs.BUILD_COMPONENT,
}
BUILD_SELECTOR = (
    f"{naming.MANAGED_BY_LABEL}={naming.MANAGED_BY},"
    f"{naming.COMPONENT_LABEL}={build_jobs.BUILD_COMPONENT}"
)
"""The same filter as a server-side label selector for the watch requests."""
JOB_RESOURCE = ("batch", "v1", "jobs")


def on_job_event(
    type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    if type != "DELETED" and not build_jobs.finished(body):
        return
    parent = reconcile.parent_of(body)
    if parent is None:
        return
    context: OperatorContext = memo.context

    def run() -> reconcile.Outcome:
        function = apply.read_function(context.kube, *parent)
        if function is None:
            return reconcile.Outcome(skipped=True)
        return reconcile.reconcile(context.kube, context.config, function)

    outcome = context.observed("build-job", run)
    changed = [a for a in outcome.actions if not a.startswith("unchanged")]
    if changed:
        logger.info("; ".join(changed))
    if type == "DELETED" or outcome.subject is None:
        return
    # Once per finished Job, on the Function, where `kubectl describe fn` shows it.
    for condition in (outcome.status or {}).get("conditions") or []:
        if condition.get("type") != build_jobs.CONDITION_BUILT:
            continue
        reason = str(condition.get("reason"))
        if reason in (build_jobs.REASON_BUILT, build_jobs.REASON_BUILD_FAILED):
            kopf.event(
                kopf.Body(cast(kopf.RawBody, outcome.subject)),
                type="Normal" if reason == build_jobs.REASON_BUILT else "Warning",
                reason=reason,
                message=str(condition.get("message", "")),
            )


def register(registry: kopf.OperatorRegistry) -> None:
    group, version, plural = JOB_RESOURCE
    kopf.on.event(
        group=group,
        version=version,
        plural=plural,
        labels=BUILD_LABELS,
        id="build-job-event",
        registry=registry,
    )(on_job_event)
