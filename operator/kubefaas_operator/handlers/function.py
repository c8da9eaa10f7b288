"""Function created, changed, or found at operator start: reconcile it.

All three causes run the same level-triggered reconcile: it reads what exists rather than
trusting the diff, so a resume after a crash and an update look the same to it. A problem
that may clear by itself (the code ConfigMap is about to be created, the API server
refused a write) is retried by kopf after a delay; one that needs the user or the
operator's configuration to change (an unknown runtime) fails the handler permanently,
which kopf reports as an event; the Function's status says why either way.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubefaas import limits
from kubefaas_operator import build_jobs, reconcile
from kubefaas_operator.context import OperatorContext

TRIGGERS = ("create", "update", "resume")


def reconcile_function(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int, reason: str, **_: Any
) -> None:
    context: OperatorContext = memo.context
    outcome = context.observed(
        f"function-{reason}",
        lambda: reconcile.reconcile(
            context.kube, context.config, body, new=reason == "create" and retry == 0
        ),
    )
    # One Event on the Function per reconcile that changed something (kopf's own
    # "Handler succeeded" lines are logged, not posted: see settings).
    changed = [a for a in outcome.actions if not a.startswith("unchanged")]
    if changed:
        logger.info("; ".join(changed))
        kopf.event(body, type="Normal", reason="Reconciled", message="; ".join(changed))
    for warning in outcome.warnings:
        logger.warning(warning)
    problem = outcome.problem
    if problem is None or problem.reason == build_jobs.REASON_BUILDING:
        # A build in progress is no failure: its Job's end brings the Function back
        # (handlers/builds.py), and the resync is the net.
        return
    message = f"{problem.reason}: {problem.message}"
    if problem.retry:
        raise kopf.TemporaryError(message, delay=reconcile.retry_delay(problem, retry))
    raise kopf.PermanentError(message)


def register(registry: kopf.OperatorRegistry) -> None:
    resource = (limits.API_GROUP, limits.API_VERSION, limits.PLURAL)
    kopf.on.create(*resource, id="create", registry=registry)(reconcile_function)
    kopf.on.update(*resource, id="update", registry=registry)(reconcile_function)
    kopf.on.resume(*resource, id="resume", registry=registry)(reconcile_function)
