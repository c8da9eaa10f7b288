"""Local scale to zero: stop a function's instances once it has been idle long enough.

`idle_functions(...)` is the decision, pure and given `now`: which functions have
instances, nothing in flight or pending, and no activity for their
`scaling.scaleToZeroAfterSeconds` (0 = never; `minScale > 0` keeps them warm).
`IdleReaper` is the loop that applies it. The autoscaler's decider will replace both
with the full `decide(state, observation, now)`; only this file changes then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from kubefaas.api import Function
from kubefaas_gateway.backends.base import Backend
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.tracker import Tracker

log = logging.getLogger("kubefaas.gateway.idle")


def idle_functions(
    *, functions: Iterable[Function], tracker: Tracker, backend: Backend, now: float
) -> list[Function]:
    """Functions to scale to zero at `now` (on the tracker's clock)."""
    chosen = []
    for fn in functions:
        scaling = fn.spec.scaling
        after = scaling.scale_to_zero_after_seconds
        if after == 0 or scaling.min_scale > 0:
            continue
        instances = backend.instances(fn)
        if not instances or tracker.concurrency(fn.key) > 0:
            continue
        ready_marks = [i.ready_at for i in instances if i.ready_at is not None]
        if len(ready_marks) < len(instances):
            continue  # one is still starting: someone is about to need it
        # Idle since the last request, or since the newest instance came up if that is
        # later (an instance started by the autoscaler has not served anything yet).
        last = tracker.last_active(fn.key)
        since = max(ready_marks if last is None else [*ready_marks, last])
        if now - since >= after:
            chosen.append(fn)
    return chosen


class IdleReaper:
    """Every `interval` seconds, scale the functions `idle_functions` picks to zero."""

    def __init__(
        self,
        *,
        registry: FunctionRegistry,
        tracker: Tracker,
        backend: Backend,
        interval: float,
    ) -> None:
        self._registry = registry
        self._tracker = tracker
        self._backend = backend
        self._interval = interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.tick()

    async def tick(self) -> None:
        for fn in idle_functions(
            functions=self._registry,
            tracker=self._tracker,
            backend=self._backend,
            now=self._tracker.now(),
        ):
            idle = fn.spec.scaling.scale_to_zero_after_seconds
            log.info("scaling %s to zero after %ss idle", fn.key, idle)
            try:
                await self._backend.scale(fn, 0)
            except Exception:
                log.exception("could not scale %s to zero", fn.key)
