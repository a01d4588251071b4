"""The weekly geometry check: octahedron invariants, Fisher validation, and a 1 %-off radius."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse

from checks.api import UNIT_SUFFIXES, CheckResult
from checks.geometry import GeometryCheck, fisher_rao_axiom_violation, metric_measurements
from kernels import fisher
from kernels.profile import Profile, canonical_profile
from tests.checks.helpers import raised_issues, run_in_process, single_value

FAST: dict[str, Any] = {"rounds": 1, "triples": 16}


def run_check(tmp_path: Path, profile: Profile | None = None, **options: Any) -> CheckResult:
    """Run the geometry check in-process with FAST options plus ``options``."""
    return run_in_process(
        GeometryCheck(),
        tmp_path,
        tier="weekly",
        seed=11,
        options={**FAST, **options},
        profile=profile,
    )


def issues(result: CheckResult) -> set[str]:
    """Return the issues the default rules raise on ``result``."""
    return raised_issues(result, tier="weekly")


def test_canonical_profile_measures_every_invariant_inside_its_threshold(tmp_path: Path) -> None:
    """The canonical profile passes every rule, and every invariant is measured with units."""
    result = run_check(tmp_path)
    names = {m.name for m in result.measurements}
    assert {
        "geometric_ratio_drift_ratio",
        "phase_drift_radians",
        "containment_violation_ratio",
        "idempotence_error_ratio",
        "symmetry_error_ratio",
        "nonexpansiveness_violation_ratio",
        "reference_error_distance",
        "fisher_symmetry_error_ratio",
        "fisher_min_eigenvalue_score",
        "fisher_sparse_dense_error_ratio",
        "fisher_rao_axiom_violation_distance",
        "fisher_metric_dense_fallback_bool",
    } <= names
    for m in result.measurements:
        assert m.unit in UNIT_SUFFIXES
        assert {"kernel", "profile_id", "seed"} <= set(m.labels)
    assert issues(result) == set()
    assert single_value(result, "containment_violation_ratio") <= 1e-6
    assert single_value(result, "fisher_min_eigenvalue_score") >= -1e-8
    assert single_value(result, "fisher_metric_dense_fallback_bool") == 0.0
    assert not any("fisher metric" in note for note in result.notes)


def test_one_percent_off_radius_raises_geometric_drift(tmp_path: Path) -> None:
    """A quarter radius 1 % too large measures ratio drift ≈ 0.01 and raises geometric_drift."""
    bad = canonical_profile().replace(radii=(1.0, 1.125 * 1.01, 1.35, 1.51875))
    result = run_check(tmp_path, bad, kernels=["octahedron"])
    assert single_value(result, "geometric_ratio_drift_ratio") == pytest.approx(0.01, rel=0.05)
    assert "geometric_drift" in issues(result)


def test_shifted_phase_raises_geometric_drift(tmp_path: Path) -> None:
    """A phase 0.01 rad off measures phase drift ≈ 0.01 rad and raises geometric_drift."""
    phases = (0.0, math.pi / 4 + 0.01, math.pi / 2, 3 * math.pi / 4)
    result = run_check(tmp_path, canonical_profile().replace(phases=phases), kernels=["octahedron"])
    assert single_value(result, "phase_drift_radians") == pytest.approx(0.01, rel=0.05)
    assert "geometric_drift" in issues(result)


def test_skip_kernels_leaves_the_octahedron_out(tmp_path: Path) -> None:
    """A kernel marked aborted is not run."""
    result = run_check(tmp_path, skip_kernels=["octahedron"])
    assert {m.labels["kernel"] for m in result.measurements} == {"fisher"}


def test_axiom_violation_is_zero_for_the_fisher_rao_distance() -> None:
    """The MLX Fisher–Rao distance satisfies the metric axioms on random triples."""
    rng = np.random.default_rng(0)
    violation = fisher_rao_axiom_violation(fisher.fisher_rao_mlx, rng, triples=32, k=16)
    assert violation <= 1e-5


def test_axiom_violation_catches_an_asymmetric_distance() -> None:
    """A distance that is not symmetric is caught."""
    rng = np.random.default_rng(0)

    def lopsided(p: Any, q: Any) -> Any:
        return fisher.fisher_rao_reference(p, q) + 0.1 * np.asarray(p)[:, 0]

    assert fisher_rao_axiom_violation(lopsided, rng, triples=32, k=16) > 1e-3


def test_a_failed_sparse_metric_is_reported_with_its_reason() -> None:
    """A sparse form that fails validation sets the fallback bool and puts the reason in a note."""
    theta = np.random.default_rng(0).standard_normal((4, 3))
    corrupted = fisher.fisher_metric_dense(theta)
    corrupted[0, 1] += 1e-3
    _, failed = fisher.fisher_metric(
        theta, np.random.default_rng(0), held=scipy.sparse.csr_matrix(corrupted)
    )
    _, healthy = fisher.fisher_metric(theta, np.random.default_rng(1))
    figures, notes = metric_measurements([healthy, failed])
    by_name = {name: figure for name, figure, _ in figures}
    assert by_name["fisher_metric_dense_fallback_bool"] == 1.0
    assert by_name["fisher_symmetry_error_ratio"] == pytest.approx(1e-3)
    (note,) = notes
    assert "dense used" in note
    assert "symmetric error" in note
