"""The autoscaler's decider: how many instances a function should run.

See docs/architecture.md, "Autoscaling".

`decide(state, observation, now, scaling=...)` is pure: no clock, no I/O, no randomness.
The gateway (local mode) and the operator (cluster mode) gather an `Observation`, call it
every `limits.AUTOSCALER_TICK_SECONDS`, act on `Decision.replicas` and keep
`Decision.state` for the next tick. Tests drive it with explicit times and never sleep.

The rules follow Knative's KPA, in this order:

1. **Stable**: desired = ceil(stable-window average concurrency / targetConcurrency).
2. **Panic**: when the panic-window average asks for at least `PANIC_THRESHOLD` (200 %) of
   the current capacity (ready instances, at least 1), the panic-window figure is used and
   nothing scales down. Panic lasts until a whole stable window has passed since the last
   tick that was over the threshold, so the burst has reached the stable average by then.
   **Activation waiters** (docs/architecture.md, "Cold start"): while no instance is ready,
   the requests waiting on the 0 -> 1 activation are not an overload of any capacity, so
   they never start a panic (the pending floor of rule 4 brings the first instance). A
   panic that starts within one panic window of an activation (its window still holds the
   time those requests waited) ends early, once the panic-window desire has stayed under
   the ready capacity for a whole panic window, instead of holding the burst's peak
   (often `maxScale`) for the stable window. Panics of a running function keep the hold.
3. **Scale-down delay and rate**: outside panic, the stable figure used is the highest one
   of the last `scale_down_delay_seconds` (Knative's scale-down-delay), so a one-tick dip
   of the average right at an instance boundary does not kill an instance only to
   cold-start it again two seconds later; and one tick removes at most half the ready
   instances (`MAX_SCALE_DOWN_RATE`): a dip in traffic costs a little capacity, never all.
4. **Work floors**: requests waiting for an instance (pending) hold the current capacity,
   at least 1; queued async events and in-flight requests keep at least 1 instance.
5. **Scale to zero**: the last instance goes only after `scaleToZeroAfterSeconds` without
   any in-flight, pending or queued work. Idleness is the user's explicit knob, so once it
   has lasted that long the function is wound down (still at most halving per tick, so the
   way down is 8 -> 4 -> 2 -> 1 -> 0) even if a panic was still being held. With
   `scaleToZeroAfterSeconds: 0` a function that has been activated keeps at least one
   instance forever; one that was never called stays at zero until its first call (the
   gateway activates it), so declaring functions costs nothing.
6. **Bounds**: the result is clamped to [minScale, maxScale]; minScale beats rule 5.

Scale-up is not rate limited (Knative's default rate of 1000x is no limit either): under a
burst, instances are cheaper than queued callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final

from kubefaas import limits
from kubefaas.api import Scaling

# Averages are sums of float products; a stable 20.000000000004 must not ask for 21.
_EPSILON: Final = 1e-9

# Not a Function API knob, so not in `limits`: long enough to ride out a few ticks of noise
# in the stable average, short against the 60 s window that already delays a scale-down.
SCALE_DOWN_DELAY_SECONDS: Final = 10.0


class Reason(StrEnum):
    """Which rule set the replica count: for logs, `/internal/stats` and Function status."""

    STABLE = "stable"
    PANIC = "panic"
    SCALE_DOWN_DELAY = "scale-down delay"
    SCALE_DOWN_RATE = "scale-down rate limit"
    HELD_BY_PENDING = "held by pending work"
    HELD_BY_QUEUED = "held by queued events"
    HELD_BY_IN_FLIGHT = "held by in-flight work"
    KEPT_WARM = "kept warm until idle timeout"
    SCALE_TO_ZERO = "scale-to-zero"
    IDLE = "idle"
    MIN_SCALE = "min-scale"
    PROVISIONED = "provisioned"
    MAX_SCALE = "max-scale"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tuning:
    """The autoscaler's windows and rates; defaults from `kubefaas.limits` (Knative KPA)."""

    stable_window_seconds: float = limits.STABLE_WINDOW_SECONDS
    panic_window_seconds: float = limits.PANIC_WINDOW_SECONDS
    panic_threshold: float = limits.PANIC_THRESHOLD
    max_scale_down_rate: float = limits.MAX_SCALE_DOWN_RATE
    scale_down_delay_seconds: float = SCALE_DOWN_DELAY_SECONDS
    tick_seconds: float = limits.AUTOSCALER_TICK_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.panic_window_seconds <= self.stable_window_seconds:
            raise ValueError(
                "panic_window_seconds must be positive and at most stable_window_seconds "
                f"(got {self.panic_window_seconds} and {self.stable_window_seconds})"
            )
        if not self.panic_threshold > 1:
            raise ValueError(f"panic_threshold must exceed 1, got {self.panic_threshold}")
        if not self.max_scale_down_rate > 1:
            raise ValueError(f"max_scale_down_rate must exceed 1, got {self.max_scale_down_rate}")
        if not self.scale_down_delay_seconds >= 0:
            raise ValueError(
                "scale_down_delay_seconds must not be negative, "
                f"got {self.scale_down_delay_seconds}"
            )
        if not self.tick_seconds > 0:
            raise ValueError(f"tick_seconds must be positive, got {self.tick_seconds}")


DEFAULT_TUNING: Final = Tuning()


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What the gateways saw of one function, summed over every gateway.

    Concurrency is in-flight + pending requests; the averages are time-weighted over the
    stable and panic windows (`kubefaas.windows`). `last_activity` is when any request
    last started or finished (same clock as `now`), None if none was ever seen.
    """

    stable_concurrency: float
    panic_concurrency: float
    in_flight: int
    pending: int
    queued: int
    ready: int
    last_activity: float | None

    def __post_init__(self) -> None:
        for name in (
            "stable_concurrency",
            "panic_concurrency",
            "in_flight",
            "pending",
            "queued",
            "ready",
        ):
            value = getattr(self, name)
            if value < 0 or value != value:  # value != value: NaN
                raise ValueError(f"observation.{name} must be a non-negative number, got {value}")

    @property
    def busy(self) -> bool:
        """Any work that an instance is doing or will have to do."""
        return self.in_flight > 0 or self.pending > 0 or self.queued > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingState:
    """What the decider remembers between ticks; `decide` returns the next one.

    `since` is when this state began (the first tick of this autoscaler): a freshly
    restarted autoscaler that finds instances running but no activity record gives them a
    full idle period before removing them rather than assuming they were idle forever.
    """

    since: float
    desired: int = 0
    panic_since: float | None = None
    last_panic_trigger: float | None = None
    panic_peak: int = 0
    # Ready instances at the last tick; an activation is a tick where it goes 0 -> n.
    last_ready: int = 0
    activated_at: float | None = None
    # The current panic began within a panic window of an activation.
    panic_after_activation: bool = False
    # Since when the panic-window desire has been under the ready capacity, in a panic.
    panic_under_since: float | None = None
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    # (time, stable figure) of the ticks within the scale-down delay, oldest first.
    recent_stable: tuple[tuple[float, int], ...] = ()

    @property
    def in_panic(self) -> bool:
        return self.panic_since is not None


def initial_state(now: float, *, replicas: int = 0) -> ScalingState:
    """The state before the first tick; `replicas` is what is already running, if known."""
    return ScalingState(since=now, desired=replicas, last_ready=replicas)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """How many replicas to run, why, and the state for the next tick."""

    replicas: int
    reason: Reason
    state: ScalingState
    stable_desired: int
    panic_desired: int

    @property
    def in_panic(self) -> bool:
        return self.state.in_panic


def _instances_for(concurrency: float, target: int) -> int:
    return max(0, math.ceil(concurrency / target - _EPSILON))


def decide(
    state: ScalingState,
    observation: Observation,
    now: float,
    *,
    scaling: Scaling,
    tuning: Tuning = DEFAULT_TUNING,
    provisioned: int = 0,
) -> Decision:
    """The replica count for one function at `now`; see the module docstring for the rules.

    `provisioned` is the minScale of the open provisioned windows (`kubefaas.provisioned`).
    """
    obs = observation
    target = scaling.target_concurrency
    capacity = max(1, obs.ready)
    stable_desired = _instances_for(obs.stable_concurrency, target)
    panic_desired = _instances_for(obs.panic_concurrency, target)

    # Panic bookkeeping (Knative: the threshold compares the un-rounded demand). With no
    # instance ready, every waiting request waits on the activation: no trigger.
    activated_at = state.activated_at
    if obs.ready > 0 and state.last_ready == 0:
        activated_at = now
    over_threshold = (
        obs.ready > 0 and obs.panic_concurrency / target / capacity >= tuning.panic_threshold
    )
    panic_since = state.panic_since
    last_trigger = state.last_panic_trigger
    panic_peak = state.panic_peak
    after_activation = state.panic_after_activation
    under_since = state.panic_under_since
    if panic_since is not None and panic_desired < obs.ready:
        under_since = now if under_since is None else under_since
    else:
        under_since = None
    if over_threshold:
        if panic_since is None:
            panic_since = now
            after_activation = (
                activated_at is not None and now - activated_at < tuning.panic_window_seconds
            )
        last_trigger = now
    elif panic_since is not None and (
        (last_trigger is not None and now - last_trigger >= tuning.stable_window_seconds)
        or (
            after_activation
            and under_since is not None
            and now - under_since >= tuning.panic_window_seconds
        )
    ):
        panic_since = last_trigger = under_since = None
        panic_peak = 0
        after_activation = False

    delay = tuning.scale_down_delay_seconds
    recent_stable = (
        *((t, d) for t, d in state.recent_stable if now - t < delay),
        (now, stable_desired),
    )
    delayed_stable = max(d for _, d in recent_stable)

    if panic_since is not None:
        # Never scale down while panicking: not below the peak asked for during this panic
        # nor below what is running now.
        desired = max(stable_desired, panic_desired, panic_peak, obs.ready)
        panic_peak = desired
        reason = Reason.PANIC
    else:
        desired = delayed_stable
        reason = Reason.STABLE if delayed_stable == stable_desired else Reason.SCALE_DOWN_DELAY
        floor_by_rate = math.floor(capacity / tuning.max_scale_down_rate)
        if desired < floor_by_rate and desired < obs.ready:
            desired = floor_by_rate
            reason = Reason.SCALE_DOWN_RATE

    # Scale to zero / keep warm.
    activity = state.since if obs.last_activity is None else max(obs.last_activity, state.since)
    idle_for = 0.0 if obs.busy else now - activity
    after = scaling.scale_to_zero_after_seconds
    running = obs.ready > 0 or state.desired > 0
    if not obs.busy and after > 0 and idle_for >= after:
        # Idle long enough: wind down to zero, at most halving per tick; this ends a panic.
        panic_since = last_trigger = under_since = None
        panic_peak = 0
        after_activation = False
        floor_by_rate = math.floor(capacity / tuning.max_scale_down_rate) if obs.ready else 0
        desired = min(desired, floor_by_rate)
        reason = Reason.SCALE_TO_ZERO if running else Reason.IDLE
    elif desired < 1:
        if obs.pending > 0:
            desired, reason = 1, Reason.HELD_BY_PENDING
        elif obs.queued > 0:
            desired, reason = 1, Reason.HELD_BY_QUEUED
        elif obs.in_flight > 0:
            desired, reason = 1, Reason.HELD_BY_IN_FLIGHT
        elif running:
            desired, reason = 1, Reason.KEPT_WARM
        else:
            reason = Reason.IDLE
    if obs.pending > 0 and desired < obs.ready:
        # Callers are waiting for capacity right now: removing any would make them wait more.
        desired, reason = obs.ready, Reason.HELD_BY_PENDING

    if desired < scaling.min_scale:
        desired, reason = scaling.min_scale, Reason.MIN_SCALE
    if desired < min(provisioned, scaling.max_scale):
        desired, reason = min(provisioned, scaling.max_scale), Reason.PROVISIONED
    elif desired > scaling.max_scale:
        desired, reason = scaling.max_scale, Reason.MAX_SCALE
    if panic_since is not None:
        panic_peak = min(panic_peak, scaling.max_scale)

    last_up = now if desired > state.desired else state.last_scale_up
    last_down = now if desired < state.desired else state.last_scale_down
    new_state = replace(
        state,
        desired=desired,
        panic_since=panic_since,
        last_panic_trigger=last_trigger,
        panic_peak=panic_peak,
        last_ready=obs.ready,
        activated_at=activated_at,
        panic_after_activation=after_activation,
        panic_under_since=under_since,
        last_scale_up=last_up,
        last_scale_down=last_down,
        recent_stable=recent_stable,
    )
    return Decision(
        replicas=desired,
        reason=reason,
        state=new_state,
        stable_desired=stable_desired,
        panic_desired=panic_desired,
    )
