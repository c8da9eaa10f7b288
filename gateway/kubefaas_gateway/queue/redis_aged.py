"""Redis backend: dead-letter the aged events of a function no dispatcher leases any more
(docs/security.md, "Failure modes"; the SQLite backend does the same in one statement).

One Lua script per batch, so an event is never half moved: for every event of the function
whose attempt series started before the cut-off (the `active` set's score), that is queued
(due or waiting for a retry) or running on a lease that has run out, it ends the lost
attempt as `abandoned`, appends an `expired` attempt with the given error, drops the
stream entry and the delayed/leased/active index entries, and files the record in the
dead sets, exactly as `_DEAD` in `redis.py` does for a leased event. Live leases are left
alone. The key layout is the one `redis.py` documents.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from kubefaas_gateway.queue.base import ABANDONED_ERROR, AttemptError, InvocationRecord

if TYPE_CHECKING:
    from kubefaas_gateway.queue.redis import RedisQueue

# Events looked at per script run (it blocks the server while it runs).
AGED_BATCH: Final = 200

# ARGV: base, group, function, started_before, now, error_json, reason, message,
# abandoned_error. Returns {ids dead-lettered, how many events were looked at}. Appended
# to `redis._LUA_HELPERS` (k, drop_entry) by `redis.py`.
AGED_BODY: Final = f"""
local fn, before, now = ARGV[3], ARGV[4], ARGV[5]
local active, leased = k('active', fn), k('leased', fn)
local stream, delayed = k('q', fn), k('delayed', fn)
local done = {{}}
local ids = redis.call('ZRANGEBYSCORE', active, '-inf', '(' .. before, 'LIMIT', 0, {AGED_BATCH})
for _, id in ipairs(ids) do
  local rec, att = k('inv', id), k('att', id)
  local status = redis.call('HGET', rec, 'status')
  local take = status == 'queued'
  if status == 'running' then
    local expires = redis.call('HGET', rec, 'lease_expires_at')
    take = expires ~= false and tonumber(expires) <= tonumber(now)
  elseif not status then  -- the record is gone: tidy the index
    redis.call('ZREM', active, id)
  end
  if take then
    local count = redis.call('LLEN', att)
    if status == 'running' and count > 0 then
      redis.call('LSET', att, -1, '{{"number":' .. count .. ',"series":' ..
        redis.call('HGET', rec, 'attempt_series') .. ',"startedAt":' ..
        redis.call('HGET', rec, 'attempt_started_at') .. ',"finishedAt":' .. now ..
        ',"status":"abandoned","error":' .. ARGV[9] .. '}}')
    end
    redis.call('RPUSH', att, '{{"number":' .. (count + 1) .. ',"series":' ..
      redis.call('HGET', rec, 'series') .. ',"startedAt":' .. now .. ',"finishedAt":' ..
      now .. ',"status":"expired","error":' .. ARGV[6] .. '}}')
    drop_entry(stream, redis.call('HGET', rec, 'entry'))
    redis.call('ZREM', delayed, id)
    redis.call('ZREM', leased, id)
    redis.call('ZREM', active, id)
    redis.call('HDEL', rec, 'token', 'entry', 'lease_expires_at', 'next_attempt_at')
    redis.call('HSET', rec, 'status', 'dead', 'error', ARGV[6], 'dead_reason', ARGV[7],
      'dead_message', ARGV[8], 'dead_at', now, 'updated_at', now)
    redis.call('ZADD', base .. ':dead', now, id)
    redis.call('ZADD', k('dead', fn), now, id)
    table.insert(done, id)
  end
end
return {{done, #ids}}
"""


async def dead_letter_aged(
    queue: RedisQueue,
    function: str,
    *,
    started_before: float,
    now: float,
    error: AttemptError,
    reason: str,
    message: str,
) -> list[InvocationRecord]:
    """`InvocationQueue.dead_letter_aged` on Redis, a batch per script run."""
    error_json = json.dumps(error.to_json(), separators=(",", ":"))
    abandoned = json.dumps(ABANDONED_ERROR, separators=(",", ":"))
    records: list[InvocationRecord] = []
    while True:
        done, looked_at = await queue.run_script(
            "aged",
            queue.key("active", function),
            function,
            repr(float(started_before)),
            repr(float(now)),
            error_json,
            reason,
            message,
            abandoned,
        )
        records.extend(await queue.records(list(done)))
        # A full batch that moved nothing holds only live leases: the rest waits a round.
        if looked_at < AGED_BATCH or not done:
            return records
