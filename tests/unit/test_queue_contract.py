"""One contract for the async queue, run against both backends.

See docs/architecture.md, "Queue semantics".

SQLite uses a temporary file; Redis a real redis-server started by the suite. Whatever a
worker or an admin can observe must be the same on both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kubefaas_gateway.queue import (
    RESULT_MAX_BYTES,
    AttemptError,
    InvocationQueue,
    Lease,
    NewInvocation,
    make_queue,
)
from kubefaas_gateway.queue.redis import RedisQueue
from kubefaas_gateway.queue.sqlite import SQLiteQueue
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

FN = "default/work"
OTHER = "team/other"
LONG_LEASE = 60.0
Factory = Callable[..., Awaitable[InvocationQueue]]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Opens queues that share one store (same file, or same Redis prefix)."""
    opened: list[InvocationQueue] = []
    prefix = f"t{uuid.uuid4().hex[:8]}"

    async def factory(*, record_ttl_seconds: float = 3600) -> InvocationQueue:
        queue: InvocationQueue
        if request.param == "sqlite":
            queue = SQLiteQueue.in_state_dir(tmp_path, record_ttl_seconds=record_ttl_seconds)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            queue = RedisQueue(server.url, prefix=prefix, record_ttl_seconds=record_ttl_seconds)
        await queue.open()
        opened.append(queue)
        return queue

    yield factory
    for queue in opened:
        await queue.close()


@pytest.fixture
async def queue(make: Factory) -> InvocationQueue:
    return await make()


def new(function: str = FN, body: bytes = b'{"n": 1}', **extra: Any) -> NewInvocation:
    return NewInvocation(id=uuid.uuid4().hex, function=function, body=body, **extra)


def boom(kind: str = "function_error", message: str = "boom") -> AttemptError:
    return AttemptError(kind=kind, type="RuntimeError", message=message, status_code=502)


async def lease(queue: InvocationQueue, now: float, seconds: float = LONG_LEASE) -> Lease:
    taken = await queue.lease(FN, now=now, lease_seconds=seconds)
    assert taken is not None, "expected an event to be due"
    return taken


async def test_enqueue_lease_complete_keeps_the_request_and_the_result(
    queue: InvocationQueue,
) -> None:
    now = time.time()
    inv = new(
        headers={"content-type": "application/json", "x-trace": "abc"},
        query="a=1",
        callback_url="http://127.0.0.1:9/cb",
    )
    await queue.enqueue(inv, now=now)

    record = await queue.get(inv.id)
    assert record is not None
    assert (record.status, record.function, record.attempts) == ("queued", FN, ())
    assert record.to_json()["invocationId"] == inv.id

    held = await lease(queue, now + 1)
    assert (held.id, held.body, held.query) == (inv.id, b'{"n": 1}', "a=1")
    assert dict(held.headers) == {"content-type": "application/json", "x-trace": "abc"}
    assert held.callback_url == "http://127.0.0.1:9/cb"
    assert held.attempt_in_series == 1
    assert held.created_at == pytest.approx(now)

    running = await queue.get(inv.id)
    assert running is not None
    assert running.status == "running"
    assert [a.status for a in running.attempts] == ["running"]
    assert await queue.lease(FN, now=now + 2, lease_seconds=LONG_LEASE) is None

    done = await queue.complete(held, now=now + 3, result={"ok": True, "n": [1, 2]})
    assert done is not None
    assert done.status == "succeeded"
    assert done.result == {"ok": True, "n": [1, 2]}
    [attempt] = done.attempts
    assert attempt.status == "succeeded"
    assert attempt.started_at == pytest.approx(now + 1)
    assert attempt.finished_at == pytest.approx(now + 3)
    assert await queue.get(inv.id) == done
    assert await queue.lease(FN, now=now + 4, lease_seconds=LONG_LEASE) is None


async def test_an_idempotent_enqueue_stores_one_event_per_key_across_queues(
    make: Factory,
) -> None:
    """Two gateways firing the same schedule tick store it once (docs/architecture.md,
    "Triggers"); the key still holds after the event finished."""
    first, second = await make(), await make()
    now = time.time()
    tick = NewInvocation(id=f"tick-{uuid.uuid4().hex}", function=FN, body=b'{"tick": 1}')
    stored = await asyncio.gather(
        first.enqueue_once(tick, now=now), second.enqueue_once(tick, now=now)
    )
    assert sorted(stored) == [False, True]
    held = await lease(first, now + 1)
    assert held.id == tick.id
    assert await second.lease(FN, now=now + 1, lease_seconds=LONG_LEASE) is None
    assert await first.complete(held, now=now + 2, result=None) is not None
    assert await second.enqueue_once(tick, now=now + 3) is False
    record = await first.get(tick.id)
    assert record is not None
    assert record.status == "succeeded"
    assert await first.lease(FN, now=now + 4, lease_seconds=LONG_LEASE) is None
    # A plain enqueue of a known id is still refused.
    with pytest.raises(Exception, match=r"(?i)duplicate|unique"):
        await first.enqueue(tick, now=now + 5)


async def test_an_event_survives_closing_and_reopening_the_store(make: Factory) -> None:
    first = await make()
    inv = new()
    await first.enqueue(inv, now=time.time())
    await first.close()

    second = await make()
    held = await lease(second, time.time())
    assert held.id == inv.id


async def test_expired_lease_is_delivered_again_and_the_stale_worker_is_fenced(
    queue: InvocationQueue,
) -> None:
    inv = new()
    await queue.enqueue(inv, now=time.time())
    first = await lease(queue, time.time(), seconds=0.3)
    assert await queue.lease(FN, now=time.time(), lease_seconds=0.3) is None

    await asyncio.sleep(0.5)
    second = await lease(queue, time.time())
    assert second.id == inv.id
    assert second.token != first.token
    assert second.attempt.number == 2

    # The first worker finishes late: its outcome must not overwrite the redelivery's.
    assert await queue.complete(first, now=time.time(), result="late") is None
    assert not await queue.retry(first, now=time.time(), error=boom(), at=time.time())

    done = await queue.complete(second, now=time.time(), result="second")
    assert done is not None
    assert done.result == "second"
    assert [a.status for a in done.attempts] == ["abandoned", "succeeded"]
    assert done.attempts[0].error is not None
    assert done.attempts[0].error["type"] == "LeaseExpired"


async def test_a_retry_is_invisible_until_it_is_due(queue: InvocationQueue) -> None:
    now = time.time()
    inv = new()
    await queue.enqueue(inv, now=now)
    held = await lease(queue, now)
    assert await queue.retry(held, now=now + 1, error=boom(), at=now + 61)

    waiting = await queue.get(inv.id)
    assert waiting is not None
    assert waiting.status == "queued"
    assert waiting.next_attempt_at == pytest.approx(now + 61)
    assert waiting.error is not None
    assert waiting.error["message"] == "boom"
    assert waiting.to_json()["nextAttemptAt"] == pytest.approx(now + 61)

    assert await queue.lease(FN, now=now + 60, lease_seconds=LONG_LEASE) is None
    again = await lease(queue, now + 61)
    assert again.id == inv.id
    assert again.attempt_in_series == 2
    assert [a.status for a in again.previous] == ["failed"]
    assert again.previous[0].error == boom().to_json()


async def test_dead_letter_keeps_every_attempt_and_its_error(queue: InvocationQueue) -> None:
    now = time.time()
    inv = new()
    await queue.enqueue(inv, now=now)
    for n in range(2):
        held = await lease(queue, now + n * 10)
        assert await queue.retry(held, now=now + n * 10, error=boom(message=f"try {n}"),
                                 at=now + n * 10 + 10)  # fmt: skip
    held = await lease(queue, now + 20)
    dead = await queue.dead_letter(
        held,
        now=now + 21,
        error=boom(message="try 2"),
        reason="retries_exhausted",
        message="maxRetries=2 exhausted",
    )
    assert dead is not None
    assert dead.status == "dead"
    assert (dead.dead_reason, dead.dead_message) == ("retries_exhausted", "maxRetries=2 exhausted")
    assert [(a.status, a.error and a.error["message"]) for a in dead.attempts] == [
        ("failed", "try 0"),
        ("failed", "try 1"),
        ("failed", "try 2"),
    ]
    assert dead.to_json()["deadLetter"]["reason"] == "retries_exhausted"

    page = await queue.list_dead_letters()
    assert [r.id for r in page.items] == [inv.id]
    assert page.next_cursor is None
    assert (await queue.list_dead_letters(function=OTHER)).items == ()
    assert await queue.lease(FN, now=now + 1000, lease_seconds=LONG_LEASE) is None


async def test_an_event_too_old_to_run_is_dead_lettered_as_expired(
    queue: InvocationQueue,
) -> None:
    now = time.time()
    inv = new()
    await queue.enqueue(inv, now=now)
    held = await lease(queue, now + 100)
    dead = await queue.dead_letter(
        held,
        now=now + 100,
        error=AttemptError(kind="expired", type="EventAgeExceeded", message="too old"),
        reason="event_age_exceeded",
        message="event is 100 s old",
        expired=True,
    )
    assert dead is not None
    assert [a.status for a in dead.attempts] == ["expired"]


async def dead_letter_one(queue: InvocationQueue, now: float, function: str = FN) -> str:
    inv = new(function)
    await queue.enqueue(inv, now=now)
    held = await queue.lease(function, now=now, lease_seconds=LONG_LEASE)
    assert held is not None
    await queue.dead_letter(held, now=now, error=boom(), reason="retries_exhausted", message="x")
    return inv.id


async def test_redrive_starts_a_fresh_series_and_keeps_the_history(
    queue: InvocationQueue,
) -> None:
    now = time.time()
    dead_id = await dead_letter_one(queue, now)

    redriven = await queue.redrive(dead_id, now=now + 500)
    assert redriven is not None
    assert redriven.status == "queued"
    assert redriven.series == 1
    assert redriven.series_started_at == pytest.approx(now + 500)
    assert (await queue.list_dead_letters()).items == ()
    assert await queue.redrive(dead_id, now=now + 501) is None  # not dead any more

    held = await lease(queue, now + 501)
    assert held.id == dead_id
    assert held.attempt_in_series == 1  # X-Attempt starts again at 1
    assert held.attempt.number == 2
    assert held.series_started_at == pytest.approx(now + 500)
    done = await queue.complete(held, now=now + 502, result=None)
    assert done is not None
    assert [(a.series, a.status) for a in done.attempts] == [(0, "failed"), (1, "succeeded")]
    assert done.to_json()["redriven"] == 1


async def test_redrive_of_an_unknown_or_live_invocation_changes_nothing(
    queue: InvocationQueue,
) -> None:
    now = time.time()
    inv = new()
    await queue.enqueue(inv, now=now)
    assert await queue.redrive(inv.id, now=now) is None
    assert await queue.redrive("no-such-id", now=now) is None
    assert await queue.get("no-such-id") is None
    record = await queue.get(inv.id)
    assert record is not None
    assert record.status == "queued"
    assert record.series == 0


async def test_purge_one_all_and_by_function(queue: InvocationQueue) -> None:
    now = time.time()
    one = await dead_letter_one(queue, now)
    two = await dead_letter_one(queue, now)
    other = await dead_letter_one(queue, now, function=OTHER)

    assert await queue.purge(one, now=now)
    assert not await queue.purge(one, now=now)
    purged = await queue.get(one)
    assert purged is not None
    assert purged.status == "failed"
    assert len(purged.attempts) == 1  # the history stays, the payload goes
    assert await queue.redrive(one, now=now) is None

    assert await queue.purge_all(now=now, function=OTHER) == 1
    assert [r.id for r in (await queue.list_dead_letters()).items] == [two]
    assert await queue.purge_all(now=now) == 1
    assert (await queue.list_dead_letters()).items == ()
    other_record = await queue.get(other)
    assert other_record is not None
    assert other_record.status == "failed"


async def test_dead_letter_counts_per_function(queue: InvocationQueue) -> None:
    """What the dead-letter retention's count bound reads (delivery/retention.py)."""
    now = time.time()
    assert await queue.dead_letter_counts() == {}
    first = await dead_letter_one(queue, now)
    await dead_letter_one(queue, now)
    await dead_letter_one(queue, now, function=OTHER)
    assert await queue.dead_letter_counts() == {FN: 2, OTHER: 1}
    assert await queue.purge(first, now=now)
    assert await queue.purge_all(now=now, function=OTHER) == 1
    assert await queue.dead_letter_counts() == {FN: 1}


async def test_dead_letters_page_in_order(queue: InvocationQueue) -> None:
    now = time.time()
    ids = [await dead_letter_one(queue, now + n) for n in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = await queue.list_dead_letters(limit=2, cursor=cursor)
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids
    with pytest.raises(ValueError, match="cursor"):
        await queue.list_dead_letters(cursor="not-a-cursor")


async def test_finished_records_expire_after_the_ttl_but_dead_letters_stay(
    make: Factory,
) -> None:
    queue = await make(record_ttl_seconds=1)
    inv = new()
    await queue.enqueue(inv, now=time.time())
    held = await lease(queue, time.time())
    await queue.complete(held, now=time.time(), result=1)
    dead_id = await dead_letter_one(queue, time.time())

    assert await queue.get(inv.id) is not None
    await asyncio.sleep(1.3)
    await queue.purge_expired(now=time.time())
    assert await queue.get(inv.id) is None
    dead = await queue.get(dead_id)
    assert dead is not None
    assert dead.status == "dead"


async def test_a_result_over_the_cap_is_not_kept_but_flagged(queue: InvocationQueue) -> None:
    inv = new()
    await queue.enqueue(inv, now=time.time())
    held = await lease(queue, time.time())
    done = await queue.complete(held, now=time.time(), result="x" * (RESULT_MAX_BYTES + 1))
    assert done is not None
    assert done.result is None
    assert done.result_truncated
    assert done.to_json()["resultTruncated"] is True


async def test_two_workers_never_hold_the_same_live_lease(make: Factory) -> None:
    first, second = await make(), await make()
    ids = set()
    for _ in range(40):
        inv = new()
        ids.add(inv.id)
        await first.enqueue(inv, now=time.time())

    async def drain(queue: InvocationQueue) -> list[str]:
        taken = []
        while (
            held := await queue.lease(FN, now=time.time(), lease_seconds=LONG_LEASE)
        ) is not None:
            taken.append(held.id)
            await asyncio.sleep(0)
        return taken

    results = await asyncio.gather(drain(first), drain(second), drain(first), drain(second))
    leased = [i for taken in results for i in taken]
    assert sorted(leased) == sorted(ids), "every event leased exactly once"
    assert sum(1 for taken in results if taken) >= 2, "both workers took part"


async def test_stats_show_depth_in_flight_and_oldest_age_per_function(
    queue: InvocationQueue,
) -> None:
    now = time.time()
    for n in range(3):
        await queue.enqueue(new(), now=now - 30 + n)
    await queue.enqueue(new(OTHER), now=now - 5)
    held = await lease(queue, now)

    stats = {s.function: s for s in await queue.stats(now=now)}
    assert set(stats) == {FN, OTHER}
    assert (stats[FN].depth, stats[FN].in_flight) == (2, 1)
    assert stats[FN].oldest_age_seconds == pytest.approx(30, abs=0.01)
    assert (stats[OTHER].depth, stats[OTHER].in_flight) == (1, 0)
    assert stats[OTHER].oldest_age_seconds == pytest.approx(5, abs=0.01)

    await queue.complete(held, now=now, result=None)
    while (more := await queue.lease(FN, now=now, lease_seconds=LONG_LEASE)) is not None:
        await queue.complete(more, now=now, result=None)
    stats = {s.function: s for s in await queue.stats(now=now)}
    assert set(stats) == {OTHER}


def test_make_queue_picks_redis_when_a_url_is_given(tmp_path: Path) -> None:
    assert isinstance(make_queue(state_dir=tmp_path, redis_url=None), SQLiteQueue)
    assert isinstance(make_queue(state_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"), RedisQueue)
    with pytest.raises(ValueError, match="state directory"):
        make_queue(state_dir=None, redis_url=None)
