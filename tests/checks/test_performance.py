"""The daily performance check: measurements, baselines, and each broken case it must catch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import checks as bench_checks
from bench.perf_child import run_in_fresh_process
from checks.api import UNIT_SUFFIXES, CheckResult
from checks.performance import Judgement, PerformanceCheck
from checks.stats import HostWidening, fastest_share_ratio
from daemon.baselines import pool_samples
from kernels.profile import Profile, canonical_profile
from tests.checks import _transient
from tests.checks.helpers import raised_issues, run_in_process, saved_profile

# No extra rounds: these tests are about verdicts, not the interval's width.
FAST: dict[str, Any] = {"repetitions": 15, "warmup": 2, "extra_timing_s": 0}


def run_check(tmp_path: Path, profile: Profile | None = None, **options: Any) -> CheckResult:
    """Run the performance check in-process with FAST options plus ``options``."""
    return run_in_process(
        PerformanceCheck(),
        tmp_path,
        tier="daily",
        seed=7,
        options={**FAST, **options},
        profile=profile,
    )


def run_fresh(
    tmp_path: Path, profile: Profile | None = None, *, slowdown: float = 0.0, **options: Any
) -> CheckResult:
    """Run the performance check in a new process (as the daemon does each day)."""
    folder = saved_profile(tmp_path, profile)
    return run_in_fresh_process(tmp_path, options, slowdown=slowdown, profile_path=folder)


def baseline_of(*results: CheckResult) -> dict[str, Any]:
    """Build the learned-baseline option from clean runs, as the daemon's keeper does."""
    return {
        "calibration": results[0].details["calibration"],
        "entries": pool_samples([r.details["samples"] for r in results]),
    }


def issues(result: CheckResult) -> set[str]:
    """Return the issues the default rules raise on ``result``."""
    return raised_issues(result, tier="daily")


def values(result: CheckResult, name: str) -> dict[str, float]:
    """Return ``name``'s values by kernel/batch."""
    return {
        f"{m.labels['kernel']}/{m.labels['batch']}": m.value
        for m in result.measurements
        if m.name == name
    }


def verdict_table(result: CheckResult) -> str:
    """Each compared entry's normalised slowdown against its threshold, then the check's
    notes (a re-timing says both passes): what a failed verdict assertion prints, so that a
    false alarm on a noisy host can be told from a bug from CI's log alone."""
    slowdown = values(result, "normalized_slowdown_ratio")
    threshold = values(result, "regression_threshold_ratio")
    pvalue = values(result, "regression_pvalue")
    lines = [
        f"{key}: {slowdown[key]:+.1%} against {threshold[key]:.1%}, p = {pvalue[key]:.2g}"
        for key in sorted(slowdown)
    ]
    return "\n".join(lines + list(result.notes))


#: Options selecting the slowed wrapper of every built-in kernel.
SLOWED: dict[str, Any] = {
    "kernels": list(bench_checks.SLOWED),
    "extra_kernels": list(bench_checks.SLOWED_SPECS),
    "batches": ["small"],
}


def test_reports_every_measurement_with_units_and_labels(tmp_path: Path) -> None:
    """Without a baseline it measures, says so, and hands back raw samples and the fingerprint."""
    result = run_check(tmp_path, kernels=["octahedron", "fisher"], batches=["small"])
    names = {m.name for m in result.measurements}
    assert {
        "latency_per_batch_seconds",
        "latency_ci_low_seconds",
        "latency_ci_high_seconds",
        "throughput_per_second",
        "peak_memory_bytes",
        "memory_limit_bytes",
        "cache_efficiency_ratio",
        "peak_rss_bytes",
    } <= names
    assert "performance_regression_ratio" not in names
    for m in result.measurements:
        assert m.unit in UNIT_SUFFIXES
        assert m.name.endswith(m.unit)
        assert {"profile_id", "seed"} <= set(m.labels)
        if m.name != "peak_rss_bytes":
            assert m.labels["batch"] == "small"
    assert "no baseline yet: this run records one" in result.notes
    samples = result.details["samples"]
    assert set(samples) == {"octahedron/small/aggressive", "fisher/small/aggressive"}
    assert len(samples["octahedron/small/aggressive"]["latency_seconds"]) == 15
    assert len(samples["octahedron/small/aggressive"]["ratio"]) == 15
    assert result.details["digest"]
    json.dumps(result.to_record(), allow_nan=False)
    low = values(result, "latency_ci_low_seconds")
    high = values(result, "latency_ci_high_seconds")
    median = values(result, "latency_per_batch_seconds")
    assert all(low[k] <= median[k] <= high[k] for k in median)


def test_extra_rounds_time_wide_entries_until_the_time_bound(tmp_path: Path) -> None:
    """An interval that never gets narrow enough buys extra rounds, and the bound ends them."""
    result = run_check(
        tmp_path,
        kernels=["fisher"],
        batches=["small"],
        repetitions=6,
        ci_target=0.0,
        extra_share=2,
        extra_timing_s=0.5,
    )
    (entry,) = result.details["samples"].values()
    count = len(entry["latency_seconds"])
    assert count > 6
    assert (count - 6) % 2 == 0
    assert len(entry["ratio"]) == count


def test_no_extra_rounds_when_every_interval_is_narrow_enough(tmp_path: Path) -> None:
    """With the target met after the minimum repetitions, the run times exactly those."""
    result = run_check(
        tmp_path,
        kernels=["fisher"],
        batches=["small", "medium"],
        repetitions=6,
        ci_target=10.0,
        extra_timing_s=60.0,
    )
    assert {len(e["latency_seconds"]) for e in result.details["samples"].values()} == {6}


def test_skip_kernels_are_not_run(tmp_path: Path) -> None:
    """Kernels the daemon marked aborted are skipped with a note."""
    result = run_check(tmp_path, batches=["small"], skip_kernels=["octahedron", "quantum"])
    assert {m.labels.get("kernel") for m in result.measurements} == {"fisher", None}
    assert any("octahedron" in note and "skipped" in note for note in result.notes)


def test_stale_baseline_is_reported_in_the_notes(tmp_path: Path) -> None:
    """A baseline_state of stale says the fingerprint changed."""
    result = run_check(
        tmp_path, kernels=["fisher"], batches=["small"], baseline=None, baseline_state="stale"
    )
    assert any("stale" in note for note in result.notes)


@pytest.mark.slow
def test_injected_30_percent_slowdown_raises_performance_regression(tmp_path: Path) -> None:
    """Kernels doing 1.3× the work raise performance_regression, each measured well slower;
    a clean rerun on the same baseline raises it for none of them. Every run is a fresh
    process, as the daemon's daily runs are."""
    baseline = baseline_of(run_fresh(tmp_path, **SLOWED), run_fresh(tmp_path, **SLOWED))
    slow = run_fresh(tmp_path, slowdown=0.30, **SLOWED, baseline=baseline)
    every = {f"{name}/small" for name in bench_checks.SLOWED}
    assert "performance_regression" in issues(slow)
    slowdown = values(slow, "normalized_slowdown_ratio")
    assert set(slowdown) == every
    # Run-to-run drift of up to ±10 % on this shared host moves a 30 % slowdown by as much;
    # the regression threshold (11.8 % or more for a two-run baseline, both passes together)
    # is met by most kernels, in the first pass and in its re-timing 30 s later.
    assert all(v > 0.10 for v in slowdown.values()), slowdown
    clean = run_fresh(tmp_path, **SLOWED, baseline=baseline)
    assert values(clean, "performance_regression_ratio") == dict.fromkeys(every, 0.0), (
        verdict_table(clean)
    )
    assert "performance_regression" not in issues(clean)


def test_cache_thrash_raises_cache_miss(tmp_path: Path) -> None:
    """A cache that misses every call measures efficiency 0 and raises cache_miss."""
    thrash = canonical_profile().replace(drill={"cache_thrash": True})
    result = run_check(tmp_path, thrash, kernels=["octahedron", "fisher"], batches=["small"])
    assert values(result, "cache_efficiency_ratio") == {
        "octahedron/small": 0.0,
        "fisher/small": 0.0,
    }
    assert "cache_miss" in issues(result)


@pytest.mark.slow
def test_oversized_unchunked_batch_raises_memory_spike(tmp_path: Path) -> None:
    """Chunking off with a 4× batch (drill batch_scale) exceeds the baseline's peak by > 45 %.

    The small batch runs in aggressive mode (one unchunked pass); conservative mode would
    stream the scaled batch in chunks, which is the recovery for this issue.
    """
    options: dict[str, Any] = {
        "kernels": ["octahedron"],
        "batches": ["small"],
        "repetitions": 3,
        "extra_timing_s": 0,
    }
    baseline = baseline_of(run_check(tmp_path, **options))
    bloated = canonical_profile().replace(drill={"batch_scale": 4})
    result = run_check(tmp_path, bloated, **options, baseline=baseline)
    assert values(result, "memory_overhead_ratio")["octahedron/small"] > 0.45
    assert "memory_spike" in issues(result)
    calm = bloated.replace(vectorization="conservative")
    calmed = run_check(tmp_path, calm, **options, baseline=baseline)
    assert values(calmed, "memory_overhead_ratio")["octahedron/small"] < 0.45


def clean_trial(tmp_path: Path, options: dict[str, Any]) -> CheckResult:
    """Record a baseline from two fresh runs and judge a third against it, as the daemon
    does on its third day (each run a fresh process, as the daemon's are)."""
    baseline = baseline_of(run_fresh(tmp_path, **options), run_fresh(tmp_path, **options))
    return run_fresh(tmp_path, **options, baseline=baseline)


@pytest.mark.slow
def test_canonical_profile_stays_inside_every_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clean rerun of the canonical profile against its own baseline raises nothing, for
    every kernel and batch config.

    Without the extra rounds (they narrow the latency interval, tested on their own, and
    take up to 25 s a run): the verdicts then rest on the 40 samples of the minimum.

    A false alarm is rare, not impossible: the target is at most 1 % of clean runs per
    kernel, and with nine entries judged against a two-run baseline, on a host whose
    run-to-run spread is 3-6 % (this VM's on 2026-12-07; CI once crossed), about one clean
    trial in twenty crosses somewhere (see CHANGELOG). So one crossing trial is followed
    by a second, independent one (a new baseline too: a baseline that came out fast by
    chance makes every rerun against it look slow); only a second crossing fails, which a
    correct check does about once in 400 and a biased one almost always. A crossing first
    trial's table goes to the terminal either way."""
    options: dict[str, Any] = {"kernels": ["octahedron", "fisher", "quantum"], "extra_timing_s": 0}
    result = clean_trial(tmp_path, options)
    if issues(result):
        first = verdict_table(result)
        with capsys.disabled():
            print(f"\nfirst clean trial crossed; running a second:\n{first}")
        result = clean_trial(tmp_path, options)
        assert issues(result) == set(), f"{verdict_table(result)}\n-- first trial --\n{first}"
    regression = values(result, "performance_regression_ratio")
    assert len(regression) == 9
    assert set(regression.values()) == {0.0}
    assert all(v < 0.45 for v in values(result, "memory_overhead_ratio").values())
    assert all(v >= 0.9 for v in values(result, "cache_efficiency_ratio").values())


def test_timings_are_never_compared_across_execution_modes(tmp_path: Path) -> None:
    """After recovery's conservative mode the timings record a new baseline entry and say
    so, while peak memory is still compared with the batch config's own mode."""
    options: dict[str, Any] = {
        "kernels": ["octahedron"],
        "batches": ["small"],
        "repetitions": 3,
        "extra_timing_s": 0,
    }
    baseline = baseline_of(run_check(tmp_path, **options))
    assert set(baseline["entries"]) == {"octahedron/small/aggressive"}
    conservative = canonical_profile().replace(vectorization="conservative", chunk_rows=64)
    result = run_check(tmp_path, conservative, **options, baseline=baseline)
    assert set(result.details["samples"]) == {"octahedron/small/conservative:64"}
    names = {m.name for m in result.measurements}
    assert not names & {
        "performance_regression_ratio",
        "normalized_slowdown_ratio",
        "host_slowdown_ratio",
        "calibration_slowdown_ratio",
    }
    assert "memory_overhead_ratio" in names
    assert (
        "octahedron/small/conservative:64: no baseline yet for this execution mode: "
        "this run records one" in result.notes
    )
    again = baseline_of(run_check(tmp_path, **options), result)
    rerun = run_check(tmp_path, conservative, **options, baseline=again)
    assert "octahedron/small" in values(rerun, "performance_regression_ratio")


def test_normalised_slowdown_is_the_level_over_the_baselines(tmp_path: Path) -> None:
    """Unadjusted for the host, the normalised slowdown is this run's level (fastest quarter
    of kernel CPU times over the calibration's) over the geometric mean of the baseline runs'
    levels; a baseline stored before levels were (no ``run_levels``) gets its level from its
    pooled CPU times. Adjusted (the default), each level is first divided by its
    calibration level to the power β, this run's by at least the baseline's mean."""
    # One pass: a first pass that happens to be suspect against a two-run baseline would be
    # timed again, and a re-timed run's level is the mean of its passes' (tested below).
    options: dict[str, Any] = {
        "kernels": ["fisher"],
        "batches": ["small"],
        "extra_timing_s": 0,
        "confirm_after_s": 0,
        "host_response": False,
    }
    key = "fisher/small/aggressive"
    first, second = run_check(tmp_path, **options), run_check(tmp_path, **options)
    baseline = baseline_of(first, second)
    levels = baseline["entries"][key]["run_levels"]
    assert levels == [r.details["samples"][key]["run_levels"][0] for r in (first, second)]
    result = run_check(tmp_path, **options, baseline=baseline)
    (level,) = result.details["samples"][key]["run_levels"]
    assert level == fastest_share_ratio(
        result.details["samples"][key]["cpu_seconds"],
        result.details["samples"][key]["calibration_cpu_seconds"],
    )
    expected = level / math.sqrt(levels[0] * levels[1]) - 1
    assert values(result, "normalized_slowdown_ratio")["fisher/small"] == pytest.approx(expected)

    adjusted = run_check(tmp_path, **{**options, "host_response": True}, baseline=baseline)
    beta = values(adjusted, "host_response_ratio")["fisher/small"]
    assert 0 < beta <= 2
    calibrations = baseline["entries"][key]["run_calibration_levels"]
    (level,) = adjusted.details["samples"][key]["run_levels"]
    (calibration,) = adjusted.details["samples"][key]["run_calibration_levels"]
    floor = math.sqrt(calibrations[0] * calibrations[1])
    base = math.sqrt(math.prod(v / c**beta for v, c in zip(levels, calibrations, strict=True)))
    assert values(adjusted, "normalized_slowdown_ratio")["fisher/small"] == pytest.approx(
        level / max(calibration, floor) ** beta / base - 1
    )

    old = baseline_of(first)
    del old["entries"][key]["run_levels"]
    again = run_check(tmp_path, **options, baseline=old)
    (level,) = again.details["samples"][key]["run_levels"]
    assert values(again, "normalized_slowdown_ratio")["fisher/small"] == pytest.approx(
        level / first.details["samples"][key]["run_levels"][0] - 1
    )


def test_the_calibrations_own_slowdown_is_reported_beside_the_verdict(tmp_path: Path) -> None:
    """``calibration_slowdown_ratio`` is the fastest quarter of this run's calibration CPU
    times over the baseline's, minus 1: against a baseline timed as if on a host twice as
    fast it reads about +100 %. A baseline without calibration CPU times gets no figure and
    is still judged."""
    options: dict[str, Any] = {"kernels": ["fisher"], "batches": ["small"], "extra_timing_s": 0}
    key = "fisher/small/aggressive"
    baseline = baseline_of(run_check(tmp_path, **options), run_check(tmp_path, **options))
    entry = baseline["entries"][key]
    entry["calibration_cpu_seconds"] = [t / 2 for t in entry["calibration_cpu_seconds"]]
    result = run_check(tmp_path, **options, baseline=baseline)
    slower = values(result, "calibration_slowdown_ratio")["fisher/small"]
    own = result.details["samples"][key]["calibration_cpu_seconds"]
    assert slower == pytest.approx(fastest_share_ratio(own, entry["calibration_cpu_seconds"]) - 1)
    assert 0.5 < slower < 2.0, f"expected about +100 %, got {slower:+.0%}"

    del entry["calibration_cpu_seconds"]
    old = run_check(tmp_path, **options, baseline=baseline)
    names = {m.name for m in old.measurements}
    assert "calibration_slowdown_ratio" not in names
    assert "performance_regression_ratio" in names


#: Options selecting the Fisher kernel slowed for a set number of calls (tests.checks._transient).
TRANSIENT: dict[str, Any] = {
    "kernels": ["fisher_transient"],
    "extra_kernels": ["tests.checks._transient:transient_fisher"],
    "batches": ["small"],
}
TRANSIENT_ENTRY = "fisher_transient/small"


def run_transient(
    tmp_path: Path, slow_calls: int, factor: float = 2.0, **options: Any
) -> CheckResult:
    """Run the check on ``fisher_transient`` with its next ``slow_calls`` calls taking
    ``factor`` times their time."""
    _transient.SLOW_CALLS.update(left=slow_calls, factor=factor)
    try:
        return run_check(tmp_path, **{**TRANSIENT, **options})
    finally:
        _transient.SLOW_CALLS["left"] = 0


def test_a_slowdown_gone_by_the_retiming_is_not_a_regression(tmp_path: Path) -> None:
    """A first pass over the re-timing bar is timed again after ``confirm_after_s``. When
    the slowdown has passed by then, there is no regression, although the level of both
    passes together is over the regression threshold; a note gives each pass."""
    baseline = baseline_of(run_transient(tmp_path, 0), run_transient(tmp_path, 0))
    base = math.sqrt(math.prod(baseline["entries"][TRANSIENT_ENTRY + "/aggressive"]["run_levels"]))
    # The warm-up calls and the first pass are slow (three times the work); the re-timing is
    # not. A fixed 20 % threshold (spread_z 0) and a re-timing bar of at least 63 % (two
    # spreads of at least 20 %), since two in-process baseline runs can spread widely. alpha
    # 1 opens the Mann–Whitney gate, so only the levels decide: its p depends on whether the
    # clean half runs faster or slower than the baseline runs did (0.13 in one CI run),
    # which is not what this test is about.
    result = run_transient(
        tmp_path,
        FAST["warmup"] + FAST["repetitions"],
        factor=3.0,
        baseline=baseline,
        confirm_after_s=0.5,
        alpha=1.0,
        min_effect=0.2,
        spread_z=0.0,
        spread_floor=0.2,
        confirm_z=2.0,
        host_widening=0.0,  # bars as set here, whatever this host's state against the baseline's
        host_response=False,  # levels as measured, as the expectations below
    )
    entry = result.details["samples"][TRANSIENT_ENTRY + "/aggressive"]
    first, again = entry["pass_levels"]
    threshold = values(result, "regression_threshold_ratio")[TRANSIENT_ENTRY]
    assert threshold == pytest.approx(0.2)
    bar = values(result, "retime_threshold_ratio")[TRANSIENT_ENTRY]
    assert bar > math.expm1(2 * 0.2)
    assert first / base - 1 > bar > again / base - 1
    slowdown = values(result, "normalized_slowdown_ratio")[TRANSIENT_ENTRY]
    assert slowdown == pytest.approx(math.sqrt(first * again) / base - 1)
    assert slowdown > threshold
    assert values(result, "performance_regression_ratio") == {TRANSIENT_ENTRY: 0.0}
    assert issues(result) == set(), verdict_table(result)
    assert entry["regressed"] is False
    assert len(entry["latency_seconds"]) == 2 * FAST["repetitions"]
    (note,) = [n for n in result.notes if "re-timed" in n]
    assert note.startswith(TRANSIENT_ENTRY + "/aggressive: normalised slowdown ")
    assert "re-timed after 0.5 s" in note
    assert note.endswith("not a regression")


def test_a_slowdown_that_lasts_through_the_retiming_is_a_regression(tmp_path: Path) -> None:
    """A kernel still slow when timed again is a regression, judged on both passes; a first
    pass under the re-timing bar is not timed again (confirm_z 50: a clean run cannot
    cross it)."""
    baseline = baseline_of(run_transient(tmp_path, 0), run_transient(tmp_path, 0))
    clean = run_transient(tmp_path, 0, baseline=baseline, confirm_after_s=0.5, confirm_z=50.0)
    assert len(clean.details["samples"][TRANSIENT_ENTRY + "/aggressive"]["pass_levels"]) == 1
    assert not any("re-timed" in n for n in clean.notes)
    assert values(clean, "performance_regression_ratio") == {TRANSIENT_ENTRY: 0.0}
    result = run_transient(tmp_path, 10_000, factor=3.0, baseline=baseline, confirm_after_s=0.5)
    entry = result.details["samples"][TRANSIENT_ENTRY + "/aggressive"]
    assert len(entry["pass_levels"]) == 2
    regression = values(result, "performance_regression_ratio")[TRANSIENT_ENTRY]
    assert regression == values(result, "normalized_slowdown_ratio")[TRANSIENT_ENTRY] > 0.5
    assert "performance_regression" in issues(result)
    assert entry["regressed"] is True
    (note,) = [n for n in result.notes if "re-timed" in n]
    assert note.endswith(", a regression")


def test_the_pause_before_a_retiming_is_spent_on_the_other_entries_extra_rounds(
    tmp_path: Path,
) -> None:
    """A suspect sits out the extra rounds (its re-timing must start a whole pause after its
    first pass), while the other entries whose interval is too wide (every one, with a zero
    ``ci_target``) get theirs, in the pause rather than before it. The other entry has no
    baseline, so that it cannot be a suspect itself by chance."""
    options: dict[str, Any] = {"kernels": ["fisher_transient", "octahedron"]}
    baseline = baseline_of(run_transient(tmp_path, 0), run_transient(tmp_path, 0))
    result = run_transient(
        tmp_path,
        10_000,
        factor=3.0,
        **options,
        baseline=baseline,
        confirm_after_s=0.5,
        ci_target=0.0,
        extra_timing_s=1.0,
    )
    suspect = result.details["samples"][TRANSIENT_ENTRY + "/aggressive"]
    other = result.details["samples"]["octahedron/small/aggressive"]
    assert len(suspect["pass_levels"]) == 2
    assert len(suspect["latency_seconds"]) == 2 * FAST["repetitions"]
    assert len(other["pass_levels"]) == 1
    assert len(other["latency_seconds"]) > FAST["repetitions"]
    assert any(
        n.startswith(TRANSIENT_ENTRY + "/aggressive: normalised slowdown") for n in result.notes
    )


def test_two_slow_passes_under_the_threshold_together_are_no_regression(tmp_path: Path) -> None:
    """Both passes over the re-timing bar are not enough: their level together must be over
    the regression threshold too. Here each pass is 50 % slower (the bar: 0, confirm_z 0),
    and the threshold is a 100 % minimum effect."""
    baseline = baseline_of(run_transient(tmp_path, 0), run_transient(tmp_path, 0))
    result = run_transient(
        tmp_path,
        10_000,
        factor=1.5,
        baseline=baseline,
        confirm_after_s=0.5,
        confirm_z=0.0,
        min_effect=1.0,
        spread_z=0.0,
        host_widening=0.0,  # bars as set here, whatever this host's state against the baseline's
        host_response=False,  # levels as measured, as the expectations below
    )
    entry = result.details["samples"][TRANSIENT_ENTRY + "/aggressive"]
    assert len(entry["pass_levels"]) == 2
    assert values(result, "retime_threshold_ratio") == {TRANSIENT_ENTRY: 0.0}
    assert values(result, "regression_threshold_ratio") == {TRANSIENT_ENTRY: 1.0}
    # Each pass over its bar of 0, both together under 100 %: how far over 0 the 50 % of CPU
    # time reads in wall-clock levels depends on the MLX threads (+20 % once on CI).
    judgement = Judgement.from_record(result.details["judgements"][TRANSIENT_ENTRY + "/aggressive"])
    assert all(s > 0 for s in judgement.slowdowns), verdict_table(result)
    assert judgement.slowdown < 1.0, verdict_table(result)
    assert values(result, "normalized_slowdown_ratio") == {TRANSIENT_ENTRY: judgement.slowdown}
    assert values(result, "performance_regression_ratio") == {TRANSIENT_ENTRY: 0.0}
    (note,) = [n for n in result.notes if "re-timed" in n]
    assert note.endswith("against 100.0%, not a regression")


def test_a_host_slower_than_at_the_baseline_widens_both_bars(tmp_path: Path) -> None:
    """With ``host_widening = 1`` (and levels not adjusted for the host), when this run's
    calibration CPU time reads c over the baseline's, both bars widen by c: a kernel about
    twice as slow, against a baseline whose calibration ran five times as fast, is not even
    timed again, and a note says why. With ``host_widening = 0`` the same slowdown is a
    regression. The judgement kept in ``details`` replays either verdict, as the power
    study does."""
    key = TRANSIENT_ENTRY + "/aggressive"
    baseline = baseline_of(run_transient(tmp_path, 0), run_transient(tmp_path, 0))
    entry = baseline["entries"][key]
    entry["calibration_cpu_seconds"] = [t / 5 for t in entry["calibration_cpu_seconds"]]
    # Bars fixed before widening (a 20 % threshold, a re-timing bar at 0), since two
    # in-process baseline runs can spread widely and set bars over 50 % by themselves. The
    # margins are wide on both sides: the doubled CPU time reads near +100 % in wall-clock
    # levels here (a 1.5 factor read +20 %, not +50 %, once on a loaded CI host), against a
    # plain bar of 20 % and a widened one near 400 %.
    options: dict[str, Any] = {
        "baseline": baseline,
        "confirm_after_s": 0.5,
        "min_effect": 0.2,
        "spread_z": 0.0,
        "confirm_z": 0.0,
        "host_response": False,
    }
    widened = run_transient(tmp_path, 10_000, factor=2.0, **options, host_widening=1.0)
    plain = run_transient(tmp_path, 10_000, factor=2.0, **options, host_widening=0.0)

    slower = values(widened, "calibration_slowdown_ratio")[TRANSIENT_ENTRY]
    assert 2.0 < slower < 8.0, f"expected about +400 %, got {slower:+.0%}"
    judgement = Judgement.from_record(widened.details["judgements"][key])
    assert judgement.calibration_slowdown == pytest.approx(slower)
    assert values(widened, "regression_threshold_ratio")[TRANSIENT_ENTRY] == pytest.approx(
        judgement.threshold + slower
    )
    assert judgement.retime_threshold is not None
    assert values(widened, "retime_threshold_ratio")[TRANSIENT_ENTRY] == pytest.approx(
        judgement.retime_threshold + slower
    )
    slowdown = values(widened, "normalized_slowdown_ratio")[TRANSIENT_ENTRY]
    assert 0.2 < slowdown < slower, verdict_table(widened)
    assert len(widened.details["samples"][key]["pass_levels"]) == 1
    assert values(widened, "performance_regression_ratio") == {TRANSIENT_ENTRY: 0.0}
    assert "performance_regression" not in issues(widened), verdict_table(widened)
    assert any(
        n.startswith(key + ": calibration ") and "threshold widened from" in n
        for n in widened.notes
    )
    assert judgement.suspect(HostWidening(factor=0.0)), "without widening it is re-timed"

    assert len(plain.details["samples"][key]["pass_levels"]) == 2
    assert values(plain, "performance_regression_ratio")[TRANSIENT_ENTRY] > 0.3
    assert "performance_regression" in issues(plain), verdict_table(plain)
    replayed = Judgement.from_record(plain.details["judgements"][key])
    assert replayed.regressed(HostWidening(factor=0.0))
    assert not replayed.regressed(HostWidening())


@pytest.mark.parametrize(
    ("slowdowns", "calibration_slowdowns", "retime", "significant", "plain", "widened"),
    [
        # Both passes over their bars: a regression either way.
        ((0.20, 0.20), (0.00, 0.08), 0.09, True, True, True),
        # The re-timing ran on a host 20 % slower: its bar widens to 9 % + 20 %.
        ((0.20, 0.20), (0.00, 0.20), 0.09, True, True, False),
        # A calibration 5 % slower widens each bar by 5 points.
        ((0.12, 0.12), (0.05, 0.05), 0.09, True, True, False),
        # A faster host never narrows a bar.
        ((0.12, 0.12), (-0.30, -0.30), 0.09, True, True, True),
        ((0.20, 0.20), (0.00, 0.00), 0.09, False, False, False),  # not significant
        ((0.20,), (0.00,), 0.09, True, False, False),  # suspect, never re-timed
        ((0.20,), (0.08,), None, True, True, True),  # first pass alone judged
        ((0.20,), (0.30,), None, True, True, False),
    ],
)
def test_a_judgement_widens_each_pass_bar_by_its_own_calibration(
    slowdowns: tuple[float, ...],
    calibration_slowdowns: tuple[float, ...],
    retime: float | None,
    significant: bool,
    plain: bool,
    widened: bool,
) -> None:
    """Each pass's bar widens by its own calibration's slowdown past the dead zone, and the
    threshold by that of both passes together; without widening the bars stay put."""
    judgement = Judgement(
        slowdowns=slowdowns,
        calibration_slowdowns=calibration_slowdowns,
        retime_threshold=retime,
        threshold=0.10,
        significant=significant,
    )
    assert judgement.regressed(HostWidening(factor=0.0)) is plain
    assert judgement.regressed(HostWidening()) is widened
    assert Judgement.from_record(json.loads(json.dumps(judgement.to_record()))) == judgement


def test_a_dead_zone_leaves_small_calibration_slowdowns_out_of_the_bars() -> None:
    """``host_dead_zone`` is subtracted from the calibration's slowdown before it widens:
    5 % slower passes widen nothing with a 5 % dead zone, and a 25 % slower one by 20 points
    (half of it, with ``host_widening`` 0.5)."""
    judgement = Judgement(
        slowdowns=(0.12, 0.12),
        calibration_slowdowns=(0.05, 0.05),
        retime_threshold=0.09,
        threshold=0.10,
        significant=True,
    )
    assert judgement.regressed(HostWidening(dead_zone=0.05))
    assert judgement.threshold_for(HostWidening(dead_zone=0.05)) == pytest.approx(0.10)
    slow = Judgement(
        slowdowns=(0.3,),
        calibration_slowdowns=(0.25,),
        retime_threshold=None,
        threshold=0.10,
        significant=True,
    )
    assert slow.threshold_for(HostWidening(dead_zone=0.05)) == pytest.approx(0.30)
    assert slow.threshold_for(HostWidening(dead_zone=0.05, factor=0.5)) == pytest.approx(0.20)


def test_no_retiming_when_confirmation_is_off(tmp_path: Path) -> None:
    """With ``confirm_after_s = 0`` the first pass alone is judged, against the threshold
    of one pass, and there is no re-timing bar."""
    from checks.stats import effect_threshold

    baseline = baseline_of(run_transient(tmp_path, 0), run_transient(tmp_path, 0))
    # Three times the work: two in-process baseline runs can spread widely (levels 0.35 and
    # 0.45 in one CI run), and the one-pass threshold widens with them (to 101 % there).
    # Levels as measured, so that the threshold is the baseline levels' own.
    result = run_transient(
        tmp_path,
        FAST["warmup"] + FAST["repetitions"],
        factor=3.0,
        baseline=baseline,
        confirm_after_s=0,
        host_widening=0.0,
        host_response=False,
    )
    entry = result.details["samples"][TRANSIENT_ENTRY + "/aggressive"]
    assert len(entry["pass_levels"]) == 1
    assert len(entry["latency_seconds"]) == FAST["repetitions"]
    levels = baseline["entries"][TRANSIENT_ENTRY + "/aggressive"]["run_levels"]
    threshold = values(result, "regression_threshold_ratio")[TRANSIENT_ENTRY]
    assert threshold == pytest.approx(effect_threshold(levels, passes=1))
    assert threshold != pytest.approx(effect_threshold(levels, passes=2))  # not two passes'
    assert values(result, "performance_regression_ratio")[TRANSIENT_ENTRY] > 0.5
    assert "retime_threshold_ratio" not in {m.name for m in result.measurements}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("fast_share", 1.5),
        ("fast_share", 0.0),
        ("confirm_after_s", -1.0),
        ("confirm_after_s", float("nan")),
        ("confirm_after_s", 301.0),
        ("confirm_z", -1.0),
        ("alpha", 0.0),
        ("alpha", float("nan")),
        ("alpha", 1.5),
        ("min_effect", -0.1),
        ("spread_z", float("inf")),
        ("spread_floor", -0.01),
        ("ci_target", -0.1),
        ("extra_timing_s", 301.0),
        ("alpha", "0.01"),
        ("host_widening", -1.0),
        ("host_dead_zone", float("nan")),
        ("host_response_prior", 2.5),
        ("host_response_weight", -0.01),
        ("host_response", "yes"),
        ("host_response", 1),
    ],
)
def test_a_bad_numeric_option_is_refused(tmp_path: Path, option: str, value: Any) -> None:
    """A share outside (0, 1], a negative effect, a pause longer than the check's timeout,
    NaN, infinity or a string (for ``host_response``, anything but a boolean) is an error
    that names the option, before anything is timed."""
    with pytest.raises(ValueError, match=f"option '{option}' must be"):
        run_check(tmp_path, kernels=["fisher"], batches=["small"], **{option: value})


def test_configured_baselines_override_learned_ones(tmp_path: Path) -> None:
    """A configured latency and peak replace the learned figures for that kernel and batch."""
    options: dict[str, Any] = {"kernels": ["fisher"], "batches": ["small"]}
    learned = baseline_of(run_check(tmp_path, **options))
    configured = {"fisher": {"small": {"latency_seconds": 10.0, "peak_memory_bytes": 1e12}}}
    result = run_check(tmp_path, **options, baseline=learned, baselines=configured)
    assert values(result, "latency_baseline_seconds") == {"fisher/small": 10.0}
    assert values(result, "host_slowdown_ratio")["fisher/small"] < -0.99
    assert values(result, "memory_overhead_ratio")["fisher/small"] < -0.99
    assert "fisher/small" in values(result, "normalized_slowdown_ratio")


def test_baseline_with_another_calibration_gets_no_normalised_test(tmp_path: Path) -> None:
    """Ratios against a different calibration workload are not compared."""
    options: dict[str, Any] = {"kernels": ["fisher"], "batches": ["small"]}
    baseline = baseline_of(run_check(tmp_path, **options))
    baseline["calibration"] = "something-else"
    result = run_check(tmp_path, **options, baseline=baseline)
    assert values(result, "performance_regression_ratio") == {}
    (note,) = [n for n in result.notes if "calibration" in n]
    assert "calibration differs" in note


def test_an_entry_divided_by_another_calibration_kind_is_not_compared(tmp_path: Path) -> None:
    """An entry recorded when its kernel had another character is skipped, with a note."""
    options: dict[str, Any] = {"kernels": ["fisher"], "batches": ["small"]}
    baseline = baseline_of(run_check(tmp_path, **options))
    (entry,) = baseline["entries"].values()
    entry["calibration_kind"] = "memory"
    result = run_check(tmp_path, **options, baseline=baseline)
    assert values(result, "performance_regression_ratio") == {}
    assert "fisher/small/aggressive: baseline divided by the memory calibration: not compared" in (
        result.notes
    )
