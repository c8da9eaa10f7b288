"""Per-function in-flight and pending requests, per-instance in-flight requests.

Two counts per function, disjoint:

- *pending*: requests the gateway holds because no instance is ready yet (a cold start);
- *in-flight*: requests sent to an instance and not yet answered.

Their sum is the function's concurrency (docs/architecture.md, "The cloud-function model"), what
the autoscaler averages and what
`reservedConcurrency` caps. Per-instance in-flight feeds least-in-flight balancing.

Each change also feeds the function's `ConcurrencyWindow` (kubefaas.windows) with the new
concurrency, so the stable- and panic-window averages the autoscaler scales on are exact
time-weighted averages (a level that lasted 10 s weighs 10 s), for a few float operations
per change and nothing between changes.

Counts change only inside `async with tracker.hold(key)` / `tracker.track(key, instance)`:
increment on entry, decrement in `__aexit__`, which runs on every exit path (return,
exception, timeout, cancellation), so no path can leak a count. Entry never suspends, so
a cancellation cannot land between the increment and the guarded block.

Pure: no I/O, time comes from the injected `clock`, so tests drive it explicitly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from kubefaas import limits
from kubefaas.windows import ConcurrencyWindow


@dataclass(frozen=True, slots=True)
class FunctionLoad:
    """One function's counts at one moment."""

    inflight: int
    pending: int
    last_active: float | None

    @property
    def concurrency(self) -> int:
        return self.inflight + self.pending


class Tracker:
    """Counters the invoker updates and the balancer, idle loop and autoscaler read."""

    __slots__ = (
        "_clock",
        "_inflight",
        "_instance_inflight",
        "_last_active",
        "_pending",
        "_windows",
    )

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._inflight: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._instance_inflight: dict[str, int] = {}
        self._last_active: dict[str, float] = {}
        self._windows: dict[str, ConcurrencyWindow] = {}

    # -- guarded updates ---------------------------------------------------------------

    def track(self, key: str, instance_id: str) -> _InFlight:
        """Count one request in flight on `instance_id` of function `key` while inside."""
        return _InFlight(self, key, instance_id)

    def hold(self, key: str) -> _Pending:
        """Count one request pending (waiting for an instance) of `key` while inside."""
        return _Pending(self, key)

    # -- reads -------------------------------------------------------------------------

    def inflight(self, key: str) -> int:
        return self._inflight.get(key, 0)

    def pending(self, key: str) -> int:
        return self._pending.get(key, 0)

    def concurrency(self, key: str) -> int:
        """In-flight plus pending: the function's concurrency right now."""
        return self._inflight.get(key, 0) + self._pending.get(key, 0)

    def instance_inflight(self, instance_id: str) -> int:
        return self._instance_inflight.get(instance_id, 0)

    def last_active(self, key: str) -> float | None:
        """Clock time a request of `key` last arrived or finished; None if never."""
        return self._last_active.get(key)

    def load(self, key: str) -> FunctionLoad:
        return FunctionLoad(
            inflight=self._inflight.get(key, 0),
            pending=self._pending.get(key, 0),
            last_active=self._last_active.get(key),
        )

    def averages(
        self,
        key: str,
        *,
        stable_seconds: float = limits.STABLE_WINDOW_SECONDS,
        panic_seconds: float = limits.PANIC_WINDOW_SECONDS,
    ) -> tuple[float, float]:
        """Time-weighted average concurrency of `key` over the stable and panic windows,
        up to now; (0, 0) for a function never seen."""
        window = self._windows.get(key)
        if window is None:
            return 0.0, 0.0
        now = self._clock()
        return window.average(stable_seconds, now), window.average(panic_seconds, now)

    def keys(self) -> set[str]:
        """Every function key the tracker has seen."""
        return set(self._last_active)

    def snapshot(self) -> dict[str, FunctionLoad]:
        return {key: self.load(key) for key in self._last_active}

    def now(self) -> float:
        """The tracker's clock, so readers compare `last_active` on the same scale."""
        return self._clock()

    # -- the counter operations, used by the context managers only -------------------------

    def _enter(self, key: str, instance_id: str) -> None:
        self._inflight[key] = self._inflight.get(key, 0) + 1
        self._instance_inflight[instance_id] = self._instance_inflight.get(instance_id, 0) + 1
        self._last_active[key] = now = self._clock()
        self._changed(key, now)

    def _exit(self, key: str, instance_id: str) -> None:
        self._inflight[key] -= 1
        left = self._instance_inflight[instance_id] - 1
        if left:
            self._instance_inflight[instance_id] = left
        else:
            # Instances come and go: drop idle ones so the map does not grow forever.
            del self._instance_inflight[instance_id]
        self._last_active[key] = now = self._clock()
        self._changed(key, now)

    def _hold(self, key: str) -> None:
        self._pending[key] = self._pending.get(key, 0) + 1
        self._last_active[key] = now = self._clock()
        self._changed(key, now)

    def _release(self, key: str) -> None:
        self._pending[key] -= 1
        self._changed(key, self._clock())

    def _changed(self, key: str, now: float) -> None:
        """Feed the new concurrency of `key` into its rolling window."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = ConcurrencyWindow(now=now)
        window.update(self._inflight.get(key, 0) + self._pending.get(key, 0), now)


class _InFlight:
    __slots__ = ("_instance_id", "_key", "_tracker")

    def __init__(self, tracker: Tracker, key: str, instance_id: str) -> None:
        self._tracker = tracker
        self._key = key
        self._instance_id = instance_id

    async def __aenter__(self) -> None:
        self._tracker._enter(self._key, self._instance_id)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tracker._exit(self._key, self._instance_id)


class _Pending:
    __slots__ = ("_key", "_tracker")

    def __init__(self, tracker: Tracker, key: str) -> None:
        self._tracker = tracker
        self._key = key

    async def __aenter__(self) -> None:
        self._tracker._hold(self._key)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tracker._release(self._key)
