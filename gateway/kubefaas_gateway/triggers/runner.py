"""Keeps one loop per trigger of the registry's functions (docs/architecture.md, "Triggers").

Every gateway replica runs every trigger: schedule ticks are stored once through the
queue's idempotent enqueue, and queue sources share their broker's consumer (group), so
each message goes to one replica at a time. Functions and triggers come and go with the
registry (a manifest folder, or the Function watch in a cluster); a trigger whose spec
changed is restarted. Queue lag goes to the scaling-signals board each round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from kubefaas.api import Function, QueueTrigger, Trigger
from kubefaas_gateway.state import BackgroundTask, GatewayState
from kubefaas_gateway.triggers.queue import Outcomes, QueueLoop
from kubefaas_gateway.triggers.schedule import ScheduleLoop
from kubefaas_gateway.triggers.source import Credentials, Source

log = logging.getLogger("kubefaas.gateway.triggers")


def consumer_name() -> str:
    """This gateway's name in a Redis consumer group: stable across a restart of the same
    pod or host, so a restarted gateway takes back the messages it had received."""
    return os.environ.get("KUBEFAAS_TRIGGER_CONSUMER") or (
        os.environ.get("HOSTNAME") or socket.gethostname()
    )


class TriggerRunner:
    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self._outcomes = Outcomes(state.delivery)
        self._running: dict[tuple[str, str], tuple[Trigger, asyncio.Task[None]]] = {}

    async def run(self) -> None:
        try:
            while True:
                self.reconcile()
                self._state.signals.publish_trigger_lag(self._state.triggers.lag_by_function())
                await asyncio.sleep(self._state.settings.trigger_reconcile_seconds)
        finally:
            tasks = [task for _, task in self._running.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._running.clear()

    def reconcile(self) -> None:
        wanted: dict[tuple[str, str], tuple[Function, Trigger]] = {}
        for fn in self._state.registry:
            for trigger in fn.spec.triggers:
                wanted[(fn.key, trigger.name)] = (fn, trigger)
        for key, (trigger, task) in list(self._running.items()):
            if key not in wanted or wanted[key][1] != trigger or task.done():
                task.cancel()
                del self._running[key]
                if key not in wanted:
                    self._state.triggers.forget(*key)
        for key, (fn, trigger) in wanted.items():
            if key not in self._running:
                task = asyncio.get_running_loop().create_task(
                    self._run_one(fn, trigger), name=f"trigger:{key[0]}/{key[1]}"
                )
                self._running[key] = (trigger, task)

    async def _run_one(self, fn: Function, trigger: Trigger) -> None:
        state = self._state
        try:
            if trigger.schedule is not None:
                await ScheduleLoop(
                    function=fn.key,
                    name=trigger.name,
                    config=trigger.schedule,
                    delivery=state.delivery,
                    registry=state.registry,
                    board=state.triggers,
                ).run()
            elif trigger.queue is not None:
                source = self._source(trigger.queue, await self._credentials(fn, trigger.queue))
                loop = QueueLoop(
                    function=fn.key,
                    name=trigger.name,
                    config=trigger.queue,
                    source=source,
                    delivery=state.delivery,
                    registry=state.registry,
                    board=state.triggers,
                    outcomes=self._outcomes,
                    poll_seconds=min(
                        state.settings.async_poll_interval_seconds,
                        state.settings.trigger_ack_wait_seconds / 3,
                    ),
                )
                try:
                    await loop.run()
                finally:
                    with contextlib.suppress(Exception):
                        await loop.stop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Restarted by the next reconcile round; the error shows in /internal/triggers.
            kind = "schedule" if trigger.schedule is not None else "queue"
            board_state = state.triggers.state(fn.key, trigger.name, kind)
            state.triggers.error(
                board_state, f"{type(exc).__name__}: {exc}", now=state.delivery.now()
            )
            log.exception("trigger %s/%s stopped", fn.key, trigger.name)

    async def _credentials(self, fn: Function, queue: QueueTrigger) -> Credentials:
        if queue.secret_ref is None:
            return Credentials()
        data = await self._state.secrets(fn.namespace, queue.secret_ref.name)
        if data is None:
            raise LookupError(
                f"Secret {queue.secret_ref.name!r} of namespace {fn.namespace!r} "
                "(spec.triggers[].queue.secretRef) was not found"
            )
        text = {key: value.decode("utf-8", "replace") for key, value in data.items()}
        return Credentials(
            username=text.get("username"), password=text.get("password"), token=text.get("token")
        )

    def _source(self, queue: QueueTrigger, credentials: Credentials) -> Source:
        settings = self._state.settings
        if queue.nats is not None:
            # nats-py costs about a second of CPU to import: only gateways with a NATS
            # trigger pay it.
            from kubefaas_gateway.triggers.nats_source import NatsJetStream

            return NatsJetStream(
                queue.nats,
                error_destination=queue.error_destination,
                credentials=credentials,
                ack_wait_seconds=settings.trigger_ack_wait_seconds,
                max_in_flight=queue.max_in_flight,
            )
        if queue.redis is not None:
            # Like the Redis queue backend, only gateways that use Redis import its client.
            from kubefaas_gateway.triggers.redis_source import RedisStream

            return RedisStream(
                queue.redis,
                consumer_name=consumer_name(),
                error_destination=queue.error_destination,
                credentials=credentials,
                claim_idle_seconds=settings.trigger_claim_idle_seconds,
            )
        raise ValueError("a queue trigger without a source")


def run_triggers() -> BackgroundTask:
    """The background task that runs every trigger of the gateway's functions."""

    async def run(state: GatewayState) -> None:
        await TriggerRunner(state).run()

    run.__name__ = "run_triggers"
    return run
