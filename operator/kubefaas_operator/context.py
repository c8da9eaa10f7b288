"""What every handler and loop of one operator process shares: settings and the API door.

Handed to kopf handlers through kopf's `memo`, and to the background loops directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubefaas_operator import operator_metrics
from kubefaas_operator.config import OperatorConfig
from kubefaas_operator.kube_sync import Kube
from kubefaas_operator.reconcile import Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorContext:
    config: OperatorConfig
    kube: Kube

    def observed(self, trigger: str, work: Callable[[], Outcome]) -> Outcome:
        """Run one reconcile-like `work`, counting it in the metrics by `trigger`."""
        started = time.perf_counter()
        outcome: Outcome | None = None
        try:
            outcome = work()
            return outcome
        finally:
            operator_metrics.observe(trigger, outcome, time.perf_counter() - started)
