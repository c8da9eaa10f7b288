"""Rolling concurrency windows: the averages the autoscaler scales on, with explicit time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubefaas import limits
from kubefaas.windows import ConcurrencyWindow

STABLE = limits.STABLE_WINDOW_SECONDS
PANIC = limits.PANIC_WINDOW_SECONDS


def test_constant_level_averages_to_itself() -> None:
    window = ConcurrencyWindow(now=0.0)
    window.update(60, 0.0)
    assert window.average(STABLE, 120.0) == pytest.approx(60)
    assert window.average(PANIC, 120.0) == pytest.approx(60)


def test_average_is_weighted_by_time_not_by_number_of_changes() -> None:
    # 1000 changes within 10 ms at level 100, then 10 s at level 1: the 10 ms barely count.
    window = ConcurrencyWindow(now=0.0)
    for i in range(1000):
        window.update(100, i * 0.00001)
    window.update(1, 0.01)
    assert window.average(PANIC, 6.01) == pytest.approx((100 * 0.01 + 1 * 6.0) / 6.01, rel=0.01)


def test_burst_shows_in_panic_window_long_before_stable_window() -> None:
    window = ConcurrencyWindow(now=0.0)
    window.update(2, 0.0)
    window.update(50, 100.0)  # burst starts
    assert window.average(PANIC, 106.0) == pytest.approx(50)
    assert window.average(STABLE, 106.0) == pytest.approx((2 * 54 + 50 * 6) / 60)


def test_old_load_leaves_the_window() -> None:
    window = ConcurrencyWindow(now=0.0)
    window.update(10, 0.0)
    window.update(0, 30.0)
    assert window.average(STABLE, 60.0) == pytest.approx(5)
    assert window.average(PANIC, 60.0) == 0
    assert window.average(STABLE, 91.0) == 0


def test_only_observed_time_counts_so_a_restart_under_load_is_not_diluted() -> None:
    window = ConcurrencyWindow(now=1000.0, level=40)
    assert window.average(STABLE, 1000.0) == 40  # nothing observed yet: the level now
    assert window.average(STABLE, 1003.0) == pytest.approx(40)


def test_long_idle_gap_is_cheap_and_exact() -> None:
    window = ConcurrencyWindow(now=0.0)
    window.update(3, 0.0)
    window.update(0, 1.0)
    # A day later the ring is not walked second by second, and the old level is gone.
    window.update(7, 86_400.0)
    assert window.average(STABLE, 86_400.0 + 30) == pytest.approx(7 * 30 / 60)


def test_bucket_straddling_the_window_start_is_prorated() -> None:
    window = ConcurrencyWindow(now=0.0)
    window.update(10, 0.0)
    # The window (0.5, 6.5] cuts bucket [0, 1) in half.
    assert window.average(PANIC, 6.5) == pytest.approx(10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bucket_seconds": 0}, "bucket_seconds"),
        ({"window_seconds": 0.5}, "window_seconds"),
        ({"level": -1}, "level"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ConcurrencyWindow(now=0.0, **kwargs)


def test_reading_beyond_the_kept_window_is_refused() -> None:
    window = ConcurrencyWindow(now=0.0, window_seconds=STABLE)
    with pytest.raises(ValueError, match="seconds"):
        window.average(STABLE * 2, 10.0)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=5.0),  # time until the change
            st.integers(min_value=0, max_value=100),  # new level
        ),
        max_size=60,
    ),
    st.floats(min_value=0.01, max_value=STABLE),
)
def test_average_matches_exact_integral(changes: list[tuple[float, int]], seconds: float) -> None:
    """Against a brute-force integral: within one bucket's worth of the boundary level."""
    window = ConcurrencyWindow(now=0.0)
    timeline: list[tuple[float, int]] = [(0.0, 0)]
    now = 0.0
    for gap, level in changes:
        now += gap
        window.update(level, now)
        timeline.append((now, level))
    now += 0.5
    begin = max(0.0, now - seconds)
    exact = 0.0
    for (t0, level), (t1, _) in zip(timeline, [*timeline[1:], (now, 0)], strict=True):
        lo, hi = max(t0, begin), min(t1, now)
        if hi > lo:
            exact += level * (hi - lo)
    span = now - begin
    got = window.average(seconds, now)
    # Pro-rating the straddling bucket can be off by at most its whole content.
    assert abs(got * span - exact) <= 100 * 1.0 + 1e-6
    assert got >= 0
