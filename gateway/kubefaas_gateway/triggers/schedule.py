"""One schedule trigger's loop: sleep to the next tick, store it as an async invocation.

The invocation id of a tick is derived from (function, trigger, tick), and stored with the
queue's idempotent enqueue: every gateway replica runs this loop, and each tick is stored
once (docs/architecture.md, "Triggers"). What to fire on waking, late or on time, and at
start-up (`catchUp`) is `kubefaas.schedule`'s pure logic.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from kubefaas.api import ScheduleTrigger
from kubefaas.schedule import ON_TIME_SECONDS, Schedule, due_ticks, startup_ticks
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.triggers.board import TriggerBoard, iso

log = logging.getLogger("kubefaas.gateway.triggers")

TRIGGER_HEADER = "x-kubefaas-trigger"
SCHEDULED_TIME_HEADER = "x-kubefaas-scheduled-time"
# A tick that could not be stored (queue unreachable) is tried again this often while on time.
STORE_RETRY_SECONDS = 0.5


def tick_id(function: str, trigger: str, tick: float) -> str:
    digest = hashlib.sha256(f"{function}\0{trigger}\0{tick:.3f}".encode()).hexdigest()
    return f"tick-{digest[:32]}"


def tick_event(function: str, trigger: str, config: ScheduleTrigger, tick: float) -> bytes:
    """The event a tick delivers: the trigger's payload, or where and when it fired."""
    if config.payload is not None:
        return json.dumps(config.payload).encode()
    return json.dumps(
        {"trigger": trigger, "function": function, "scheduledTime": tick, "time": iso(tick)}
    ).encode()


class ScheduleLoop:
    def __init__(
        self,
        *,
        function: str,
        name: str,
        config: ScheduleTrigger,
        delivery: AsyncDelivery,
        registry: FunctionRegistry,
        board: TriggerBoard,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.function, self.name, self.config = function, name, config
        self._delivery, self._registry, self._board = delivery, registry, board
        self._clock, self._sleep = clock, sleep
        self._state = board.state(function, name, "schedule")
        self._schedule = Schedule.parse(config.expression, config.timezone)

    async def run(self) -> None:
        now = self._clock()
        for tick in startup_ticks(self._schedule, now=now, catch_up=self.config.catch_up):
            await self._fire(tick)
        last = now
        while True:
            upcoming = self._schedule.next_after(last)
            self._state.next_tick = upcoming
            await self._sleep(max(0.0, upcoming - self._clock()))
            now = self._clock()
            due = due_ticks(self._schedule, last=last, now=now, catch_up=self.config.catch_up)
            if due.missed:
                log.warning("trigger %s/%s missed %d tick(s)", self.function, self.name, due.missed)
            self._board.missed(self._state, due.missed)
            for tick in due.fire:
                await self._fire(tick)
            last = max(now, last)

    async def _fire(self, tick: float) -> None:
        ident = tick_id(self.function, self.name, tick)
        headers = {
            "content-type": "application/json",
            TRIGGER_HEADER: self.name,
            SCHEDULED_TIME_HEADER: f"{tick:.3f}",
        }
        body = tick_event(self.function, self.name, self.config, tick)
        while True:
            fn = self._registry.get(self.function)
            if fn is None:
                return
            try:
                stored = await self._delivery.submit_once(
                    fn, body, invocation_id=ident, headers=headers
                )
            except Exception as exc:
                now = self._clock()
                self._board.error(self._state, f"could not store tick: {exc}", now=now)
                if now - tick > ON_TIME_SECONDS:
                    self._board.missed(self._state, 1)
                    log.exception("trigger %s/%s lost tick %s", self.function, self.name, tick)
                    return
                await self._sleep(STORE_RETRY_SECONDS)
                continue
            now = self._clock()
            self._state.last_tick = tick
            if stored:
                self._board.fired(self._state, tick=tick, now=now, invocation=ident)
                log.info(
                    "trigger %s/%s fired tick %s (%.0f ms late) as %s",
                    self.function,
                    self.name,
                    iso(tick),
                    (now - tick) * 1000,
                    ident,
                )
            return
