"""The timing statistics: median confidence intervals, the regression test, scaling slopes."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from checks.stats import (
    DEFAULT_SPREAD_Z,
    HostResponse,
    compare,
    effect_threshold,
    fastest_share_ratio,
    loglog_slope,
    median_ci,
    probability_of_superiority,
)


def test_median_ci_covers_the_true_median_at_least_95_percent() -> None:
    """Over many normal and log-normal samples of 20, the interval holds the true median ≥ 95 %."""
    rng = np.random.default_rng(1)
    draws: tuple[tuple[Callable[[], npt.NDArray[np.float64]], float], ...] = (
        (lambda: rng.normal(5.0, 1.0, 20), 5.0),
        (lambda: rng.lognormal(0.0, 0.5, 20), 1.0),
    )
    for draw, true_median in draws:
        hits = 0
        for _ in range(1000):
            s = median_ci(draw())
            hits += s.low <= true_median <= s.high
        assert 0.95 <= hits / 1000 <= 0.995


def test_median_ci_of_tiny_samples_is_their_range() -> None:
    """With too few samples for 95 % coverage, the interval is the sample's range."""
    s = median_ci([3.0, 1.0, 2.0])
    assert (s.low, s.median, s.high, s.n) == (1.0, 2.0, 3.0, 3)


def test_median_ci_half_width_ratio() -> None:
    """The half-width ratio is half the interval over the median."""
    s = median_ci([float(v) for v in range(1, 21)])
    assert s.half_width_ratio == pytest.approx((15 - 6) / 2 / 10.5)


def test_median_ci_rejects_empty_input() -> None:
    """An empty sample has no median."""
    with pytest.raises(ValueError, match="at least one sample"):
        median_ci([])


def test_compare_false_alarm_rate_under_the_null_is_below_one_percent() -> None:
    """Identically distributed samples are flagged in well under 1 % of 2000 trials."""
    rng = np.random.default_rng(2)
    flagged = sum(
        compare(rng.lognormal(0, 0.1, 20), rng.lognormal(0, 0.1, 40), min_effect=0.0).significant
        for _ in range(2000)
    )
    assert flagged / 2000 < 0.01


def test_compare_detects_a_30_percent_slowdown() -> None:
    """A 30 % shift with 5 % noise is significant and above the minimum effect."""
    rng = np.random.default_rng(3)
    base = rng.normal(1.0, 0.05, 40)
    verdict = compare(rng.normal(1.3, 0.05, 20), base)
    assert verdict.significant
    assert verdict.regression == pytest.approx(verdict.slowdown)
    assert verdict.slowdown == pytest.approx(0.3, abs=0.05)
    assert verdict.superiority > 0.99


def test_compare_ignores_a_significant_shift_below_the_minimum_effect() -> None:
    """A 3 % shift with tiny noise is significant but not a regression."""
    rng = np.random.default_rng(4)
    verdict = compare(rng.normal(1.03, 0.001, 20), rng.normal(1.0, 0.001, 20))
    assert verdict.significant
    assert verdict.regression == 0.0


def test_compare_ignores_a_speed_up() -> None:
    """A faster current sample is never a regression (one-sided test)."""
    rng = np.random.default_rng(5)
    verdict = compare(rng.normal(0.7, 0.01, 20), rng.normal(1.0, 0.01, 20))
    assert not verdict.significant
    assert verdict.slowdown < 0
    assert verdict.regression == 0.0


def test_compare_of_constant_samples_is_not_significant() -> None:
    """Identical constant samples give no evidence of a shift."""
    verdict = compare([1.0] * 5, [1.0] * 5)
    assert verdict.pvalue == 1.0 or verdict.pvalue > 0.002
    assert verdict.regression == 0.0


def test_compare_rejects_bad_samples() -> None:
    """Too few, non-finite or zero-median samples are refused."""
    with pytest.raises(ValueError, match="two samples"):
        compare([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        compare([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        compare([1.0, 2.0], [0.0, 0.0])


def test_compare_judges_the_effect_it_is_given() -> None:
    """A significant shift counts by the caller's effect estimate, not the medians' ratio."""
    rng = np.random.default_rng(6)
    base = rng.normal(1.0, 0.01, 40)
    shifted = rng.normal(1.3, 0.01, 40)
    assert compare(shifted, base, slowdown=0.05).regression == 0.0
    assert compare(shifted, base, slowdown=0.2).regression == 0.2
    assert compare(base, shifted, slowdown=0.2).regression == 0.0  # not significant


def test_fastest_share_ratio_ignores_interference() -> None:
    """Interference that slows 45 % of the calls by 1.2–3× moves the level under 2 % and the
    median of per-call ratios over twice as far; a real 20 % slowdown of every call moves
    the level by 20 %."""
    rng = np.random.default_rng(7)
    kernel = 0.010 * rng.lognormal(0, 0.03, 60)
    calibration = 0.020 * rng.lognormal(0, 0.03, 60)
    clean = fastest_share_ratio(kernel, calibration)
    assert clean == pytest.approx(0.5, rel=0.05)
    hit = rng.random(60) < 0.45
    noisy = np.where(hit, kernel * rng.uniform(1.2, 3.0, 60), kernel)
    level_moved = fastest_share_ratio(noisy, calibration) / clean - 1
    median_moved = np.median(noisy / calibration) / np.median(kernel / calibration) - 1
    assert abs(level_moved) < 0.02
    assert median_moved > 2 * abs(level_moved)
    assert fastest_share_ratio(kernel * 1.2, calibration) == pytest.approx(clean * 1.2)


def test_fastest_share_ratio_uses_at_least_one_call_and_rejects_bad_input() -> None:
    """A share smaller than one call still averages one; bad samples and shares are refused."""
    assert fastest_share_ratio([3.0, 1.0], [2.0, 4.0], share=0.1) == 0.5
    with pytest.raises(ValueError, match="both sides"):
        fastest_share_ratio([], [1.0])
    with pytest.raises(ValueError, match="share"):
        fastest_share_ratio([1.0], [1.0], share=0.0)
    with pytest.raises(ValueError, match="positive"):
        fastest_share_ratio([1.0], [0.0])


def test_probability_of_superiority_counts_ties_as_half() -> None:
    """Ties count one half."""
    assert probability_of_superiority([1.0], [1.0]) == 0.5
    assert probability_of_superiority([0.0], [1.0]) == 0.0


def test_loglog_slope_of_quadratic_growth_is_two() -> None:
    """Latency growing with the square of the size has slope 2."""
    sizes = [128, 256, 512, 1024]
    assert loglog_slope(sizes, [s * s * 1e-9 for s in sizes]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="two or more"):
        loglog_slope([1.0], [1.0])


def test_effect_threshold_pools_the_spread_of_companion_entries() -> None:
    """The spread is the pooled sd of every group's logs around its own mean, so quiet
    companions narrow a noisy entry's threshold and noisy ones widen a quiet entry's."""
    noisy, quiet = [1.0, 1.2, 0.9], [2.0, 2.02, 1.98]
    logs = [np.log(noisy), np.log(quiet)]
    squares = sum(float(np.sum((g - g.mean()) ** 2)) for g in logs)
    pooled = math.sqrt(squares / 4)
    expected = math.expm1(DEFAULT_SPREAD_Z * pooled * math.sqrt(1 + 1 / 3))
    both = effect_threshold(noisy, spread_floor=0.0, companions=[quiet])
    assert both == pytest.approx(expected, rel=1e-12)
    assert both < effect_threshold(noisy, spread_floor=0.0)
    assert effect_threshold(quiet, spread_floor=0.0, companions=[noisy]) > effect_threshold(
        quiet, spread_floor=0.0
    )


def test_effect_threshold_ignores_companions_of_one_run() -> None:
    """A companion with a single run has no spread to offer and leaves the threshold as is."""
    alone = effect_threshold([1.0, 1.1, 0.95], spread_floor=0.0)
    assert effect_threshold([1.0, 1.1, 0.95], spread_floor=0.0, companions=[[3.0]]) == alone


def test_a_mean_of_two_passes_has_a_narrower_threshold_unless_they_move_together() -> None:
    """Two passes' noise partly averages out: the threshold for their mean is narrower than
    one pass's, by √((1 + ρ)/2 + 1/n) against √(1 + 1/n); fully correlated passes
    (ρ = 1) gain nothing. Bad pass counts and correlations are refused."""
    levels = [1.0, 1.1, 0.95, 1.02, 0.98]
    one = effect_threshold(levels, min_effect=0.0, spread_floor=0.0)
    two = effect_threshold(levels, min_effect=0.0, spread_floor=0.0, passes=2, correlation=0.5)
    assert two < one
    assert math.log1p(two) / math.log1p(one) == pytest.approx(math.sqrt(0.95 / 1.2))
    same = effect_threshold(levels, min_effect=0.0, spread_floor=0.0, passes=2, correlation=1.0)
    assert same == pytest.approx(one)
    with pytest.raises(ValueError, match="passes"):
        effect_threshold(levels, passes=0)
    with pytest.raises(ValueError, match="correlation"):
        effect_threshold(levels, passes=2, correlation=1.5)


def test_host_response_recovers_each_kernels_slope_from_its_runs() -> None:
    """Runs in host states 0–25 % slower: a kernel whose level moves twice as much as its
    calibration (β = 1) and one that moves with it (β = 0) are told apart, each entry
    about its own mean, with run noise of 1 %."""
    rng = np.random.default_rng(3)
    for beta in (0.0, 1.0):
        groups = []
        for scale in (1.0, 3.0):  # two batch configs of one kernel, at their own levels
            calibration = 1e-3 * np.exp(rng.uniform(0.0, 0.22, 8))
            levels = scale * calibration**beta * np.exp(rng.normal(0.0, 0.01, 8))
            groups.append((list(levels), list(calibration)))
        fitted = HostResponse(prior=0.5, weight=0.0).fit(groups)
        assert abs(fitted - beta) < 0.15


def test_host_response_stays_near_its_prior_on_a_quiet_baseline() -> None:
    """Calibrations within 1 % of each other say little: with the default weight the
    slope moves little from the prior even when the noise suggests another one."""
    levels = [1.0, 1.01, 0.99, 1.0, 1.0]
    calibrations = [1.0, 0.99, 1.01, 1.0, 1.0]  # noise pointing to β = −1
    assert HostResponse(prior=1.0, weight=0.05).fit([(levels, calibrations)]) > 0.99
    assert HostResponse(prior=1.0, weight=0.0).fit([(levels, calibrations)]) == 0.0  # clamped


def test_host_response_adjusts_a_level_by_its_calibration_to_the_power_beta() -> None:
    """A run in a state 20 % slower, of a β = 1 kernel whose level rose 20 %, reads as
    the baseline's once adjusted; with β = 0 nothing changes."""
    base = HostResponse.adjust(2.0, 1e-3, 1.0)
    slow = HostResponse.adjust(2.4, 1.2e-3, 1.0)
    assert slow / base == pytest.approx(1.0)
    assert HostResponse.adjust(2.4, 1.2e-3, 0.0) == 2.4
