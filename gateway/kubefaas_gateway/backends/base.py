"""The contract between the gateway and whatever runs function instances.

The invoker needs one thing per request, `acquire(fn, deadline)`: a ready instance (the
least busy one), activating the function from zero and waiting for its health check if
needed. Stats and metrics read `instances` and `ready_count`. Only a backend whose
gateway sets replicas itself (local mode, `ScalableBackend`) has `scale`: in a cluster the
operator is the one writer of replicas, and the gateway only activates from zero.
Balancing reads per-instance in-flight counts from the `Tracker` the app hands to `start`,
so the gateway has one source of load figures, and every backend picks with the one rule
of `least_inflight`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from kubefaas.api import Function
from kubefaas_gateway.tracker import Tracker


@dataclass(eq=False, slots=True)
class Instance:
    """One running copy of a function that speaks the runtime contract at `base_url`."""

    id: str
    function_key: str
    host: str
    port: int
    ready: bool = False
    # Monotonic time the instance passed its health check (None while starting).
    ready_at: float | None = None
    # (error type, message) when the backend ended the instance on purpose (a limit it
    # broke): calls it drops answer 502 with these instead of InstanceLost.
    lost: tuple[str, str] | None = None
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = f"http://{self.host}:{self.port}"


T = TypeVar("T", bound=Instance)


def least_inflight(ready: Sequence[T], load: Callable[[str], int], turn: int = 0) -> T:
    """The ready instance with the lowest `load` (by instance id); `ready` is not empty.

    Ties are broken by starting the scan at `turn` (a counter the caller advances), so a
    burst arriving at idle instances spreads over them instead of piling onto the first.
    """
    count = len(ready)
    if count == 1:
        return ready[0]
    best = ready[turn % count]
    best_load = load(best.id)
    for offset in range(1, count):
        candidate = ready[(turn + offset) % count]
        candidate_load = load(candidate.id)
        if candidate_load < best_load:
            best, best_load = candidate, candidate_load
    return best


class Acquired(NamedTuple):
    """A ready instance for one request; `cold_start` if the request waited for it."""

    instance: Instance
    cold_start: bool


class Backend(Protocol):
    """What runs instances. Methods are called on the gateway's event loop only."""

    async def start(self, *, tracker: Tracker) -> None:
        """Begin serving (connect, watch); `tracker` gives per-instance in-flight counts."""

    async def stop(self) -> None:
        """Release everything this backend started; no instance may outlive it."""

    async def acquire(self, fn: Function, deadline: float) -> Acquired:
        """A ready instance of `fn` with the fewest in-flight requests.

        With none ready, activate `fn` (start an instance, 0 -> 1) and wait for its health
        check until `deadline` (epoch seconds). Raises `InvocationTimeout` when the deadline
        passes first, `NoCapacity` when no instance can be started.
        """
        ...

    def evict(self, instance: Instance) -> None:
        """The invoker could not connect to `instance`: stop routing to it."""

    def instances(self, fn: Function) -> list[Instance]:
        """Every instance of `fn`, starting or ready."""
        ...

    def ready_count(self, fn: Function) -> int:
        """How many instances of `fn` can take requests now."""
        ...


class ScalableBackend(Backend, Protocol):
    """A backend whose gateway sets replicas itself (local mode's autoscaler)."""

    async def scale(self, fn: Function, replicas: int) -> None:
        """Converge `fn` to `replicas` instances (0 = scale to zero); returns once the
        change is under way, not when new instances are ready."""
