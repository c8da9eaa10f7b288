"""Prometheus metrics of the operator's reconciles, served on their own port.

What an operator of the platform watches: how many reconciles, by trigger and result; how
long they take; how often a child had to be created or repaired (drift means something
else writes to the Function's objects).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

from kubefaas_operator.reconcile import Outcome

RECONCILES = Counter(
    "kubefaas_operator_reconciles_total",
    "Function reconciles, by what triggered them and how they ended.",
    ["trigger", "result"],
)
RECONCILE_SECONDS = Histogram(
    "kubefaas_operator_reconcile_duration_seconds",
    "Time to reconcile one Function (API calls included).",
    ["trigger"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHILD_WRITES = Counter(
    "kubefaas_operator_child_writes_total",
    "Children created, repaired after drift, recreated or scaled up to minScale.",
    ["action"],
)


def result_of(outcome: Outcome | None) -> str:
    if outcome is None:
        return "error"
    if outcome.skipped:
        return "skipped"
    if outcome.problem is not None:
        return "not_ready"
    return "ready"


def observe(trigger: str, outcome: Outcome | None, seconds: float) -> None:
    """Count one reconcile (`outcome` None: it raised)."""
    RECONCILES.labels(trigger=trigger, result=result_of(outcome)).inc()
    RECONCILE_SECONDS.labels(trigger=trigger).observe(seconds)
    for action in outcome.actions if outcome is not None else ():
        verb = action.split(" ", 1)[0]
        if verb != "unchanged":
            CHILD_WRITES.labels(action=verb).inc()


def serve(port: int) -> None:
    """Serve ``/metrics`` on `port` (all interfaces) from a daemon thread."""
    start_http_server(port)
