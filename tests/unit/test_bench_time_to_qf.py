"""The time-to-QF benchmark's figures: each dossier's wait and processing, the wave's pace, the ratio.

The benchmark paces its wave from the throughput the runtime showed in the same run; these tests
check, on a simulated runtime (one environment processing each tick's dossiers one after the other),
that the budget still fails when the processing is slow, when the runtime slows down after its
calibration, and when the wave is not paced — it is not met by construction.
"""

from __future__ import annotations

import random

import pytest

from bench.time_to_qf import Pacing, bound_s, latencies, p95_over_bound, pace, percentile

INTERVAL = 5.0
WINDOW = 5 / 60
LISTING = 0.3


def test_each_dossier_waits_for_the_first_tick_after_its_deposit_then_is_processed() -> None:
    figures = latencies(
        ["a", "b"],
        deposited={"a": 1.0, "b": 4.0},
        ticks=[0.0, 5.0, 10.0],
        published={"a": 6.0, "b": 5.5},
        ended=20.0,
    )
    assert figures.totals == [5.0, 1.5]
    assert figures.waits == [4.0, 1.0]
    assert figures.processing == [1.0, 0.5]
    assert figures.missing == 0


def test_a_dossier_listed_by_the_tick_running_when_it_arrived_has_no_wait() -> None:
    # Deposited 0.1 s after a tick started, its tenant not yet listed: published before the next tick.
    figures = latencies(["a"], deposited={"a": 0.1}, ticks=[0.0, 5.0], published={"a": 0.9}, ended=9.0)
    assert figures.waits == [0.0]
    assert figures.processing == [pytest.approx(0.8)]


def test_a_qf_missing_when_the_run_ends_counts_with_the_time_it_had_waited() -> None:
    figures = latencies(
        ["a", "b"], deposited={"a": 0.0, "b": 0.0}, ticks=[1.0], published={"a": 2.0}, ended=100.0
    )
    assert figures.totals == [2.0, 100.0]
    assert figures.missing == 1
    assert p95_over_bound(figures.totals, bound_s(INTERVAL)) == round(100.0 / 7.0, 3)


def test_the_bound_is_one_interval_plus_two_seconds() -> None:
    assert bound_s(5.0) == 7.0
    assert bound_s(300.0) == 302.0
    assert p95_over_bound([], 7.0) is None


def test_each_tick_brings_what_the_runtime_processes_in_the_allowance_left() -> None:
    pacing = pace(throughput_per_s=4.0, listing_s=0.4, window_s=0.1, interval_s=5.0, dossiers=500)
    assert pacing.capacity_per_tick == pytest.approx(4.0 * 1.5)
    assert pacing.dossiers_per_tick == pytest.approx(6.0)
    assert pacing.spacing_s == pytest.approx(5.0 / 6.0)
    assert pacing.wave_s == pytest.approx(500 * 5.0 / 6.0)
    assert not pacing.capped


def test_a_listing_longer_than_the_allowance_leaves_one_dossier_per_tick() -> None:
    pacing = pace(throughput_per_s=4.0, listing_s=2.5, window_s=0.1, interval_s=5.0, dossiers=20)
    assert pacing.capacity_per_tick == 0.0
    assert pacing.dossiers_per_tick == 1.0


def test_a_wave_too_long_for_the_section_is_paced_faster_and_says_so() -> None:
    pacing = pace(
        throughput_per_s=0.5, listing_s=0.5, window_s=0.1, interval_s=5.0, dossiers=500, max_wave_s=1200
    )
    assert pacing.capped
    assert pacing.wave_s == 1200
    assert pacing.dossiers_per_tick == pytest.approx(500 * 5.0 / 1200)
    assert pacing.dossiers_per_tick > pacing.capacity_per_tick


# ---------------------------------------------------------------------------------- simulated runtime


def simulate(deposits: list[float], *, per_dossier_s: float, phase: float = INTERVAL / 2) -> float:
    """One environment: each tick lists what was deposited before it started, in its tenants' order
    (unrelated to the deposits' order: shuffled); its dossiers are processed one after the other
    once the listing and the batching window are over (or the previous ones done). The p95 of the
    time to QF over the bound."""
    order = random.Random(11)
    horizon = max(deposits) + 10_000.0
    ticks = [phase + k * INTERVAL for k in range(int(horizon / INTERVAL))]
    free = 0.0
    published: dict[str, float] = {}
    queued = sorted(range(len(deposits)), key=lambda i: deposits[i])
    position = 0
    for tick in ticks:
        listed = []
        while position < len(queued) and deposits[queued[position]] <= tick:
            listed.append(queued[position])
            position += 1
        order.shuffle(listed)
        start = max(free, tick + LISTING + WINDOW)
        for i in listed:
            start += per_dossier_s
            published[str(i)] = start
        free = start
        if position == len(queued):
            break
    cases = [str(i) for i in range(len(deposits))]
    figures = latencies(cases, {str(i): d for i, d in enumerate(deposits)}, ticks, published, horizon)
    return p95_over_bound(figures.totals, bound_s(INTERVAL)) or 0.0


def paced_deposits(pacing: Pacing, dossiers: int, seed: int = 7) -> list[float]:
    slots = random.Random(seed)
    return [(n + slots.random()) * pacing.spacing_s for n in range(dossiers)]


def calibrated(per_dossier_s: float, dossiers: int = 480) -> Pacing:
    return pace(
        throughput_per_s=1 / per_dossier_s,
        listing_s=LISTING,
        window_s=WINDOW,
        interval_s=INTERVAL,
        dossiers=dossiers,
        max_wave_s=1e9,
    )


def test_a_runtime_that_carries_its_pace_meets_the_budget() -> None:
    pacing = calibrated(0.25)
    assert simulate(paced_deposits(pacing, 480), per_dossier_s=0.25) <= 1.0


def test_a_slow_reconcile_fails_the_budget_however_slowly_the_wave_is_paced() -> None:
    # 2.5 s per dossier: the pace falls to one dossier per tick, and its own processing is too long.
    pacing = calibrated(2.5)
    assert pacing.dossiers_per_tick == 1.0
    assert simulate(paced_deposits(pacing, 100), per_dossier_s=2.5) > 1.0


def test_a_runtime_slower_than_its_calibration_fails_the_budget() -> None:
    pacing = calibrated(0.25)
    assert simulate(paced_deposits(pacing, 480), per_dossier_s=0.5) > 1.0


def test_the_same_wave_deposited_at_once_fails_the_budget() -> None:
    assert simulate([0.0] * 480, per_dossier_s=0.25) > 1.0


def test_the_floor_alone_is_the_wait_for_the_tick() -> None:
    # Instant processing: the p95 is the p95 of a wait uniform over the interval.
    deposits = paced_deposits(calibrated(0.01), 2_000)
    ratio = simulate(deposits, per_dossier_s=0.0)
    assert ratio == pytest.approx((0.95 * INTERVAL + LISTING + WINDOW) / bound_s(INTERVAL), abs=0.03)
    assert percentile([1.0, 2.0, 3.0], 0.5) == 2.0
