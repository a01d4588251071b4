"""Tests of quantum state evolution: oracle agreement, preserved quantities, the float16 drill."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from kernels import quantum as q
from kernels.profile import canonical_profile
from tests.kernels.conftest import Backend
from tests.strategies import density_batches

PROPERTY = settings(max_examples=75, deadline=None)
CANONICAL = canonical_profile()


@PROPERTY
@given(state=density_batches())
def test_evolution_matches_float64_oracle(backend: Backend, state: Any) -> None:
    """Each complex64 implementation is within trace distance 1e-5 of the float64 oracle."""
    rho, ham, t = state
    got = backend.evolve(rho, ham, t)
    assert got.dtype == np.complex64
    assert q.state_deviation(got, q.evolve_reference(rho, ham, t)) <= 1e-5


@PROPERTY
@given(state=density_batches())
def test_evolution_preserves_trace_hermiticity_positivity_purity(
    backend: Backend, state: Any
) -> None:
    """Unitary evolution keeps trace, Hermiticity, positivity and purity (KERNELS.md §3)."""
    rho, ham, t = state
    out = backend.evolve(rho, ham, t)
    n = rho.shape[1]
    # KERNELS.md's bounds; the trace one holds for complex64 up to n ≈ 16 because
    # tr(UρU†) − 1 ≈ tr(ρ(U†U − I)) and U is unitary to a few eps32 (typical 5e-7).
    assert q.trace_error(out) <= 1e-6
    assert q.hermiticity_error(out) <= 1e-6
    assert q.min_eigenvalue(out) >= -1e-6
    assert q.purity_change(rho, out) <= 1e-5
    # l1 coherence sums n² entries, each within ≈ 1e-6 of the oracle.
    reference = q.l1_coherence(q.evolve_reference(rho, ham, t))
    assert np.max(np.abs(q.l1_coherence(out) - reference)) <= n * n * 1e-6


@PROPERTY
@given(state=density_batches())
def test_float64_reference_stays_positive(state: Any) -> None:
    """The oracle itself keeps the smallest eigenvalue ≥ −1e-8 and the purity to 1e-12."""
    rho, ham, t = state
    out = q.evolve_reference(rho, ham, t)
    assert q.min_eigenvalue(out) >= -1e-8
    assert q.purity_change(rho, out) <= 1e-12
    assert q.trace_error(out) <= 1e-12


def test_float16_downgrade_is_detected() -> None:
    """A float16 quantum kernel deviates by more than 1e-5; the float32 kernel stays below."""
    rng = np.random.default_rng(0)
    for n in (16, 32):
        inputs = q.make_inputs(rng, 8, CANONICAL, n=n)
        ref = q.run_reference(inputs, CANONICAL, np.float64)
        healthy = q.run_mlx(inputs, CANONICAL)
        downgraded = q.run_mlx(inputs, CANONICAL.replace(quantum_precision="float16"))
        assert q.max_error(healthy, ref) < 1e-5
        assert q.max_error(downgraded, ref) > 1e-5


def test_diagonal_hamiltonian_keeps_populations() -> None:
    """Known answer: a diagonal H changes only phases, so the diagonal of ρ is unchanged."""
    rho = q.random_density_matrices(np.random.default_rng(0), 3, 5)
    ham = np.diag(np.arange(5.0))
    out = q.evolve_mlx(rho, ham, 0.7)
    np.testing.assert_allclose(
        np.diagonal(out, axis1=1, axis2=2), np.diagonal(rho, axis1=1, axis2=2), atol=1e-6
    )
    want = rho * np.exp(-1j * 0.7 * (np.arange(5)[:, None] - np.arange(5)[None, :]))
    np.testing.assert_allclose(out, want, atol=1e-6)


def test_zero_time_is_identity(backend: Backend) -> None:
    """Evolving for t = 0 returns ρ."""
    rng = np.random.default_rng(1)
    rho = q.random_density_matrices(rng, 2, 4)
    out = backend.evolve(rho, q.random_hamiltonians(rng, 2, 4), 0.0)
    np.testing.assert_allclose(out, rho, atol=1e-6)


def test_trace_distance_known_answers() -> None:
    """Trace distance is 0 for equal states, 1 for orthogonal pure states, ½ for ρ vs a mix."""
    a = np.diag([1.0, 0.0])[None]
    b = np.diag([0.0, 1.0])[None]
    assert q.trace_distance(a, a).tolist() == [0.0]
    assert q.trace_distance(a, b).tolist() == [1.0]
    assert q.trace_distance(a, (a + b) / 2).tolist() == [0.5]


def test_purity_and_coherence_known_answers() -> None:
    """|+⟩⟨+| has purity 1 and l1 coherence 1; the maximally mixed qubit 0.5 and 0."""
    plus = np.full((1, 2, 2), 0.5)
    mixed = np.eye(2)[None] / 2
    assert q.purity(plus).tolist() == [1.0]
    assert q.l1_coherence(plus).tolist() == [1.0]
    assert q.purity(mixed).tolist() == [0.5]
    assert q.l1_coherence(mixed).tolist() == [0.0]


@pytest.mark.parametrize(
    ("rho", "ham", "t", "message"),
    [
        (np.eye(2) / 2, np.eye(2), 1.0, "batch"),
        (np.eye(2)[None], np.eye(2), 1.0, "trace 1"),
        (np.array([[[0.5, 1.0], [0.0, 0.5]]]), np.eye(2), 1.0, "Hermitian"),
        (np.eye(2)[None] / 2, np.eye(3), 1.0, "hamiltonian"),
        (np.eye(2)[None] / 2, np.eye(2), float("nan"), "finite"),
    ],
)
def test_input_validation_names_the_constraint(rho: Any, ham: Any, t: float, message: str) -> None:
    """Bad states, Hamiltonians and times raise ValueError naming the constraint."""
    with pytest.raises(ValueError, match=message):
        q.evolve_mlx(rho, ham, t)
    with pytest.raises(ValueError, match=message):
        q.evolve_reference(rho, ham, t)


def test_unknown_precision_is_rejected() -> None:
    """Only float32 and float16 precisions exist."""
    with pytest.raises(ValueError, match="precision"):
        q.evolve_mlx(np.eye(2)[None] / 2, np.eye(2), 1.0, precision="bfloat16")


def test_coherence_measurements_are_healthy_floats() -> None:
    """The monthly tier's measurements are plain floats within their KERNELS.md bounds."""
    m = q.coherence_measurements(CANONICAL, np.random.default_rng(0), n=32)
    assert all(type(v) is float for v in m.values())
    assert m["state_deviation"] < 1e-5
    assert m["trace_error"] <= 1e-6
    assert m["hermiticity_error"] <= 1e-6
    assert m["min_eigenvalue"] >= -1e-6
    assert m["reference_min_eigenvalue"] >= -1e-8
    assert m["purity_change"] <= 1e-5
