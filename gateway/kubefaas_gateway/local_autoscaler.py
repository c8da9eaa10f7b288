"""Local mode's autoscaler: the decider running inside the gateway process (docs/architecture.md,
"Autoscaling").

In a cluster the operator's autoscaler reads `/internal/stats` from every gateway and
scales Deployments. Local mode has one gateway and no Deployments, so this loop reads the
same signals straight from the tracker, runs the same pure `kubefaas.scaling.decide` every
`limits.AUTOSCALER_TICK_SECONDS` and calls `backend.scale(fn, replicas)`.

Its decisions go on the scaling-signals board (`signals.ScalingSignals`), where the gauges
and `/internal/stats` read them; the async queue depths it scales on come from the same
board. Cluster mode never runs it: there the operator is the one writer of replicas and
the gateway only activates a function from zero (docs/architecture.md, "Autoscaling").

Concurrency: the tick runs on the gateway's event loop. It reads the tracker and decides
for every function without suspending, then applies each change in its own task, so one
function's slow scale-down (instances finishing their work after SIGTERM) never delays the
next tick or another function. Between the decision and the task running, a request may
arrive for a function being scaled to zero; each task therefore re-checks, in the same
step that makes the backend retire instances, that nothing is in flight or waiting before
it removes the last ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from kubefaas.api import Function
from kubefaas.provisioned import provisioned_min_scale
from kubefaas.scaling import (
    DEFAULT_TUNING,
    Decision,
    Observation,
    ScalingState,
    Tuning,
    decide,
    initial_state,
)
from kubefaas_gateway.backends.base import ScalableBackend
from kubefaas_gateway.signals import ScalingSignals, read_signals
from kubefaas_gateway.state import BackgroundTask, GatewayState
from kubefaas_gateway.tracker import Tracker

log = logging.getLogger("kubefaas.gateway.autoscaler")


class LocalAutoscaler:
    """Decides and applies replicas for every function of the registry, every tick.

    Each tick's results go on the `signals` board (and stay in `decisions`);
    `tick()` runs one round and is what tests call.
    """

    def __init__(
        self,
        *,
        functions: Callable[[], Iterable[Function]],
        tracker: Tracker,
        backend: ScalableBackend,
        signals: ScalingSignals,
        tuning: Tuning = DEFAULT_TUNING,
    ) -> None:
        self._functions = functions
        self._tracker = tracker
        self._backend = backend
        self._signals = signals
        self._tuning = tuning
        self._states: dict[str, ScalingState] = {}
        self._applying: dict[str, asyncio.Task[None]] = {}
        self.decisions: dict[str, Decision] = {}
        self.queued: dict[str, int] = {}

    async def run(self) -> None:
        """Tick forever (cancelled at shutdown, which also ends any scale in progress)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                try:
                    await self.tick()
                except Exception:
                    log.exception("autoscaler tick failed")
                elapsed = loop.time() - started
                await asyncio.sleep(max(0.0, self._tuning.tick_seconds - elapsed))
        finally:
            for task in self._applying.values():
                task.cancel()
            await asyncio.gather(*self._applying.values(), return_exceptions=True)

    async def tick(self) -> dict[str, Decision]:
        """Decide every function now and start applying the changes."""
        # The delivery's last published depths: no I/O, so a queue that is down (its
        # depths simply stop changing) never stops scaling.
        self.queued = dict(self._signals.queue_depths)
        # From here to the end of the loop nothing suspends: the decisions and the tasks
        # that apply them are based on one consistent view of the tracker.
        tracker = self._tracker
        now = tracker.now()
        wall = time.time()
        seen = set()
        for fn in self._functions():
            key = fn.key
            seen.add(key)
            signals = read_signals(
                tracker, key, queued=self.queued.get(key, 0), now=now, tuning=self._tuning
            )
            ready = self._backend.ready_count(fn)
            state = self._states.get(key) or initial_state(now, replicas=ready)
            previous = state.desired
            decision = decide(
                state,
                Observation(
                    stable_concurrency=signals.stable_concurrency,
                    panic_concurrency=signals.panic_concurrency,
                    in_flight=signals.in_flight,
                    pending=signals.pending,
                    queued=signals.queued,
                    ready=ready,
                    last_activity=tracker.last_active(key),
                ),
                now,
                scaling=fn.spec.scaling,
                tuning=self._tuning,
                provisioned=provisioned_min_scale(fn.spec.scaling.provisioned, wall),
            )
            self._states[key] = decision.state
            self.decisions[key] = decision
            if key in self._applying:
                continue  # the previous change is still under way; decide again next tick
            # Apply a new figure, or shed instances started outside the decider (the
            # activation path). `scale` itself counts starting instances, so asking again
            # for what is already on its way costs nothing.
            if decision.replicas != previous or ready > decision.replicas:
                self._apply(fn, decision)
        for gone in set(self._states) - seen:
            del self._states[gone]
            self.decisions.pop(gone, None)
        self._signals.publish_decisions(self.decisions)
        return self.decisions

    def _apply(self, fn: Function, decision: Decision) -> None:
        key = fn.key
        task = asyncio.get_running_loop().create_task(self._scale(fn, decision))
        self._applying[key] = task
        task.add_done_callback(lambda _: self._applying.pop(key, None))

    async def _scale(self, fn: Function, decision: Decision) -> None:
        target = decision.replicas
        current = self._backend.ready_count(fn)
        load = self._tracker.load(fn.key)
        # Re-checked in the step that retires instances (see the module docstring).
        if target < current and load.pending:
            return
        if target == 0 and load.inflight:
            return
        log.info("scaling %s from %d to %d (%s)", fn.key, current, target, decision.reason)
        try:
            await self._backend.scale(fn, target)
        except Exception:
            log.exception("could not scale %s to %d", fn.key, target)


def autoscale_locally(backend: ScalableBackend) -> BackgroundTask:
    """The background task that runs the decider inside a local-mode gateway over
    `backend` (which must be the app's backend)."""

    def run(state: GatewayState) -> Awaitable[None]:
        autoscaler = LocalAutoscaler(
            functions=lambda: state.registry,
            tracker=state.tracker,
            backend=backend,
            signals=state.signals,
        )
        return autoscaler.run()

    return run
