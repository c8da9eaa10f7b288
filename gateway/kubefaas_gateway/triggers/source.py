"""The message-source interface a queue trigger reads (docs/triggers.md, "Sources").

A source hands out `Message`s with a stable id (the broker's own: a stream entry id, a
JetStream sequence), so a message received twice (redelivered after a crash, or by two
replicas) maps to one async invocation. `ack` is called only after that invocation
succeeded or was dead-lettered; `keep_alive` while it runs, so the broker does not give
the message to someone else; `dead` publishes a dead one to the error destination.
A Kafka source would implement the same five calls (offsets as ids, commit as ack).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Message:
    id: str  # stable across redeliveries
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    handle: Any = None  # the broker's own object, for ack


@dataclass(frozen=True)
class Credentials:
    """From the trigger's secretRef: `username`/`password`, or `token` (NATS)."""

    username: str | None = None
    password: str | None = None
    token: str | None = None


class Source(abc.ABC):
    kind: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; create the consumer (group) when it is missing."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def receive(self, count: int, *, wait_seconds: float) -> list[Message]:
        """Up to `count` messages: first those this consumer received before and never
        acked (a restart), then new ones; waits at most `wait_seconds` for any."""

    @abc.abstractmethod
    async def ack(self, message: Message) -> None: ...

    @abc.abstractmethod
    async def keep_alive(self, message: Message) -> None:
        """The message is still being worked on: do not redeliver it yet."""

    @abc.abstractmethod
    async def dead(self, message: Message, error: dict[str, Any] | None) -> None:
        """Publish a message that ended dead to the error destination (if one is set)."""

    @abc.abstractmethod
    async def lag(self) -> int:
        """Messages in the broker not yet delivered to this trigger's consumer."""
