"""Redis backend of the async queue: for several gateway replicas sharing one store.

One stream per function (not one shared stream with a function field). Workers lease per
function with bounded concurrency (so a flood of one function's events cannot take every
worker, docs/architecture.md, "Queue semantics"); with a shared stream every worker would read, and
have to hand back,
other functions' events, and one busy function would sit in front of all the others. Per
function, XLEN/the pending list/the sorted sets answer depth and in-flight questions
directly. The cost is that a worker must know the function names, which the gateway does.

Key layout (every key carries the hash tag `{<prefix>}`, default `{kubefaas}`, so all of
them live in one slot and the Lua scripts stay valid on Redis Cluster):

    {P}:functions            SET     every function that ever had an async event
    {P}:q:<ns/name>          STREAM  entries `id=<invocation id>`; consumer group `workers`.
                                     An entry is in the stream while the event is due or
                                     leased, and is XACKed and XDELed when the attempt ends.
    {P}:delayed:<ns/name>    ZSET    invocation id -> epoch seconds its retry is due; the
                                     lease script moves due ids into the stream
    {P}:active:<ns/name>     ZSET    id -> series start, for every event not finished
                                     (depth, oldest event age)
    {P}:leased:<ns/name>     ZSET    id -> lease expiry set by the holder: in-flight count,
                                     and which leases have run out
    {P}:dead                 ZSET    id -> dead-letter time, all functions
    {P}:dead:<ns/name>       ZSET    the same, one function
    {P}:inv:<id>             HASH    the record: function, status, body, headers (JSON),
                                     query, callback_url, created_at, updated_at, series,
                                     series_started_at, next_attempt_at, token (live lease),
                                     entry (stream entry id), attempt_started_at, result
                                     (JSON), result_truncated, error (JSON), dead_reason,
                                     dead_message, dead_at
    {P}:att:<id>             LIST    one JSON attempt per element, oldest first

Atomicity: every transition (enqueue, lease, complete, retry, dead-letter, redrive, purge)
is one Lua script, so a crash between steps cannot exist: an event is always in exactly one
of the stream, the delayed set or the dead set until it succeeds. A lease is an entry in the
group's pending list: XREADGROUP hands a new entry to exactly one consumer. An expired lease
is taken over with XCLAIM of the ids whose expiry in `leased` has passed, not with
XAUTOCLAIM: XAUTOCLAIM's idle threshold is chosen by the *claimer*, so after a change of
`timeoutSeconds` a worker computing a shorter lease would steal live leases from workers
still running the longer one; the holder's own expiry is the lease. Finished records get an
EXPIRE of the record TTL; dead letters have none.

Durability is the server's: an event is acknowledged once Redis has applied the script.
Run Redis with `appendonly yes` and `appendfsync always` for the guarantee the SQLite
backend gives (with `everysec` a crash of the Redis host can lose the last second). The
gateway logs a warning at start when it can see that persistence is off.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Final

import redis.asyncio as aioredis

from kubefaas_gateway.queue.base import (
    ABANDONED_ERROR,
    RECORD_TTL_DEFAULT_SECONDS,
    Attempt,
    AttemptError,
    DeadLetterPage,
    InvocationQueue,
    InvocationRecord,
    Lease,
    NewInvocation,
    QueueStats,
    decode_cursor,
    encode_result,
)
from kubefaas_gateway.queue.redis_aged import AGED_BODY, dead_letter_aged

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "kubefaas"
GROUP: Final = "workers"
# Bounds the work one lease call does in Redis (it blocks the server while it runs).
PROMOTE_BATCH: Final = 100
CLAIM_BATCH: Final = 10
PURGE_BATCH: Final = 500

_LUA_HELPERS: Final = """
local base = ARGV[1]
local function k(kind, name) return base .. ':' .. kind .. ':' .. name end
local function ensure_group(stream)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, ARGV[2], '0', 'MKSTREAM')
  end
end
local function drop_entry(stream, entry)
  if entry and entry ~= '' then
    redis.call('XACK', stream, ARGV[2], entry)
    redis.call('XDEL', stream, entry)
  end
end
"""

# ARGV: base, group, id, function, body, headers, query, callback_url, now, once
# `once` = '1': an existing id is the same event stored before (an idempotent enqueue,
# docs/architecture.md, "Triggers"), answered 0 instead of an error.
_ENQUEUE: Final = (
    _LUA_HELPERS
    + """
local id, fn, now = ARGV[3], ARGV[4], ARGV[9]
local rec = k('inv', id)
if redis.call('EXISTS', rec) == 1 then
  if ARGV[10] == '1' then return 0 end
  return redis.error_reply('duplicate invocation id')
end
local stream = k('q', fn)
ensure_group(stream)
local entry = redis.call('XADD', stream, '*', 'id', id)
redis.call('HSET', rec, 'function', fn, 'status', 'queued', 'body', ARGV[5],
  'headers', ARGV[6], 'query', ARGV[7], 'callback_url', ARGV[8], 'created_at', now,
  'updated_at', now, 'series', 0, 'series_started_at', now, 'entry', entry)
redis.call('ZADD', k('active', fn), now, id)
redis.call('SADD', base .. ':functions', fn)
return 1
"""
)

# ARGV: base, group, function, consumer, now, lease_expires, token, abandoned_error
_LEASE: Final = (
    _LUA_HELPERS
    + f"""
local fn, consumer, now = ARGV[3], ARGV[4], ARGV[5]
local expires, token = ARGV[6], ARGV[7]
local stream, delayed = k('q', fn), k('delayed', fn)
if redis.call('EXISTS', stream) == 0 then return false end

local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, {PROMOTE_BATCH})
for _, id in ipairs(due) do
  local rec = k('inv', id)
  if redis.call('HGET', rec, 'status') == 'queued' then
    redis.call('HSET', rec, 'entry', redis.call('XADD', stream, '*', 'id', id))
  end
  redis.call('ZREM', delayed, id)
end

local function take(msg)
  local entry, fields = msg[1], msg[2]
  local id = nil
  for i = 1, #fields, 2 do if fields[i] == 'id' then id = fields[i + 1] end end
  if not id then drop_entry(stream, entry); return nil end
  local rec, att = k('inv', id), k('att', id)
  local status = redis.call('HGET', rec, 'status')
  if (status ~= 'queued' and status ~= 'running') or redis.call('HGET', rec, 'entry') ~= entry then
    drop_entry(stream, entry)  -- stale: the record moved on (or expired) without this entry
    return nil
  end
  local series = redis.call('HGET', rec, 'series')
  local count = redis.call('LLEN', att)
  if status == 'running' and count > 0 then
    redis.call('LSET', att, -1, '{{"number":' .. count .. ',"series":' ..
      redis.call('HGET', rec, 'attempt_series') .. ',"startedAt":' ..
      redis.call('HGET', rec, 'attempt_started_at') .. ',"finishedAt":' .. now ..
      ',"status":"abandoned","error":' .. ARGV[8] .. '}}')
  end
  redis.call('RPUSH', att, '{{"number":' .. (count + 1) .. ',"series":' .. series ..
    ',"startedAt":' .. now .. ',"finishedAt":null,"status":"running","error":null}}')
  redis.call('HSET', rec, 'status', 'running', 'token', token, 'updated_at', now,
    'attempt_started_at', now, 'attempt_series', series, 'lease_expires_at', expires)
  redis.call('ZADD', k('leased', fn), expires, id)
  return {{id, redis.call('HGETALL', rec), redis.call('LRANGE', att, 0, -1)}}
end

-- Leases whose holder-set expiry has passed go first (at-least-once redelivery).
local leased = k('leased', fn)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leased, '-inf', now, 'LIMIT', 0, {CLAIM_BATCH})) do
  local rec = k('inv', id)
  local entry = redis.call('HGET', rec, 'entry')
  if redis.call('HGET', rec, 'status') ~= 'running' or not entry then
    redis.call('ZREM', leased, id)
  else
    local claimed = redis.call('XCLAIM', stream, ARGV[2], consumer, 0, entry)
    if claimed[1] then
      local taken = take(claimed[1])
      if taken then return taken end
    else  -- the entry vanished from the stream (trimmed by hand): give it a new one
      redis.call('HSET', rec, 'entry', redis.call('XADD', stream, '*', 'id', id))
      redis.call('ZREM', leased, id)
    end
  end
end

for _ = 1, {PROMOTE_BATCH} do
  local res = redis.call('XREADGROUP', 'GROUP', ARGV[2], consumer, 'COUNT', 1,
    'STREAMS', stream, '>')
  if not res then return false end
  local taken = take(res[1][2][1])
  if taken then return taken end
end
return false
"""
)

# Shared head of complete / retry / dead: fence on the lease token, end the attempt.
# ARGV: base, group, id, token, now, attempt_json, ...
_FINISH_HEAD: Final = (
    _LUA_HELPERS
    + """
local id, token, now = ARGV[3], ARGV[4], ARGV[5]
local rec, att = k('inv', id), k('att', id)
if redis.call('HGET', rec, 'status') ~= 'running' or redis.call('HGET', rec, 'token') ~= token then
  return 0
end
local fn = redis.call('HGET', rec, 'function')
drop_entry(k('q', fn), redis.call('HGET', rec, 'entry'))
redis.call('LSET', att, -1, ARGV[6])
redis.call('ZREM', k('leased', fn), id)
redis.call('HDEL', rec, 'token', 'entry', 'lease_expires_at', 'next_attempt_at')
"""
)

# ARGV: ..., result_json, truncated, ttl
_COMPLETE: Final = (
    _FINISH_HEAD
    + """
redis.call('ZREM', k('active', fn), id)
redis.call('HDEL', rec, 'body', 'error')
redis.call('HSET', rec, 'status', 'succeeded', 'result', ARGV[7], 'result_truncated', ARGV[8],
  'updated_at', now)
redis.call('EXPIRE', rec, ARGV[9])
redis.call('EXPIRE', att, ARGV[9])
return {redis.call('HGETALL', rec), redis.call('LRANGE', att, 0, -1)}
"""
)

# ARGV: ..., error_json, due_at
_RETRY: Final = (
    _FINISH_HEAD
    + """
redis.call('HSET', rec, 'status', 'queued', 'error', ARGV[7], 'next_attempt_at', ARGV[8],
  'updated_at', now)
redis.call('ZADD', k('delayed', fn), ARGV[8], id)
return 1
"""
)

# ARGV: ..., error_json, reason, message
_DEAD: Final = (
    _FINISH_HEAD
    + """
redis.call('ZREM', k('active', fn), id)
redis.call('HSET', rec, 'status', 'dead', 'error', ARGV[7], 'dead_reason', ARGV[8],
  'dead_message', ARGV[9], 'dead_at', now, 'updated_at', now)
redis.call('ZADD', base .. ':dead', now, id)
redis.call('ZADD', k('dead', fn), now, id)
return {redis.call('HGETALL', rec), redis.call('LRANGE', att, 0, -1)}
"""
)

# ARGV: base, group, id, now
_REDRIVE: Final = (
    _LUA_HELPERS
    + """
local id, now = ARGV[3], ARGV[4]
local rec = k('inv', id)
if redis.call('HGET', rec, 'status') ~= 'dead' then return 0 end
local fn = redis.call('HGET', rec, 'function')
redis.call('ZREM', base .. ':dead', id)
redis.call('ZREM', k('dead', fn), id)
local stream = k('q', fn)
ensure_group(stream)
redis.call('HINCRBY', rec, 'series', 1)
redis.call('HDEL', rec, 'dead_reason', 'dead_message', 'dead_at', 'error')
redis.call('HSET', rec, 'status', 'queued', 'series_started_at', now, 'updated_at', now,
  'next_attempt_at', now, 'entry', redis.call('XADD', stream, '*', 'id', id))
redis.call('ZADD', k('active', fn), now, id)
return 1
"""
)

# ARGV: base, group, id, now, ttl
_PURGE: Final = (
    _LUA_HELPERS
    + """
local id, now = ARGV[3], ARGV[4]
local rec = k('inv', id)
if redis.call('HGET', rec, 'status') ~= 'dead' then return 0 end
local fn = redis.call('HGET', rec, 'function')
redis.call('ZREM', base .. ':dead', id)
redis.call('ZREM', k('dead', fn), id)
redis.call('HDEL', rec, 'body')
redis.call('HSET', rec, 'status', 'failed', 'updated_at', now)
redis.call('EXPIRE', rec, ARGV[5])
redis.call('EXPIRE', k('att', id), ARGV[5])
return 1
"""
)


def _num(value: float) -> str:
    """A float as Redis and JSON both read it back exactly."""
    return repr(float(value))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


class RedisQueue(InvocationQueue):
    """The queue in Redis Streams; see the module docstring for the key layout."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        record_ttl_seconds: float = RECORD_TTL_DEFAULT_SECONDS,
        client: aioredis.Redis | None = None,
    ) -> None:
        self.url = url
        self.base = "{" + prefix + "}"
        self.record_ttl_seconds = record_ttl_seconds
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._client = client
        self._owns_client = client is None
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("the Redis queue is not open")
        return self._client

    async def open(self) -> None:
        if self._client is None:
            self._client = aioredis.Redis.from_url(self.url, decode_responses=False)
        await self.client.ping()
        for name, source in (
            ("enqueue", _ENQUEUE),
            ("lease", _LEASE),
            ("complete", _COMPLETE),
            ("retry", _RETRY),
            ("dead", _DEAD),
            ("redrive", _REDRIVE),
            ("purge", _PURGE),
            ("aged", _LUA_HELPERS + AGED_BODY),
        ):
            self._scripts[name] = self.client.register_script(source)
        await self._warn_if_not_persistent()

    async def _warn_if_not_persistent(self) -> None:
        try:
            config: dict[Any, Any] = dict(await self.client.config_get("appendonly"))
        except aioredis.ResponseError:  # CONFIG is often disabled on managed Redis
            return
        if config.get(b"appendonly", config.get("appendonly")) in (b"no", "no"):
            log.warning(
                "Redis at %s runs without appendonly: acknowledged async events are lost if "
                "Redis restarts; set `appendonly yes` and `appendfsync always`",
                self.url,
            )

    async def close(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None

    def _key(self, kind: str, name: str) -> str:
        return f"{self.base}:{kind}:{name}"

    async def _call(self, script: str, key: str, *args: Any) -> Any:
        return await self._scripts[script](keys=[key], args=[self.base, GROUP, *args])

    # For the scripts of sibling modules (`redis_aged.py`).
    run_script = _call

    def key(self, kind: str, name: str) -> str:
        return self._key(kind, name)

    async def records(self, ids: Sequence[bytes]) -> list[InvocationRecord]:
        return await self._records(ids)

    # -- the queue --------------------------------------------------------------------

    async def enqueue(self, invocation: NewInvocation, *, now: float) -> None:
        await self._enqueue(invocation, now=now, once=False)

    async def enqueue_once(self, invocation: NewInvocation, *, now: float) -> bool:
        return bool(await self._enqueue(invocation, now=now, once=True))

    async def _enqueue(self, invocation: NewInvocation, *, now: float, once: bool) -> Any:
        return await self._call(
            "enqueue",
            self._key("inv", invocation.id),
            invocation.id,
            invocation.function,
            invocation.body,
            json.dumps(dict(invocation.headers), separators=(",", ":")),
            invocation.query,
            invocation.callback_url or "",
            _num(now),
            "1" if once else "0",
        )

    async def lease(self, function: str, *, now: float, lease_seconds: float) -> Lease | None:
        token = secrets.token_hex(16)
        expires = now + lease_seconds
        taken = await self._call(
            "lease",
            self._key("q", function),
            function,
            self.consumer,
            _num(now),
            _num(expires),
            token,
            json.dumps(ABANDONED_ERROR, separators=(",", ":")),
        )
        if not taken:
            return None
        raw_id, flat, raw_attempts = taken
        fields = _pairs(flat)
        attempts = [Attempt.from_json(json.loads(a)) for a in raw_attempts]
        current = attempts[-1]
        series = int(fields[b"series"])
        return Lease(
            id=raw_id.decode(),
            function=function,
            token=token,
            body=fields.get(b"body", b""),
            headers=json.loads(fields[b"headers"]),
            query=fields[b"query"].decode(),
            callback_url=_text(fields.get(b"callback_url")) or None,
            created_at=float(fields[b"created_at"]),
            series_started_at=float(fields[b"series_started_at"]),
            expires_at=expires,
            attempt=current,
            previous=tuple(
                a for a in attempts[:-1] if a.series == series and a.status != "running"
            ),
        )

    def _finish_args(self, lease: Lease, attempt: Attempt) -> tuple[Any, ...]:
        return (
            lease.id,
            lease.token,
            _num(attempt.finished_at or 0.0),
            json.dumps(attempt.to_json(), separators=(",", ":")),
        )

    async def complete(self, lease: Lease, *, now: float, result: Any) -> InvocationRecord | None:
        text, truncated = encode_result(result)
        attempt = lease.attempt.finished(now=now, status="succeeded")
        done = await self._call(
            "complete",
            self._key("inv", lease.id),
            *self._finish_args(lease, attempt),
            text or "",
            int(truncated),
            max(1, int(self.record_ttl_seconds)),
        )
        return _record(lease.id, *done) if done else None

    async def retry(self, lease: Lease, *, now: float, error: AttemptError, at: float) -> bool:
        err = error.to_json()
        attempt = lease.attempt.finished(now=now, status="failed", error=err)
        done = await self._call(
            "retry",
            self._key("inv", lease.id),
            *self._finish_args(lease, attempt),
            json.dumps(err),
            _num(at),
        )
        return bool(done)

    async def dead_letter(
        self,
        lease: Lease,
        *,
        now: float,
        error: AttemptError,
        reason: str,
        message: str,
        expired: bool = False,
    ) -> InvocationRecord | None:
        err = error.to_json()
        attempt = lease.attempt.finished(
            now=now, status="expired" if expired else "failed", error=err
        )
        done = await self._call(
            "dead",
            self._key("inv", lease.id),
            *self._finish_args(lease, attempt),
            json.dumps(err),
            reason,
            message,
        )
        return _record(lease.id, *done) if done else None

    async def dead_letter_aged(
        self,
        function: str,
        *,
        started_before: float,
        now: float,
        error: AttemptError,
        reason: str,
        message: str,
    ) -> list[InvocationRecord]:
        return await dead_letter_aged(
            self,
            function,
            started_before=started_before,
            now=now,
            error=error,
            reason=reason,
            message=message,
        )

    async def get(self, invocation_id: str) -> InvocationRecord | None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key("inv", invocation_id))
            pipe.lrange(self._key("att", invocation_id), 0, -1)
            flat, attempts = await pipe.execute()
        return _record(invocation_id, flat, attempts)

    async def _records(self, ids: Sequence[bytes]) -> list[InvocationRecord]:
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for raw in ids:
                pipe.hgetall(self._key("inv", raw.decode()))
                pipe.lrange(self._key("att", raw.decode()), 0, -1)
            replies = await pipe.execute()
        records = []
        for n, raw in enumerate(ids):
            record = _record(raw.decode(), replies[2 * n], replies[2 * n + 1])
            if record is not None:
                records.append(record)
        return records

    def _dead_key(self, function: str | None) -> str:
        return self._key("dead", function) if function else f"{self.base}:dead"

    async def list_dead_letters(
        self, *, function: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> DeadLetterPage:
        offset = decode_cursor(cursor)
        ids: list[Any] = list(
            await self.client.zrange(self._dead_key(function), offset, offset + limit)
        )
        more = len(ids) > limit
        records = await self._records(ids[:limit])
        return DeadLetterPage(
            items=tuple(records), next_cursor=str(offset + limit) if more else None
        )

    async def dead_letter_counts(self) -> dict[str, int]:
        members: set[Any] = set(await self.client.smembers(f"{self.base}:functions"))
        functions = sorted(m.decode() for m in members)
        async with self.client.pipeline(transaction=False) as pipe:
            for fn in functions:
                pipe.zcard(self._key("dead", fn))
            counts = await pipe.execute() if functions else []
        return {fn: int(n) for fn, n in zip(functions, counts, strict=True) if n}

    async def redrive(self, invocation_id: str, *, now: float) -> InvocationRecord | None:
        done = await self._call(
            "redrive", self._key("inv", invocation_id), invocation_id, _num(now)
        )
        return await self.get(invocation_id) if done else None

    async def purge(self, invocation_id: str, *, now: float) -> bool:
        done = await self._call(
            "purge",
            self._key("inv", invocation_id),
            invocation_id,
            _num(now),
            max(1, int(self.record_ttl_seconds)),
        )
        return bool(done)

    async def purge_all(self, *, now: float, function: str | None = None) -> int:
        purged = 0
        key = self._dead_key(function)
        while True:
            ids: list[Any] = list(await self.client.zrange(key, 0, PURGE_BATCH - 1))
            if not ids:
                return purged
            for raw in ids:
                purged += await self.purge(raw.decode(), now=now)

    async def stats(self, *, now: float) -> list[QueueStats]:
        members: set[Any] = set(await self.client.smembers(f"{self.base}:functions"))
        functions = sorted(m.decode() for m in members)
        if not functions:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for fn in functions:
                pipe.zcard(self._key("active", fn))
                pipe.zrange(self._key("active", fn), 0, 0, withscores=True)
                pipe.zcount(self._key("leased", fn), f"({_num(now)}", "+inf")
            replies = await pipe.execute()
        stats = []
        for n, fn in enumerate(functions):
            active, oldest, live = replies[3 * n : 3 * n + 3]
            if not active:
                continue
            stats.append(
                QueueStats(
                    function=fn,
                    depth=max(0, int(active) - int(live)),
                    in_flight=int(live),
                    oldest_age_seconds=max(0.0, now - float(oldest[0][1])) if oldest else 0.0,
                )
            )
        return stats

    async def purge_expired(self, *, now: float) -> int:
        """Nothing to do: finished records carry a Redis EXPIRE of the record TTL."""
        return 0


def _pairs(flat: Sequence[bytes] | Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    if isinstance(flat, Mapping):
        return dict(flat)
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _float(fields: Mapping[bytes, bytes], name: bytes) -> float | None:
    value = fields.get(name)
    return float(value) if value else None


def _record(
    invocation_id: str, flat: Mapping[bytes, bytes], attempts: Sequence[bytes]
) -> InvocationRecord | None:
    if not flat:
        return None
    fields = _pairs(flat)
    status = fields[b"status"].decode()
    result_text = _text(fields.get(b"result"))
    error_text = _text(fields.get(b"error"))
    return InvocationRecord(
        id=invocation_id,
        function=fields[b"function"].decode(),
        status=status,  # type: ignore[arg-type]
        created_at=float(fields[b"created_at"]),
        updated_at=float(fields[b"updated_at"]),
        series=int(fields[b"series"]),
        series_started_at=float(fields[b"series_started_at"]),
        attempts=tuple(Attempt.from_json(json.loads(a)) for a in attempts),
        result=json.loads(result_text) if result_text else None,
        result_truncated=fields.get(b"result_truncated") == b"1",
        error=json.loads(error_text) if error_text else None,
        dead_reason=_text(fields.get(b"dead_reason")),
        dead_message=_text(fields.get(b"dead_message")),
        dead_at=_float(fields, b"dead_at"),
        next_attempt_at=_float(fields, b"next_attempt_at") if status == "queued" else None,
        callback_url=_text(fields.get(b"callback_url")) or None,
    )
