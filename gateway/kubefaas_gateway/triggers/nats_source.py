"""NATS JetStream as a trigger source: a durable pull consumer, ack after the outcome
(docs/triggers.md, "NATS JetStream").

The stream is created with the trigger's subject when missing (so local mode needs no
setup step), and the durable consumer with explicit acks, `ack_wait` of
`ack_wait_seconds` and at most `maxInFlight` messages unacked. A message whose invocation
is still running gets `in_progress` (+WPI) so JetStream does not redeliver it; one whose
gateway died is redelivered after `ack_wait` to any gateway on the consumer, and its
stream sequence (the message id) maps it to the same async invocation. A dead message is
published with JetStream to the error destination subject, which a stream must cover.
"""

from __future__ import annotations

import json
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from kubefaas.api import NatsSource
from kubefaas_gateway.triggers.source import Credentials, Message, Source

ERROR_HEADER = "Kubefaas-Error"
SOURCE_HEADER = "Kubefaas-Source"


class NatsJetStream(Source):
    kind = "nats"

    def __init__(
        self,
        config: NatsSource,
        *,
        error_destination: str | None,
        credentials: Credentials,
        ack_wait_seconds: float,
        max_in_flight: int,
    ) -> None:
        self._config = config
        self._error_destination = error_destination
        self._credentials = credentials
        self._ack_wait = ack_wait_seconds
        self._max_in_flight = max_in_flight
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the NATS source is not open")
        return self._js

    async def open(self) -> None:
        creds = self._credentials
        self._nc = await nats.connect(
            servers=[self._config.url],
            user=creds.username,
            password=creds.password,
            token=creds.token,
            connect_timeout=5,
            max_reconnect_attempts=-1,
        )
        self._js = self._nc.jetstream()
        stream, subject, durable = self._config.stream, self._config.subject, self._config.consumer
        try:
            await self.js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        try:
            await self.js.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            await self.js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=durable,
                    filter_subject=subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self._ack_wait,
                    max_ack_pending=self._max_in_flight,
                ),
            )
        self._sub = await self.js.pull_subscribe_bind(durable=durable, stream=stream)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
        self._nc = self._js = self._sub = None

    async def receive(self, count: int, *, wait_seconds: float) -> list[Message]:
        if self._sub is None:
            raise RuntimeError("the NATS source is not open")
        try:
            batch = await self._sub.fetch(count, timeout=wait_seconds)
        except nats.errors.TimeoutError:
            return []
        messages = []
        for msg in batch:
            sequence = msg.metadata.sequence.stream
            headers = {"nats-subject": msg.subject}
            content_type = (msg.headers or {}).get("Content-Type")
            if content_type:
                headers["content-type"] = content_type
            messages.append(
                Message(
                    id=f"{self._config.stream}:{sequence}",
                    body=msg.data,
                    headers=headers,
                    handle=msg,
                )
            )
        return messages

    async def ack(self, message: Message) -> None:
        handle: Msg = message.handle
        await handle.ack_sync()

    async def keep_alive(self, message: Message) -> None:
        handle: Msg = message.handle
        await handle.in_progress()

    async def dead(self, message: Message, error: dict[str, Any] | None) -> None:
        if self._error_destination is None:
            return
        await self.js.publish(
            self._error_destination,
            message.body,
            headers={ERROR_HEADER: json.dumps(error or {}), SOURCE_HEADER: message.id},
        )

    async def lag(self) -> int:
        info = await self.js.consumer_info(self._config.stream, self._config.consumer)
        return int(info.num_pending or 0)
