"""Statistics for timings: a median's confidence interval and a regression test against a baseline.

The regression test follows asv: a one-sided Mann–Whitney U test that the current samples
are larger than the baseline's, at ``alpha`` (0.002 by default), together with a minimum
effect size on the shift (the ratio of medians, or a steadier level such as
:func:`fastest_share_ratio`), so that a tiny but consistent shift is not called a
regression and a large but noisy one is not either. The confidence interval of the median
is distribution-free, from order statistics of the binomial(n, ½) distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as _sps

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CONFIRM_Z",
    "DEFAULT_FAST_SHARE",
    "DEFAULT_HOST_DEAD_ZONE",
    "DEFAULT_HOST_RESPONSE",
    "DEFAULT_HOST_RESPONSE_PRIOR",
    "DEFAULT_HOST_RESPONSE_WEIGHT",
    "DEFAULT_HOST_WIDENING",
    "DEFAULT_MIN_EFFECT",
    "DEFAULT_SPREAD_FLOOR",
    "DEFAULT_SPREAD_Z",
    "PASS_CORRELATION",
    "HostResponse",
    "HostWidening",
    "MedianSummary",
    "Verdict",
    "compare",
    "effect_threshold",
    "fastest_share_mean",
    "fastest_share_ratio",
    "loglog_slope",
    "median_ci",
    "probability_of_superiority",
]

#: Significance level of the one-sided Mann–Whitney U test (asv's default).
DEFAULT_ALPHA = 0.002
#: Smallest relative slowdown that counts as a regression.
DEFAULT_MIN_EFFECT = 0.10
#: Share of the fastest calls :func:`fastest_share_ratio` averages.
DEFAULT_FAST_SHARE = 0.25
#: Run-to-run spread (sd of the log of per-run levels, :func:`fastest_share_ratio`) assumed
#: when the baseline cannot show a larger one. On the 2-core reference host, 322 clean
#: fresh-process runs of the power study's entries (batch small) over 37 minutes spread
#: 4.0 % (octahedron), 5.1 % (Fisher) and 1.0 % (quantum), with a right tail (Fisher's 99th
#: percentile +18 %) from host states that last about a minute and move every kernel at
#: once; four times the calls per run barely narrowed it (4.6 → 4.1 %). With one pass and
#: three-run baselines, a 3.5 % floor let 4.7 % of clean Fisher runs cross (5 %: 1.1 %).
#: Since a crossing must hold in a re-timing too and baselines pool five runs (twelve
#: degrees of freedom with the kernel's other batch configs), 4 % suffices: over 125 other
#: clean runs (25 minutes, kernels against the ``dispatch`` calibration), resampled, at most
#: 0.1 % of clean runs of any entry crossed, and 20 % slowdowns were flagged in 88–99 % of
#: trials (5 %: 78–90 %; both before :data:`DEFAULT_CONFIRM_Z`). 3 % gained little more
#: (93–99 %), but let 4.6 % of quantum runs under a memory-streaming neighbour that came
#: after a quiet baseline cross (4 %: none).
DEFAULT_SPREAD_FLOOR = 0.04
#: How many run-to-run spreads a slowdown must exceed to count: 2.5, with the spread scaled
#: for the number of timing passes it is judged on (:func:`effect_threshold`). The daily
#: check re-times a suspect first pass and judges both passes together
#: (:mod:`checks.performance`). Resampling 322 clean runs (baselines of five runs a minute
#: apart, trials a minute or more later, re-timings about 30 s after them), z = 2.5 on each
#: pass alone flagged no clean run of any kernel; the previous rule (three-run baselines,
#: one pass, z = 3) flagged 1.1 % of the Fisher kernel's.
DEFAULT_SPREAD_Z = 2.5
#: How many run-to-run spreads (of one pass) a first pass must exceed to be timed again,
#: and each of the two passes to count. Resampled on 125 quiet fresh-process runs (the
#: :data:`DEFAULT_SPREAD_FLOOR` study; re-timings 36 s later): with 2, 20 % slowdowns were
#: flagged in 97 / 100 / 100 / 97 % of trials (octahedron small, large; Fisher small,
#: large), against 93 / 99 / 97 / 88 % when each pass had to cross the full threshold;
#: at most 0.3 % of any entry's clean runs crossed (0.1 % before), and 7 % of clean runs
#: were timed again (2 %). 1.5 flagged 98–100 % but re-timed 16 % of clean runs.
DEFAULT_CONFIRM_Z = 2.0
#: Correlation assumed between the levels of two passes of one run about 30 s apart, for
#: the spread of their mean. Measured: 0.33–0.36 within one process, 0.1–0.2 between fresh
#: processes 36 s apart; 0.5 errs on the side of fewer false alarms.
PASS_CORRELATION = 0.5
#: Calibration CPU slowdown against the baseline's that :class:`HostWidening` ignores. A
#: dead zone would keep a pass's ordinary calibration noise (±5–10 % on a quiet host) out of
#: the bars, but it lets the octahedron/large entry through in slow states, where it slowed
#: up to three times as much as its calibration (+12 to +29 % in a pass whose calibration
#: read +6 to +14 %). Replayed on a one-hour rolling power study on the 2-core reference VM
#: (``bench/checks.py``, 2026-12-07 14:54–15:55, 34 rounds, all batch configs, two slow
#: states of 11 and 5 minutes): clean trials flagged 4 of 102 kernel-trials without
#: widening, 2 with a 5 % dead zone (both octahedron/large) and none with 0; 20 %-slowed
#: trials 34 of 34 per kernel without widening or with 5 %, and with 0: Fisher 31, octahedron
#: 33, quantum 34 of 34 (missed in the slow states, where Fisher slows less than its
#: calibration). A missed slowdown is caught on a later day; a false one pages and reverts.
DEFAULT_HOST_DEAD_ZONE = 0.0
#: Share of the calibration's CPU slowdown past the dead zone that widens the bars of the
#: daily check by default: 0, since levels are adjusted for the host instead
#: (:data:`DEFAULT_HOST_RESPONSE`). In a host state where every instruction is slower the
#: kernels do not slow alike: on the reference VM the calibrations read +11 to +24 %
#: (dispatch) while the octahedron kernel's normalised slowdown read +17 to +26 %
#: (correlation 0.63, slope 0.70 over 36 entries), and Fisher's and quantum's stayed within
#: about 10 %. A widening of 1 (:class:`HostWidening`'s own default) covers a kernel that
#: slows up to twice as much as its calibration, but one factor for every entry costs the
#: kernels that do not: in the studies kept in ``bench/studies/2026-12-07/`` the clean slope
#: was near 0 for the Fisher kernel and 0.7–1.3 for the octahedron, and the widening cost
#: Fisher 4, 3 and 7 of its 20 %-slowed trials (of 11, 33 and 45) while clearing
#: octahedron's false alarms.
DEFAULT_HOST_WIDENING = 0.0
#: Whether the daily check adjusts levels for the host's speed (:class:`HostResponse`,
#: one-sided). Judged again from the recorded CPU times of a 45-round power study on the
#: 2-core reference VM (``bench/studies/2026-12-07/trials-2038-2144.jsonl.gz``, all batch
#: configs, rolling baselines; ``python -m bench.power_rejudge``), 20 %-slowed trials were
#: flagged in 45 of 45 per kernel with it and no widening, against 38, 42 and 44 of 45
#: (Fisher, octahedron, quantum) with a widening of 1 alone; no clean trial was flagged
#: either way (0 of 45 per kernel). Its prior and weight were set before the study.
DEFAULT_HOST_RESPONSE = True
#: β a kernel's level is assumed to move by with its calibration's log CPU time before the
#: baseline shows otherwise: 1, as a widening of 1 assumes.
DEFAULT_HOST_RESPONSE_PRIOR = 1.0
#: Squared log calibration deviation the prior counts as: 0.05, as much as ten runs 7 %
#: off their entry's mean (a quiet baseline, whose calibrations vary 1–3 %, hardly moves β).
DEFAULT_HOST_RESPONSE_WEIGHT = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class MedianSummary:
    """The median of a sample and a distribution-free confidence interval around it."""

    median: float
    low: float
    high: float
    n: int

    @property
    def half_width_ratio(self) -> float:
        """Half the interval's width over the median (0 when the median is 0)."""
        if self.median == 0:
            return 0.0
        return (self.high - self.low) / 2 / abs(self.median)


def median_ci(
    samples: Sequence[float] | npt.NDArray[np.floating[Any]], confidence: float = 0.95
) -> MedianSummary:
    """Return the median and an order-statistic confidence interval of it.

    The interval is [x_(k), x_(n−k+1)] for the largest k whose binomial(n, ½) coverage
    ``1 − 2·P(B ≤ k−1)`` is at least ``confidence``; with fewer than 6 samples no such k
    exists and the interval is the sample's range.

    Examples
    --------
    >>> s = median_ci(list(range(1, 21)))
    >>> s.median, s.low, s.high
    (10.5, 6.0, 15.0)
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = int(x.size)
    if n == 0:
        raise ValueError("median_ci needs at least one sample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    median = float(np.median(x))
    # Largest k (1-based) with P(k ≤ B ≤ n−k) ≥ confidence, B ~ binomial(n, ½).
    k = 0
    for cand in range(1, n // 2 + 1):
        coverage = 1 - 2 * float(_sps.binom.cdf(cand - 1, n, 0.5))
        if coverage >= confidence:
            k = cand
        else:
            break
    if k == 0:
        return MedianSummary(median=median, low=float(x[0]), high=float(x[-1]), n=n)
    return MedianSummary(median=median, low=float(x[k - 1]), high=float(x[n - k]), n=n)


@dataclass(frozen=True, slots=True)
class HostResponse:
    """How a kernel's level moves with its calibration's speed, learned and taken out.

    A run's level is the kernel's CPU time over the calibration's
    (:func:`fastest_share_ratio`). In a host state where every instruction is slower, the
    calibration's own CPU time ``C`` rises, and the level moves too, by a kernel's own
    amount: ``log level = a + β·log C + noise``, with β near 0 for a kernel that slows as its
    calibration does and near 1 for one that slows twice as much (measured on the reference
    VM, ``bench/studies/2026-12-07/``). :meth:`fit` estimates β from the baseline's runs,
    pooled over a kernel's entries (each about its own mean), shrunk toward ``prior`` as if
    ``weight`` more squared log calibration deviation had been seen on that slope:
    ``β = (Σ x·y + weight·prior) / (Σ x² + weight)``, clamped to [0, 2]. Levels divided by
    ``C^β`` (:meth:`adjust`) no longer move with the host's state, which narrows the
    baseline's spread as well as the run's deviation from it (covariate adjustment, as
    CUPED does for A/B tests). With ``one_sided`` (the default), a run on a host faster
    than the baseline's (``C`` below the baseline runs' geometric mean) is not adjusted up:
    as with :class:`HostWidening`, a β misjudged on a quiet baseline then costs power in a
    slow state, never a false alarm in a fast one.

    >>> HostResponse(prior=1.0, weight=0.0).fit([([1.0, 1.1, 1.21], [1.0, 1.1, 1.21])])
    1.0
    >>> HostResponse(prior=0.5, weight=1.0).fit([])
    0.5
    >>> round(HostResponse(prior=1.0, weight=0.0).adjust(1.21, 1.1, 2.0), 6)
    1.0
    """

    prior: float
    weight: float
    one_sided: bool = True

    def fit(self, groups: Sequence[tuple[Sequence[float], Sequence[float]]]) -> float:
        """Return β from ``groups``: per entry, the runs' levels and calibration levels
        (calibration CPU seconds), in the same order; entries with fewer than two runs, or
        the two lists of different lengths, add nothing."""
        sxy = sxx = 0.0
        for levels, calibrations in groups:
            if len(levels) < 2 or len(levels) != len(calibrations):
                continue
            y = np.log(np.asarray(levels, dtype=np.float64))
            x = np.log(np.asarray(calibrations, dtype=np.float64))
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                continue
            x, y = x - x.mean(), y - y.mean()
            sxy += float(x @ y)
            sxx += float(x @ x)
        if sxx + self.weight <= 0:
            return min(2.0, max(0.0, self.prior))
        return min(2.0, max(0.0, (sxy + self.weight * self.prior) / (sxx + self.weight)))

    @staticmethod
    def adjust(level: float, calibration: float, beta: float) -> float:
        """Return ``level`` with the calibration's speed taken out: ``level / calibration^β``
        (in the calibration's units; only ratios of adjusted levels mean anything)."""
        return float(level / calibration**beta)


@dataclass(frozen=True, slots=True)
class HostWidening:
    """How much a host that is slower per instruction than at the baseline widens the bars.

    The normalised slowdown divides a kernel's CPU time by a calibration workload's, which
    cancels a host that is busier (time-sliced) but only in part one whose every
    instruction got slower (measured on the reference VM: see
    :data:`DEFAULT_HOST_WIDENING`), since the kernels do not slow alike there. So when the
    calibration's own CPU time reads ``c`` over the baseline's, each bar is widened by
    ``factor · max(0, c − dead_zone)``: in such a state a slowdown needs more to count.
    ``factor`` 0 turns the widening off; the daily check's default is 0
    (:data:`DEFAULT_HOST_WIDENING`: it adjusts levels by :class:`HostResponse` instead),
    this class's own default 1.

    >>> HostWidening().slack(0.20), HostWidening().slack(-0.3)
    (0.2, 0.0)
    >>> HostWidening(dead_zone=0.05, factor=0.5).slack(0.25), HostWidening(factor=0).slack(0.5)
    (0.1, 0.0)
    """

    dead_zone: float = DEFAULT_HOST_DEAD_ZONE
    factor: float = 1.0

    def slack(self, calibration_slowdown: float) -> float:
        """Return what a bar is widened by for a calibration ``calibration_slowdown`` slower."""
        return self.factor * max(0.0, calibration_slowdown - self.dead_zone)


def fastest_share_mean(
    samples: Sequence[float] | npt.NDArray[np.floating[Any]],
    share: float = DEFAULT_FAST_SHARE,
) -> float:
    """Return the mean of the fastest ``share`` of ``samples`` (at least one of them).

    >>> fastest_share_mean([4, 2, 9, 3], share=0.5)
    2.5
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    if x.size == 0:
        raise ValueError("fastest_share_mean needs at least one sample")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    return float(x[: max(1, int(x.size * share))].mean())


def fastest_share_ratio(
    kernel: Sequence[float] | Any,
    calibration: Sequence[float] | Any,
    share: float = DEFAULT_FAST_SHARE,
) -> float:
    """Return the mean of the fastest ``share`` of ``kernel`` over that of ``calibration``.

    This is one run's level of a kernel against its calibration. Interference from other
    processes and from the host only ever adds time to a call (Chen & Revels, "Robust
    benchmarking in noisy environments", 2016), so the fastest calls are the least
    contaminated; BenchmarkTools.jl takes the minimum for that reason. The mean of the
    fastest quarter keeps that property while averaging away the minimum's own luck:
    measured in fresh processes on the reference host, its run-to-run spread was 13–40 %
    below that of the median of per-call ratios (see :data:`DEFAULT_SPREAD_FLOOR`).
    At least one call of each is used.

    >>> fastest_share_ratio([4, 2, 9, 2], [1, 1, 5, 1], share=0.5)
    2.0
    """
    if len(kernel) == 0 or len(calibration) == 0:
        raise ValueError("fastest_share_ratio needs samples on both sides")
    fast_c = fastest_share_mean(calibration, share)
    if fast_c <= 0:
        raise ValueError("the calibration's fastest calls must take positive time")
    return fastest_share_mean(kernel, share) / fast_c


def probability_of_superiority(
    current: Sequence[float] | Any, baseline: Sequence[float] | Any
) -> float:
    """Return P(current > baseline) + ½·P(equal), the U statistic over n₁·n₂ (an effect size).

    >>> probability_of_superiority([2, 3], [0, 1])
    1.0
    """
    a = np.asarray(current, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("both samples must be non-empty")
    greater = np.sum(a[:, None] > b[None, :])
    equal = np.sum(a[:, None] == b[None, :])
    return float((greater + 0.5 * equal) / (a.size * b.size))


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome of comparing current samples with a baseline's.

    ``slowdown`` is median(current)/median(baseline) − 1 (negative when faster);
    ``regression`` equals ``slowdown`` when the shift is both significant and larger
    than the minimum effect, and 0 otherwise.
    """

    slowdown: float
    pvalue: float
    superiority: float
    significant: bool
    regression: float


def compare(
    current: Sequence[float] | npt.NDArray[np.floating[Any]],
    baseline: Sequence[float] | npt.NDArray[np.floating[Any]],
    *,
    alpha: float = DEFAULT_ALPHA,
    min_effect: float = DEFAULT_MIN_EFFECT,
    slowdown: float | None = None,
) -> Verdict:
    """Test whether ``current`` is larger than ``baseline`` (one-sided Mann–Whitney U).

    ``slowdown`` is the effect that must exceed ``min_effect``: by default
    median(current)/median(baseline) − 1; a caller with a steadier estimate of the same
    shift (:func:`fastest_share_ratio` over runs) passes it instead.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(1.0, 0.01, 30)
    >>> compare(base * 1.3, base).regression > 0.25
    True
    >>> compare(base, base).regression
    0.0
    >>> compare(base * 1.3, base, slowdown=0.05).regression
    0.0
    """
    a = np.asarray(current, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError("compare needs at least two samples on each side")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("samples must be finite")
    base_median = float(np.median(b))
    if base_median <= 0:
        raise ValueError("the baseline's median must be positive")
    if slowdown is None:
        slowdown = float(np.median(a)) / base_median - 1
    result = _sps.mannwhitneyu(a, b, alternative="greater", method="auto")
    pvalue = float(result.pvalue)
    if math.isnan(pvalue):  # every value equal on both sides: no evidence of a shift
        pvalue = 1.0
    significant = pvalue < alpha
    regression = slowdown if significant and slowdown > min_effect else 0.0
    return Verdict(
        slowdown=slowdown,
        pvalue=pvalue,
        superiority=probability_of_superiority(a, b),
        significant=significant,
        regression=regression,
    )


def effect_threshold(
    run_levels: Sequence[float],
    *,
    min_effect: float = DEFAULT_MIN_EFFECT,
    spread_floor: float = DEFAULT_SPREAD_FLOOR,
    spread_z: float = DEFAULT_SPREAD_Z,
    companions: Sequence[Sequence[float]] = (),
    passes: int = 1,
    correlation: float = PASS_CORRELATION,
) -> float:
    """Return the smallest slowdown that counts, widened by the baseline's run-to-run spread.

    Samples within one run are not independent of that run: a process, or a quarter of a
    minute on a shared host, shifts all of them together, so the Mann–Whitney p-value of 40
    samples says nothing about the next run. As conbench judges a result by a z-score
    against the history of earlier runs, a slowdown must here exceed ``spread_z`` times the
    spread of the judged level: s is the standard deviation of the logarithms of the
    baseline's per-run levels (one value per run, as :func:`fastest_share_ratio`), at least
    ``spread_floor``, since a few runs can agree by chance. A level that is the mean of
    ``passes`` timing passes of one run, each pair correlated ``correlation``, varies by
    s·√((1 + (passes − 1)·correlation) / passes), and the baseline's own level over n runs
    by s·√(1/n):
    ``max(min_effect, exp(z·max(floor, s)·√((1 + (m − 1)·ρ)/m + 1/n)) − 1)``.

    Three runs give s two degrees of freedom, so it is often off by a factor of two or
    more. ``companions`` are the per-run levels of entries whose runs move alike (the same
    kernel's other batch configs, timed in the same runs): their deviations from their own
    means are pooled with this entry's, s² = Σ (log x − mean of its group)² / Σ (nᵢ − 1).

    Examples
    --------
    >>> round(effect_threshold([1.0]), 3)
    0.152
    >>> round(effect_threshold([1.0] * 5), 3), round(effect_threshold([1.0] * 5, passes=2), 3)
    (0.116, 0.102)
    >>> round(effect_threshold([1.0, 1.0, 1.0], spread_floor=0.0), 3)
    0.1
    >>> round(effect_threshold([1.0, 1.2, 0.9]), 3) > 0.4
    True
    >>> wide = effect_threshold([1.0, 1.2, 0.9], spread_floor=0.0)
    >>> effect_threshold([1.0, 1.2, 0.9], spread_floor=0.0, companions=[[1, 1.01, 0.99]]) < wide
    True
    """
    levels = np.asarray(run_levels, dtype=np.float64)
    if levels.size == 0 or not np.all(levels > 0):
        raise ValueError("effect_threshold needs one or more positive run levels")
    if passes < 1 or not 0 <= correlation <= 1:
        raise ValueError(
            f"passes must be >= 1 and correlation in [0, 1], got {passes}, {correlation}"
        )
    n = int(levels.size)
    squares = 0.0
    dof = 0
    for group in (run_levels, *companions):
        logs = np.log(np.asarray(group, dtype=np.float64))
        if logs.size >= 2 and np.all(np.isfinite(logs)):
            squares += float(np.sum((logs - logs.mean()) ** 2))
            dof += int(logs.size) - 1
    spread = math.sqrt(squares / dof) if dof else 0.0
    pass_share = (1 + (passes - 1) * correlation) / passes
    widened = math.expm1(spread_z * max(spread_floor, spread) * math.sqrt(pass_share + 1 / n))
    return max(min_effect, widened)


def loglog_slope(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Return the least-squares slope of log(values) against log(sizes) (1 = linear growth).

    >>> round(loglog_slope([1, 2, 4, 8], [3, 6, 12, 24]), 6)
    1.0
    """
    x = np.log(np.asarray(sizes, dtype=np.float64))
    y = np.log(np.asarray(values, dtype=np.float64))
    if x.size < 2 or x.size != y.size:
        raise ValueError("loglog_slope needs two or more (size, value) pairs")
    slope, _ = np.polyfit(x, y, 1)
    return float(slope)
