"""The schedule loop on an explicit clock over a real SQLite queue: two replicas store each
tick once, and catchUp: last fires a missed tick once across restarts (docs/triggers.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from kubefaas.api import ScheduleTrigger, parse_function
from kubefaas_gateway.delivery import AsyncDelivery
from kubefaas_gateway.queue.queue_metrics import AsyncMetrics
from kubefaas_gateway.queue.sqlite import SQLiteQueue
from kubefaas_gateway.registry import FunctionRegistry
from kubefaas_gateway.settings import Settings
from kubefaas_gateway.signals import ScalingSignals
from kubefaas_gateway.triggers.board import TriggerBoard
from kubefaas_gateway.triggers.schedule import ScheduleLoop, tick_id

FN = parse_function(
    {
        "apiVersion": "kubefaas.io/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "tick"},
        "spec": {"runtime": "python3.11", "code": {"inline": {"main.py": "x = 1"}}},
    }
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.moved = asyncio.Event()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.moved.set()  # wakes every sleeper; clearing at once does not un-wake them
        self.moved.clear()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Wait until the driver (`run_for`) has moved the clock on by `seconds`."""
        target = self.now + seconds
        while self.now < target:
            await self.moved.wait()


def replica(tmp_path: Path, clock: Clock) -> tuple[AsyncDelivery, TriggerBoard]:
    queue = SQLiteQueue.in_state_dir(tmp_path)
    delivery = AsyncDelivery(
        settings=Settings(state_dir=tmp_path),
        registry=FunctionRegistry([FN]),
        metrics=AsyncMetrics(CollectorRegistry()),
        queue=queue,
        signals=ScalingSignals(),
        clock=clock,
    )
    return delivery, TriggerBoard(CollectorRegistry())


async def run_for(loops: list[ScheduleLoop], clock: Clock, until: float) -> None:
    """Move the clock on 50 ms per 10 ms of real time (the queue's writes are real I/O),
    then let what is under way finish."""
    tasks = [asyncio.get_running_loop().create_task(loop.run()) for loop in loops]
    while clock.now < until:
        clock.advance(0.05)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_replicas_store_each_tick_once_with_the_tick_as_the_event(
    tmp_path: Path,
) -> None:
    clock = Clock(1000.5)
    config = ScheduleTrigger(expression="@every 2s")
    replicas = [replica(tmp_path, clock) for _ in range(2)]
    for delivery, _ in replicas:
        await delivery.queue.open()
    loops = [
        ScheduleLoop(
            function=FN.key,
            name="two",
            config=config,
            delivery=delivery,
            registry=delivery.registry,
            board=board,
            clock=clock,
            sleep=clock.sleep,
        )
        for delivery, board in replicas
    ]
    await run_for(loops, clock, until=1011.0)
    queue = replicas[0][0].queue
    for tick in (1002.0, 1004.0, 1006.0, 1008.0, 1010.0):
        record = await queue.get(tick_id(FN.key, "two", tick))
        assert record is not None, tick
        lease = await queue.lease(FN.key, now=clock.now, lease_seconds=60)
        assert lease is not None
        event = json.loads(lease.body)
        assert event["trigger"] == "two"
        assert event["scheduledTime"] in (1002.0, 1004.0, 1006.0, 1008.0, 1010.0)
    assert await queue.lease(FN.key, now=clock.now, lease_seconds=60) is None  # no doubles
    fires = [board.to_json()[FN.key][0]["fires"] for _, board in replicas]
    assert sum(fires) == 5
    for delivery, _ in replicas:
        await delivery.queue.close()


async def test_catch_up_last_fires_the_missed_tick_once_across_restarts(tmp_path: Path) -> None:
    config = ScheduleTrigger(expression="0 * * * *", catchUp="last")
    clock = Clock(3600 * 10 + 1800)  # 10:30, the 10:00 tick was missed
    for _restart in range(2):
        delivery, board = replica(tmp_path, clock)
        await delivery.queue.open()
        loop = ScheduleLoop(
            function=FN.key,
            name="hourly",
            config=config,
            delivery=delivery,
            registry=delivery.registry,
            board=board,
            clock=clock,
            sleep=clock.sleep,
        )
        await run_for([loop], clock, until=clock.now + 3)
        await delivery.queue.close()
    queue = SQLiteQueue.in_state_dir(tmp_path)
    await queue.open()
    assert await queue.get(tick_id(FN.key, "hourly", 36000.0)) is not None
    assert await queue.lease(FN.key, now=clock.now, lease_seconds=60) is not None
    assert await queue.lease(FN.key, now=clock.now, lease_seconds=60) is None  # fired once
    await queue.close()
