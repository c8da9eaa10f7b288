"""Requests waiting on a 0 -> 1 activation and the panic mode (docs/architecture.md, "Cold
start"; kubefaas/scaling.py, rule 2).

Measured on the cluster: a 2 s first cold start queued ~20 requests at the gateway, the
decider panicked on them, jumped to `maxScale` and held it for the whole 60 s stable window.
These drive the pure decider with explicit time, the way the operator does.
"""

from __future__ import annotations

from kubefaas import limits
from kubefaas.api import Scaling
from kubefaas.scaling import Observation, Reason, decide, initial_state
from kubefaas.windows import ConcurrencyWindow

TICK = limits.AUTOSCALER_TICK_SECONDS
STABLE = limits.STABLE_WINDOW_SECONDS
PANIC = limits.PANIC_WINDOW_SECONDS
STEP = 0.1


def test_requests_waiting_on_the_activation_do_not_start_a_panic() -> None:
    scaling = Scaling(target_concurrency=1, max_scale=8)
    # 20 callers waiting for the first instance; the panic window is all waiters.
    obs = Observation(
        stable_concurrency=1.0,
        panic_concurrency=10.0,
        in_flight=0,
        pending=20,
        queued=0,
        ready=0,
        last_activity=2.0,
    )
    decision = decide(initial_state(0.0), obs, 2.0, scaling=scaling)
    assert not decision.in_panic
    assert decision.replicas == 1  # the stable figure; a panic would have asked for 8
    assert decision.reason is Reason.STABLE


def _run(
    *,
    ready_at_start: int,
    cold_start: float,
    load: float,
    backlog_seconds: float,
    seconds: float,
    burst: tuple[float, float, float] | None = None,
) -> list[tuple[float, int, bool]]:
    """Offered concurrency `load` (target 1) with the first instance ready after
    `cold_start`; until then arrivals wait (pending). `burst` = (start, end, level) adds
    load. Replicas asked for become ready one tick later. Returns (time, replicas, panic)."""
    scaling = Scaling(target_concurrency=1, max_scale=8, scale_to_zero_after_seconds=30)
    window = ConcurrencyWindow(now=0.0)
    state = initial_state(0.0, replicas=ready_at_start)
    ready = ready_at_start
    asked = ready_at_start
    first_ready = 0.0 if ready_at_start else cold_start
    history: list[tuple[float, int, bool]] = []
    now = 0.0
    next_tick = TICK
    while now < seconds:
        level = load
        if burst is not None and burst[0] <= now < burst[1]:
            level += burst[2]
        if now < first_ready:
            pending, in_flight = round(load * 2 * now), 0  # 10 rps of a 0.5 s call waiting
            concurrency = float(pending)
        else:
            # The backlog drains after the activation; then the steady load.
            drained = now - first_ready
            extra = max(0.0, load * 2 * cold_start * (1 - drained / backlog_seconds))
            in_flight, pending = round(level + extra), 0
            concurrency = level + extra
        window.update(concurrency, now)
        now = round(now + STEP, 6)
        if now + 1e-9 >= next_tick:
            next_tick += TICK
            if asked and now >= first_ready and ready == 0:
                ready = asked
            obs = Observation(
                stable_concurrency=window.average(STABLE, now),
                panic_concurrency=window.average(PANIC, now),
                in_flight=in_flight,
                pending=pending,
                queued=0,
                ready=ready,
                last_activity=now,
            )
            decision = decide(state, obs, now, scaling=scaling)
            state = decision.state
            asked = decision.replicas
            if ready:
                ready = asked  # later instances are up by the next tick
            history.append((now, decision.replicas, decision.in_panic))
    return history


def test_a_panic_right_after_an_activation_ends_once_the_demand_is_under_capacity() -> None:
    # The cluster case: 5 concurrent offered, the first pod ready after 2 s, the ~20
    # requests that waited drain within a second.
    history = _run(ready_at_start=0, cold_start=2.0, load=5.0, backlog_seconds=1.0, seconds=70)
    # The backlog may still push the count up once ...
    assert max(r for _, r, _ in history) >= 6
    # ... but the overshoot is not held for the stable window: well before 60 s the count
    # is back to what the load needs (5, 6 with the rounding of the averages).
    later = [(t, r, p) for t, r, p in history if t >= 30]
    assert all(not p for _, _, p in later)
    assert all(5 <= r <= 6 for _, r, _ in later)


def test_a_burst_on_a_running_function_still_holds_its_panic_for_the_stable_window() -> None:
    # Same load on a function already running 5 instances: a real 10 s burst of +20.
    history = _run(
        ready_at_start=5,
        cold_start=0.0,
        load=5.0,
        backlog_seconds=1.0,
        seconds=70,
        burst=(0.0, 10.0, 20.0),
    )
    peak = max(r for _, r, _ in history)
    assert peak == 8
    # Panic (and the peak) hold until a stable window after the last trigger.
    triggered = [t for t, r, p in history if p]
    assert triggered
    assert max(triggered) >= STABLE
    assert all(r == peak for t, r, _ in history if 4 <= t < STABLE)
