"""Redis Streams as a trigger source: a consumer group, XACK after the outcome
(docs/triggers.md, "Redis Streams").

The group is created at the start of the stream when missing, so entries added before the
first gateway started are delivered. Each gateway reads as consumer `consumer_name`
(stable across a restart of the same pod or host): after a crash it first takes back the
entries it had received and never acked, then reads new ones. Entries left pending by a
consumer that is gone are claimed (XAUTOCLAIM) once idle for `claim_idle_seconds`; a
message being worked on is kept fresh with XCLAIM JUSTID so it is not claimed meanwhile.

An entry's `body` field is the event; an entry without one is delivered as the JSON object
of its fields. A dead message is XADDed to the error destination stream with its body,
its error (JSON), and the source stream and entry id.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from kubefaas.api import RedisStreamSource
from kubefaas_gateway.triggers.source import Credentials, Message, Source


class RedisStream(Source):
    kind = "redis"

    def __init__(
        self,
        config: RedisStreamSource,
        *,
        consumer_name: str,
        error_destination: str | None,
        credentials: Credentials,
        claim_idle_seconds: float,
    ) -> None:
        self._config = config
        self._consumer = consumer_name
        self._error_destination = error_destination
        self._credentials = credentials
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._client: aioredis.Redis | None = None
        self._own_cursor: str | None = "0"  # own pending entries to take back, then None
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("the Redis stream source is not open")
        return self._client

    async def open(self) -> None:
        self._client = aioredis.from_url(
            self._config.url,
            username=self._credentials.username,
            password=self._credentials.password,
        )
        try:
            await self.client.xgroup_create(
                self._config.stream, self._config.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _message(self, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Message:
        ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        body = fields.get(b"body")
        if body is None:
            body = json.dumps(
                {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
            ).encode()
        return Message(id=f"{self._config.stream}:{ident}", body=body, handle=ident)

    async def receive(self, count: int, *, wait_seconds: float) -> list[Message]:
        stream, group = self._config.stream, self._config.group
        if self._own_cursor is not None:
            reply: Any = await self.client.xreadgroup(
                group, self._consumer, {stream: self._own_cursor}, count=count
            )
            entries = reply[0][1] if reply else []
            if entries:
                self._own_cursor = entries[-1][0].decode()
                return [self._message(i, f) for i, f in entries if f]
            self._own_cursor = None
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + max(1.0, self._claim_idle_ms / 2000)
            claim: Any = await self.client.xautoclaim(
                stream, group, self._consumer, self._claim_idle_ms, self._claim_cursor, count=count
            )
            cursor, claimed = claim[0], claim[1]
            self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            if claimed:
                return [self._message(i, f) for i, f in claimed if f]
        reply = await self.client.xreadgroup(
            group, self._consumer, {stream: ">"}, count=count, block=int(wait_seconds * 1000)
        )
        entries = reply[0][1] if reply else []
        return [self._message(i, f) for i, f in entries]

    async def ack(self, message: Message) -> None:
        await self.client.xack(self._config.stream, self._config.group, message.handle)

    async def keep_alive(self, message: Message) -> None:
        await self.client.xclaim(
            self._config.stream,
            self._config.group,
            self._consumer,
            0,
            [message.handle],
            justid=True,
        )

    async def dead(self, message: Message, error: dict[str, Any] | None) -> None:
        if self._error_destination is None:
            return
        await self.client.xadd(
            self._error_destination,
            {
                "body": message.body,
                "error": json.dumps(error or {}),
                "sourceStream": self._config.stream,
                "sourceId": str(message.handle),
            },
        )

    async def lag(self) -> int:
        groups: Any = await self.client.xinfo_groups(self._config.stream)
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self._config.group:
                return int(group.get("lag") or 0)
        return 0
