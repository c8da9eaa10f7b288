"""The decider with explicit time: what a function's replica count does under load.

A small simulation drives it the way the gateway and the operator do: a time-weighted
window is fed the offered concurrency, `decide` runs every tick, and the replicas it asks
for become ready at the next tick. No sleeping anywhere.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubefaas import limits
from kubefaas.api import Scaling
from kubefaas.scaling import (
    SCALE_DOWN_DELAY_SECONDS,
    Decision,
    Observation,
    Reason,
    ScalingState,
    Tuning,
    decide,
    initial_state,
)
from kubefaas.windows import ConcurrencyWindow

TICK = limits.AUTOSCALER_TICK_SECONDS
STABLE = limits.STABLE_WINDOW_SECONDS


def observe(
    *,
    stable: float = 0.0,
    panic: float | None = None,
    in_flight: int = 0,
    pending: int = 0,
    queued: int = 0,
    ready: int = 0,
    last_activity: float | None = None,
) -> Observation:
    return Observation(
        stable_concurrency=stable,
        panic_concurrency=stable if panic is None else panic,
        in_flight=in_flight,
        pending=pending,
        queued=queued,
        ready=ready,
        last_activity=last_activity,
    )


@dataclass
class Simulation:
    """One function: offered load in, replicas out, one `decide` per tick."""

    scaling: Scaling
    now: float = 0.0
    ready: int = 0
    queued: int = 0
    window: ConcurrencyWindow = field(init=False)
    state: ScalingState = field(init=False)
    last_activity: float | None = None
    history: list[tuple[float, Decision]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.window = ConcurrencyWindow(now=self.now)
        self.state = initial_state(self.now)

    def run(self, seconds: float, load: Callable[[float], float]) -> Decision:
        """Offer `load(now)` concurrent requests for `seconds`, ticking the decider."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            level = load(self.now)
            self.window.update(level, self.now)
            if level > 0:
                self.last_activity = self.now
            self.now += TICK
            observation = observe(
                stable=self.window.average(limits.STABLE_WINDOW_SECONDS, self.now),
                panic=self.window.average(limits.PANIC_WINDOW_SECONDS, self.now),
                in_flight=round(level),
                queued=self.queued,
                ready=self.ready,
                last_activity=self.last_activity,
            )
            decision = decide(self.state, observation, self.now, scaling=self.scaling)
            self.state = decision.state
            self.history.append((self.now, decision))
            self.ready = decision.replicas  # instances are up by the next tick
        return self.history[-1][1]

    def decisions(self, start: float = 0.0, end: float = float("inf")) -> list[Decision]:
        """The decisions taken at times in [start, end)."""
        return [d for t, d in self.history if start <= t < end]

    def changes(self, since: float = 0.0) -> int:
        """How many times the replica count changed after `since`."""
        replicas = [d.replicas for d in self.decisions(since)]
        return sum(1 for a, b in itertools.pairwise(replicas) if a != b)


def constant(level: float) -> Callable[[float], float]:
    return lambda _now: level


def test_steady_60_concurrent_at_target_1_asks_for_60_and_max_scale_caps_it_at_20() -> None:
    state = initial_state(0.0)
    obs = observe(stable=60, in_flight=60, ready=60, last_activity=100.0)
    unbounded = decide(state, obs, 100.0, scaling=Scaling(target_concurrency=1, max_scale=1000))
    assert unbounded.replicas == 60
    assert unbounded.reason is Reason.STABLE

    capped = decide(state, obs, 100.0, scaling=Scaling(target_concurrency=1, max_scale=20))
    assert capped.replicas == 20
    assert capped.reason is Reason.MAX_SCALE


def test_ramp_up_follows_the_load() -> None:
    sim = Simulation(Scaling(target_concurrency=10, max_scale=100))
    # Load rises by 10 concurrent every 30 s up to 100.
    sim.run(300, lambda now: min(100.0, 10.0 * (1 + now // 30)))
    assert sim.ready == 10
    # ... and never over-provisions much on the way: at most the panic-window figure.
    assert max(d.replicas for d in sim.decisions()) <= 10


def test_burst_panics_scales_up_at_once_and_never_down_during_the_panic() -> None:
    sim = Simulation(Scaling(target_concurrency=1, max_scale=100))
    sim.run(120, constant(4))
    assert sim.ready == 4
    burst = sim.run(10, constant(40))
    assert burst.in_panic
    assert burst.reason is Reason.PANIC
    assert sim.ready >= 30  # the stable figure alone would still be ~10
    peak = sim.ready
    last_trigger = burst.state.last_panic_trigger
    assert last_trigger is not None
    # The burst stops; for a whole stable window after the last trigger nothing goes down.
    calm = sim.now
    sim.run(180, constant(4))
    during = sim.decisions(calm, last_trigger + STABLE)
    assert len(during) >= (last_trigger + STABLE - calm) // TICK
    assert all(d.in_panic for d in during)
    assert all(d.replicas >= peak for d in during)
    # Then the panic ends and the stable figure (rate limited) takes over.
    assert not sim.decisions(last_trigger + STABLE)[-1].in_panic
    assert sim.ready == 4


@pytest.mark.parametrize("seed", range(5))
def test_steady_noisy_load_does_not_oscillate_over_ten_minutes(seed: int) -> None:
    rng = random.Random(seed)
    sim = Simulation(Scaling(target_concurrency=10, max_scale=100))
    # Offered concurrency wanders +-30 % around 45 every tick: the stable average wants 5.
    sim.run(600, lambda _now: 45 * rng.uniform(0.7, 1.3))
    assert sim.ready == 5
    # After the first window (the cold start's panic ending) the count barely moves.
    assert sim.changes(since=STABLE) <= 2


def test_one_tick_dip_at_a_boundary_does_not_remove_an_instance() -> None:
    scaling = Scaling(target_concurrency=10, max_scale=100)
    state = initial_state(0.0)
    steady = observe(stable=41, panic=41, in_flight=41, ready=5, last_activity=100.0)
    dip = observe(stable=39.9, panic=38, in_flight=38, ready=5, last_activity=102.0)
    state = decide(state, steady, 100.0, scaling=scaling).state
    held = decide(state, dip, 102.0, scaling=scaling)
    assert held.replicas == 5
    assert held.reason is Reason.SCALE_DOWN_DELAY
    # A dip that lasts beyond the delay is followed.
    state = held.state
    now = 102.0
    while now < 100.0 + SCALE_DOWN_DELAY_SECONDS:
        now += TICK
        state = decide(state, dip, now, scaling=scaling).state
    assert state.desired == 4


def test_exact_steady_load_settles_and_never_changes_again() -> None:
    sim = Simulation(Scaling(target_concurrency=10, max_scale=100))
    sim.run(600, constant(30))
    assert sim.ready == 3
    assert sim.changes(since=STABLE) == 0


def test_idle_function_scales_to_zero_only_after_the_idle_window() -> None:
    sim = Simulation(Scaling(target_concurrency=1, scale_to_zero_after_seconds=30))
    sim.run(20, constant(8))
    assert sim.ready == 8
    last_call = sim.last_activity
    assert last_call is not None
    sim.run(60, constant(0))
    # Not within the idle window, even though the traffic has stopped ...
    assert all(d.replicas >= 1 for d in sim.decisions(0, last_call + 30))
    # ... then down (at most halving per tick) to zero, and it stays there.
    assert sim.ready == 0
    zero_at = min(t for t, d in sim.history if d.replicas == 0)
    assert last_call + 30 <= zero_at <= last_call + 30 + 4 * TICK
    assert sim.decisions(zero_at)[0].reason is Reason.SCALE_TO_ZERO
    assert sim.decisions(zero_at + TICK)[0].reason is Reason.IDLE


def test_scale_to_zero_goes_down_by_at_most_half_per_tick() -> None:
    scaling = Scaling(target_concurrency=1, scale_to_zero_after_seconds=10)
    state = initial_state(0.0)
    replicas = 8
    seen = [replicas]
    now = 100.0
    while replicas:
        obs = observe(stable=0, ready=replicas, last_activity=50.0)
        decision = decide(state, obs, now, scaling=scaling)
        assert decision.replicas >= replicas // 2
        state, replicas = decision.state, decision.replicas
        seen.append(replicas)
        now += TICK
    assert seen == [8, 4, 2, 1, 0]


def test_never_scale_to_zero_keeps_one_instance_once_activated() -> None:
    scaling = Scaling(target_concurrency=1, scale_to_zero_after_seconds=0)
    decision = decide(
        initial_state(0.0), observe(ready=1, last_activity=1.0), 100_000.0, scaling=scaling
    )
    assert decision.replicas == 1
    assert decision.reason is Reason.KEPT_WARM


def test_function_never_called_stays_at_zero() -> None:
    for after in (0, 10):
        scaling = Scaling(scale_to_zero_after_seconds=after)
        decision = decide(initial_state(0.0), observe(), 50.0, scaling=scaling)
        assert decision.replicas == 0
        assert decision.reason is Reason.IDLE


def test_queued_async_events_keep_an_instance_past_the_idle_window() -> None:
    scaling = Scaling(target_concurrency=1, scale_to_zero_after_seconds=10)
    obs = observe(queued=5, ready=1, last_activity=0.0)
    decision = decide(initial_state(0.0), obs, 1000.0, scaling=scaling)
    assert decision.replicas == 1
    assert decision.reason is Reason.HELD_BY_QUEUED


def test_queued_events_bring_a_scaled_to_zero_function_back() -> None:
    scaling = Scaling(target_concurrency=1, scale_to_zero_after_seconds=10)
    obs = observe(queued=1, ready=0, last_activity=0.0)
    assert decide(initial_state(0.0), obs, 1000.0, scaling=scaling).replicas == 1


def test_pending_work_keeps_at_least_one_instance() -> None:
    scaling = Scaling(target_concurrency=10, scale_to_zero_after_seconds=10)
    # A cold start in progress: the gateway activated 0 -> 1 and a caller is waiting.
    obs = observe(stable=0, pending=1, ready=0, last_activity=500.0)
    decision = decide(initial_state(0.0), obs, 1000.0, scaling=scaling)
    assert decision.replicas == 1
    assert decision.reason is Reason.HELD_BY_PENDING


def test_pending_work_holds_current_capacity() -> None:
    # The stable average says 2, but callers are waiting for an instance right now.
    scaling = Scaling(target_concurrency=10)
    obs = observe(stable=15, panic=15, in_flight=10, pending=3, ready=6, last_activity=99.0)
    decision = decide(initial_state(0.0), obs, 100.0, scaling=scaling)
    assert decision.replicas == 6
    assert decision.reason is Reason.HELD_BY_PENDING


def test_min_scale_keeps_instances_even_when_idle() -> None:
    scaling = Scaling(min_scale=2, scale_to_zero_after_seconds=10)
    decision = decide(initial_state(0.0), observe(ready=2), 10_000.0, scaling=scaling)
    assert decision.replicas == 2
    assert decision.reason is Reason.MIN_SCALE


def test_max_scale_caps_a_panic() -> None:
    scaling = Scaling(target_concurrency=1, max_scale=5)
    obs = observe(stable=1, panic=500, in_flight=500, ready=1, last_activity=10.0)
    decision = decide(initial_state(0.0), obs, 10.0, scaling=scaling)
    assert decision.replicas == 5
    assert decision.in_panic
    assert decision.state.panic_peak == 5


def test_scale_down_is_rate_limited_to_half_per_tick() -> None:
    scaling = Scaling(target_concurrency=1, max_scale=100)
    obs = observe(stable=1, panic=1, in_flight=1, ready=40, last_activity=100.0)
    decision = decide(initial_state(0.0), obs, 100.0, scaling=scaling)
    assert decision.replicas == 20
    assert decision.reason is Reason.SCALE_DOWN_RATE


def test_scale_up_is_not_rate_limited() -> None:
    scaling = Scaling(target_concurrency=1, max_scale=1000)
    obs = observe(stable=300, panic=300, in_flight=300, ready=1, last_activity=100.0)
    assert decide(initial_state(0.0), obs, 100.0, scaling=scaling).replicas == 300


def test_fresh_autoscaler_gives_running_instances_a_full_idle_period() -> None:
    # An operator restart: 3 instances run, the gateways report no activity at all.
    scaling = Scaling(target_concurrency=1, scale_to_zero_after_seconds=60)
    state = initial_state(1000.0)
    decision = decide(state, observe(ready=3), 1002.0, scaling=scaling)
    assert decision.replicas >= 1
    decision = decide(decision.state, observe(ready=1), 1061.0, scaling=scaling)
    assert decision.replicas == 0


def test_state_records_when_it_last_scaled_up_and_down() -> None:
    scaling = Scaling(target_concurrency=1, max_scale=100)
    up = decide(
        initial_state(0.0),
        observe(stable=4, in_flight=4, ready=0, last_activity=1.0),
        2.0,
        scaling=scaling,
    )
    assert up.state.last_scale_up == 2.0
    down = decide(
        up.state,
        observe(stable=1, panic=1, in_flight=1, ready=4, last_activity=3.0),
        200.0,
        scaling=scaling,
    )
    assert down.replicas == 2
    assert down.state.last_scale_down == 200.0
    assert down.state.last_scale_up == 2.0


def test_bad_observations_and_tuning_are_refused_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="pending"):
        observe(pending=-1)
    with pytest.raises(ValueError, match="stable_concurrency"):
        observe(stable=float("nan"))
    with pytest.raises(ValueError, match="panic_threshold"):
        Tuning(panic_threshold=1.0)


@given(
    stable=st.floats(min_value=0, max_value=5000),
    panic=st.floats(min_value=0, max_value=5000),
    in_flight=st.integers(min_value=0, max_value=5000),
    pending=st.integers(min_value=0, max_value=100),
    queued=st.integers(min_value=0, max_value=100),
    ready=st.integers(min_value=0, max_value=1000),
    idle=st.floats(min_value=0, max_value=1000),
    min_scale=st.integers(min_value=0, max_value=10),
    span=st.integers(min_value=0, max_value=100),
    target=st.integers(min_value=1, max_value=100),
    after=st.sampled_from([0, 10, 120]),
)
def test_invariants_hold_for_any_observation(
    stable: float,
    panic: float,
    in_flight: int,
    pending: int,
    queued: int,
    ready: int,
    idle: float,
    min_scale: int,
    span: int,
    target: int,
    after: int,
) -> None:
    scaling = Scaling(
        min_scale=min_scale,
        max_scale=max(1, min_scale + span),
        target_concurrency=target,
        scale_to_zero_after_seconds=after,
    )
    now = 10_000.0
    obs = observe(
        stable=stable,
        panic=panic,
        in_flight=in_flight,
        pending=pending,
        queued=queued,
        ready=ready,
        last_activity=now - idle,
    )
    decision = decide(initial_state(0.0), obs, now, scaling=scaling)
    assert scaling.min_scale <= decision.replicas <= scaling.max_scale
    if obs.busy:
        assert decision.replicas >= 1
    if pending:
        assert decision.replicas >= min(ready, scaling.max_scale)
    if not decision.in_panic and decision.replicas < ready:
        assert decision.replicas >= min(max(min_scale, ready // 2), scaling.max_scale)
