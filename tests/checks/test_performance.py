"""The daily performance check: measurements, baselines, and each broken case it must catch."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bench import checks as bench_checks
from checks.api import UNIT_SUFFIXES, CheckContext, CheckResult
from checks.performance import PerformanceCheck
from daemon.baselines import pool_samples
from daemon.config import load_config
from daemon.evaluator import Evaluator
from daemon.events import ThresholdCrossed
from kernels.profile import Profile, canonical_profile, save_profile

FAST: dict[str, Any] = {"repetitions": 15, "warmup": 2}


def run_check(tmp_path: Path, profile: Profile | None = None, **options: Any) -> CheckResult:
    """Run the performance check in-process with FAST options plus ``options``."""
    folder = None
    if profile is not None:
        folder = tmp_path / f"profile-{profile.profile_id}"
        save_profile(profile, folder)
    context = CheckContext(
        tier="daily",
        state_dir=tmp_path,
        seed=7,
        run_id="test",
        options={**FAST, **options},
        profile_path=folder,
    )
    return PerformanceCheck().run(context)


def baseline_of(*results: CheckResult) -> dict[str, Any]:
    """Build the learned-baseline option from clean runs, as the daemon's keeper does."""
    return {
        "calibration": results[0].details["calibration"],
        "entries": pool_samples([r.details["samples"] for r in results]),
    }


def issues(result: CheckResult) -> set[str]:
    """Return the issues the default rules raise on ``result``."""
    evaluation = Evaluator(load_config().rules).evaluate(
        run_id="test", tier="daily", check="performance", measurements=result.measurements
    )
    return {e.issue for e in evaluation.events if isinstance(e, ThresholdCrossed)}


def values(result: CheckResult, name: str) -> dict[str, float]:
    """Return ``name``'s values by kernel/batch."""
    return {
        f"{m.labels['kernel']}/{m.labels['batch']}": m.value
        for m in result.measurements
        if m.name == name
    }


@pytest.fixture
def slowed() -> Iterator[Mapping[str, Any]]:
    """Options selecting the slowed quantum wrapper (clean unless INJECTED is set).

    The quantum kernel is compute-bound, so its normalised ratio is the steadiest on a busy
    host (±3 % run to run here); memory-bound kernels drift more (see bench/checks.py).
    """
    yield {
        "kernels": ["quantum_slowed"],
        "extra_kernels": list(bench_checks.SLOWED_SPECS),
        "batches": ["small"],
        "repetitions": 20,
    }
    bench_checks.INJECTED["slowdown"] = 0.0


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
    assert set(samples) == {"octahedron/small", "fisher/small"}
    assert len(samples["octahedron/small"]["latency_seconds"]) == 15
    assert len(samples["octahedron/small"]["ratio"]) == 15
    assert result.details["digest"]
    json.dumps(result.to_record(), allow_nan=False)
    low = values(result, "latency_ci_low_seconds")
    high = values(result, "latency_ci_high_seconds")
    median = values(result, "latency_per_batch_seconds")
    assert all(low[k] <= median[k] <= high[k] for k in median)


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
def test_injected_30_percent_slowdown_raises_performance_regression(
    tmp_path: Path, slowed: Mapping[str, Any]
) -> None:
    """A kernel doing 1.3× the work is a regression; a clean rerun on the same baseline is not."""
    baseline = baseline_of(run_check(tmp_path, **slowed), run_check(tmp_path, **slowed))
    bench_checks.INJECTED["slowdown"] = 0.30
    slow = run_check(tmp_path, **slowed, baseline=baseline)
    bench_checks.INJECTED["slowdown"] = 0.0
    regression = values(slow, "performance_regression_ratio")["quantum_slowed/small"]
    assert regression > 0.2
    assert values(slow, "regression_pvalue")["quantum_slowed/small"] < 0.002
    assert "performance_regression" in issues(slow)
    clean = run_check(tmp_path, **slowed, baseline=baseline)
    assert values(clean, "performance_regression_ratio")["quantum_slowed/small"] == 0.0
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
    options = {"kernels": ["octahedron"], "batches": ["small"], "repetitions": 3}
    baseline = baseline_of(run_check(tmp_path, **options))
    bloated = canonical_profile().replace(drill={"batch_scale": 4})
    result = run_check(tmp_path, bloated, **options, baseline=baseline)
    assert values(result, "memory_overhead_ratio")["octahedron/small"] > 0.45
    assert "memory_spike" in issues(result)
    calm = bloated.replace(vectorization="conservative")
    calmed = run_check(tmp_path, calm, **options, baseline=baseline)
    assert values(calmed, "memory_overhead_ratio")["octahedron/small"] < 0.45


@pytest.mark.slow
def test_canonical_profile_stays_inside_every_threshold(tmp_path: Path) -> None:
    """A clean rerun of the canonical profile against its own baseline raises nothing.

    Timing verdicts are asserted on the compute-bound quantum kernel only: memory-bound
    kernels' ratios drift up to ±20 % between runs when neighbours load this shared host
    (bench/checks.py measures it), which a unit test must not depend on.
    """
    options = {
        "kernels": ["octahedron", "fisher", "quantum"],
        "batches": ["small"],
        "repetitions": 20,
    }
    baseline = baseline_of(run_check(tmp_path, **options), run_check(tmp_path, **options))
    result = run_check(tmp_path, **options, baseline=baseline)
    timing = {"performance_regression", "host_slowdown"}
    assert issues(result) - timing == set()
    assert values(result, "performance_regression_ratio")["quantum/small"] == 0.0
    assert all(v < 0.45 for v in values(result, "memory_overhead_ratio").values())
    assert all(v >= 0.9 for v in values(result, "cache_efficiency_ratio").values())


def test_configured_baselines_override_learned_ones(tmp_path: Path) -> None:
    """A configured latency and peak replace the learned figures for that kernel and batch."""
    options = {"kernels": ["fisher"], "batches": ["small"]}
    learned = baseline_of(run_check(tmp_path, **options))
    configured = {"fisher": {"small": {"latency_seconds": 10.0, "peak_memory_bytes": 1e12}}}
    result = run_check(tmp_path, **options, baseline=learned, baselines=configured)
    assert values(result, "latency_baseline_seconds") == {"fisher/small": 10.0}
    assert values(result, "host_slowdown_ratio")["fisher/small"] < -0.99
    assert values(result, "memory_overhead_ratio")["fisher/small"] < -0.99
    assert "fisher/small" in values(result, "normalized_slowdown_ratio")


def test_baseline_with_another_calibration_gets_no_normalised_test(tmp_path: Path) -> None:
    """Ratios against a different calibration workload are not compared."""
    options = {"kernels": ["fisher"], "batches": ["small"]}
    baseline = baseline_of(run_check(tmp_path, **options))
    baseline["calibration"] = "something-else"
    result = run_check(tmp_path, **options, baseline=baseline)
    assert values(result, "performance_regression_ratio") == {}
    assert any("calibration differs" in note for note in result.notes)
