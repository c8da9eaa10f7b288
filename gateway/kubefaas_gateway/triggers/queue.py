"""One queue trigger's loop: receive broker messages, store each as an async invocation,
ack it when that invocation succeeded or was dead-lettered (docs/triggers.md).

At-least-once end to end: a message is acked only after its outcome is stored, so a
gateway killed at any point leaves it unacked and the broker delivers it again; the
invocation id is derived from the message's broker id, so the redelivery finds the
invocation already stored (queued, running or finished) and waits for it instead of
running it twice. At most `maxInFlight` messages are received and not yet acked; with 1
they run in the broker's order.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from kubefaas.api import QueueTrigger
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.queue import InvocationRecord
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.triggers.board import TriggerBoard
from kubefaas_gateway.triggers.source import Message, Source

log = logging.getLogger("kubefaas.gateway.triggers")

MESSAGE_ID_HEADER = "x-kubefaas-message-id"
TRIGGER_HEADER = "x-kubefaas-trigger"
RECEIVE_WAIT_SECONDS = 1.0
LAG_INTERVAL_SECONDS = 2.0
RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)
FINAL = ("succeeded", "dead", "failed")


def message_invocation_id(function: str, trigger: str, message_id: str) -> str:
    digest = hashlib.sha256(f"{function}\0{trigger}\0{message_id}".encode()).hexdigest()
    return f"msg-{digest[:32]}"


class Outcomes:
    """Waits for async invocations to end: told at once by this gateway's delivery, and
    polling the queue for those another replica finishes."""

    def __init__(self, delivery: AsyncDelivery) -> None:
        self._delivery = delivery
        self._waiting: dict[str, asyncio.Future[InvocationRecord]] = {}
        delivery.on_outcome(self.finished)

    def finished(self, record: InvocationRecord) -> None:
        future = self._waiting.get(record.id)
        if future is not None and not future.done():
            future.set_result(record)

    async def wait(
        self, invocation_id: str, *, poll_seconds: float, keep_alive: Callable[[], object]
    ) -> InvocationRecord | None:
        future = self._waiting.setdefault(invocation_id, asyncio.get_running_loop().create_future())
        try:
            while True:
                record = await self._delivery.queue.get(invocation_id)
                if record is None or record.status in FINAL:
                    return record
                try:
                    return await asyncio.wait_for(asyncio.shield(future), poll_seconds)
                except TimeoutError:
                    alive = keep_alive()
                    if asyncio.iscoroutine(alive):
                        await alive
        finally:
            self._waiting.pop(invocation_id, None)


class QueueLoop:
    def __init__(
        self,
        *,
        function: str,
        name: str,
        config: QueueTrigger,
        source: Source,
        delivery: AsyncDelivery,
        registry: FunctionRegistry,
        board: TriggerBoard,
        outcomes: Outcomes,
        poll_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.function, self.name, self.config = function, name, config
        self._source, self._delivery, self._registry = source, delivery, registry
        self._board, self._outcomes = board, outcomes
        self._poll = poll_seconds
        self._clock = clock
        self._state = board.state(function, name, source.kind)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._slot_free = asyncio.Event()

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._source.open()
                failures = 0
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._board.error(self._state, f"{type(exc).__name__}: {exc}", now=self._clock())
                log.warning("trigger %s/%s: %s; reconnecting", self.function, self.name, exc)
                await self._source.close()
                await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
                failures += 1

    async def stop(self) -> None:
        for task in self._in_flight.values():
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        await self._source.close()

    async def _consume(self) -> None:
        lag_task = asyncio.get_running_loop().create_task(self._watch_lag())
        try:
            while True:
                free = self.config.max_in_flight - len(self._in_flight)
                if free <= 0:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                batch = await self._source.receive(
                    min(self.config.batch_size, free), wait_seconds=RECEIVE_WAIT_SECONDS
                )
                for message in batch:
                    if message.id in self._in_flight:
                        continue  # a redelivery of one we are still waiting for
                    task = asyncio.get_running_loop().create_task(self._handle(message))
                    self._in_flight[message.id] = task
                    task.add_done_callback(self._done_callback(message.id))
        finally:
            lag_task.cancel()

    def _done_callback(self, ident: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._in_flight.pop(ident, None)
            self._slot_free.set()

        return done

    async def _watch_lag(self) -> None:
        while True:
            try:
                self._board.set_lag(self._state, await self._source.lag())
            except Exception as exc:
                log.debug("trigger %s/%s: no lag: %s", self.function, self.name, exc)
            await asyncio.sleep(LAG_INTERVAL_SECONDS)

    async def _handle(self, message: Message) -> None:
        ident = message_invocation_id(self.function, self.name, message.id)
        try:
            while True:
                fn = self._registry.get(self.function)
                if fn is None:
                    return  # left unacked: redelivered if the function comes back
                try:
                    stored = await self._delivery.submit_once(
                        fn,
                        message.body,
                        invocation_id=ident,
                        headers={
                            "content-type": "application/json",
                            **message.headers,
                            TRIGGER_HEADER: self.name,
                            MESSAGE_ID_HEADER: message.id,
                        },
                    )
                    break
                except Exception as exc:
                    self._board.error(
                        self._state, f"could not store message: {exc}", now=self._clock()
                    )
                    await asyncio.sleep(1.0)
            if stored:
                self._board.received(self._state, now=self._clock(), invocation=ident)
            record = await self._outcomes.wait(
                ident,
                poll_seconds=self._poll,
                keep_alive=lambda: self._source.keep_alive(message),
            )
            dead = record is not None and record.status in ("dead", "failed")
            if dead and record is not None:
                await self._source.dead(message, record.error)
                self._board.error(
                    self._state,
                    f"message {message.id} dead-lettered as {ident}: "
                    f"{(record.error or {}).get('message', record.dead_message)}",
                    now=self._clock(),
                )
            await self._source.ack(message)
            self._board.acked(self._state, "dead" if dead else "succeeded")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not acked: the broker delivers it again and the same invocation is found.
            self._board.error(self._state, f"message {message.id}: {exc}", now=self._clock())
            log.warning(
                "trigger %s/%s: message %s not acked: %s", self.function, self.name, message.id, exc
            )
