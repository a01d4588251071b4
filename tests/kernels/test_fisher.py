"""Tests of Fisher geometry: Fisher–Rao distances, the softmax metric, and the cached QFI."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernels import fisher as f
from kernels.profile import canonical_profile
from kernels.quantum import random_density_matrices, random_hamiltonians
from tests.kernels.conftest import Backend
from tests.strategies import distribution_pairs, distribution_triples, softmax_logits

PROPERTY = settings(max_examples=100, deadline=None)
CANONICAL = canonical_profile()


@PROPERTY
@given(pq=distribution_pairs())
def test_distance_matches_float64_oracle(backend: Backend, pq: Any) -> None:
    """Each float32 implementation agrees with the float64 arcsin form within its bound."""
    p, q = pq
    got = backend.fisher_rao(p.astype(np.float32), q.astype(np.float32))
    want = f.fisher_rao_reference(p, q)
    assert np.max(np.abs(got - want)) <= backend.distance_tol(p.shape[1])


#: p = e₀ against a q without category 0: the distance is π, and float32 MLX once gave
#: 3.1415946 (found by Hypothesis in CI).
DISJOINT_NEAR_PI = (
    np.eye(1, 36),
    np.array([[0.0, 0.0, 0.0, 3.24833523e-05] + [3.12489849e-02] * 32]),
)


@PROPERTY
@given(pq=distribution_pairs())
@example(pq=DISJOINT_NEAR_PI)
def test_distance_is_symmetric_bounded_and_zero_on_self(backend: Backend, pq: Any) -> None:
    """d(p, q) = d(q, p), 0 ≤ d ≤ π, and d(p, p) = 0 exactly (the arcsin form)."""
    p, q = (a.astype(np.float32) for a in pq)
    d = backend.fisher_rao(p, q)
    assert np.array_equal(d, backend.fisher_rao(q, p))
    assert np.all(d >= 0)
    assert np.all(d <= math.pi + 1e-6)
    assert np.all(backend.fisher_rao(p, p) == 0)


@PROPERTY
@given(triple=distribution_triples())
def test_distance_triangle_inequality(triple: Any) -> None:
    """The float64 distance obeys the triangle inequality."""
    p, q, r = triple
    d = f.fisher_rao_reference
    assert np.all(d(p, r) <= d(p, q) + d(q, r) + 1e-12)


@PROPERTY
@given(pq=distribution_pairs())
def test_arcsin_and_arccos_forms_agree_in_float64(pq: Any) -> None:
    """The row-wise arcsin form equals the diagonal of the all-pairs arccos form (float64)."""
    p, q = pq
    rowwise = f.fisher_rao_reference(p, q)
    pairs = f.fisher_rao_pairs_reference(p, q)
    # arccos near 1 turns an error δ in √p·√q into 2·√(2·δ); the sum of K products carries
    # up to K roundings (Hypothesis found 1.07e-7 on identical rows of K = 25: δ ≈ 6.5 ulp).
    bound = 2 * math.sqrt(2 * p.shape[1] * np.finfo(np.float64).eps)
    assert np.max(np.abs(np.diag(pairs) - rowwise)) <= bound


def test_all_pairs_mlx_matches_reference() -> None:
    """The MLX all-pairs matmul matches the float64 reference within float32's arccos error."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(16), size=6)
    q = rng.dirichlet(np.ones(16), size=5)
    got = f.fisher_rao_pairs_mlx(p.astype(np.float32), q.astype(np.float32))
    # Random pairs are far from zero distance, where the arccos form is steep: its error stays
    # under 2·√(2·eps32) ≈ 1e-3, the least of its error near zero distance.
    assert np.max(np.abs(got - f.fisher_rao_pairs_reference(p, q))) <= 1e-3


def test_arccos_form_loses_digits_at_zero() -> None:
    """In float32 the arccos form's self-distance is far from 0; the arcsin form is exact."""
    p = np.random.default_rng(0).dirichlet(np.ones(1000), size=8).astype(np.float32)
    assert np.max(np.diag(f.fisher_rao_pairs_mlx(p, p))) > 1e-5
    assert np.max(f.fisher_rao_mlx(p, p)) == 0


def test_known_answers_identical_and_disjoint(backend: Backend) -> None:
    """Distance 0 for identical rows and π for disjoint supports."""
    p = np.array([[0.5, 0.5, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    q = np.array([[0.0, 0.0, 0.25, 0.75], [0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    d = backend.fisher_rao(p, q)
    assert d[0] == pytest.approx(math.pi, abs=1e-6)
    assert d[1] == 0


@pytest.mark.parametrize(
    ("p", "message"),
    [
        ([[0.5, 0.6]], "sum to 1"),
        ([[1.5, -0.5]], "non-negative"),
        ([[np.nan, 1.0]], "finite"),
        ([0.5, 0.5], "2-D"),
    ],
)
def test_distribution_validation_names_the_constraint(p: Any, message: str) -> None:
    """Bad distributions raise ValueError naming the broken constraint."""
    with pytest.raises(ValueError, match=message):
        f.fisher_rao_mlx(np.asarray(p, dtype=np.float32), np.asarray(p, dtype=np.float32))
    with pytest.raises(ValueError, match=message):
        f.fisher_rao_reference(p, p)


@PROPERTY
@given(theta=softmax_logits(), seed=st.integers(0, 2**32 - 1))
def test_metric_form_follows_natural_sparsity(theta: Any, seed: int) -> None:
    """CSR above 50 % exact zeros, dense otherwise; valid, PSD and equal to the dense form."""
    matrix, validation = f.fisher_metric(theta, np.random.default_rng(seed))
    dense = f.fisher_metric_dense(theta)
    assert validation.sparsity == f.natural_sparsity(dense)
    assert validation.sparsity >= 1 - 1 / theta.shape[0] - 1e-12
    assert validation.used_sparse == (validation.sparsity > 0.5)
    assert scipy.sparse.issparse(matrix) == validation.used_sparse
    assert validation.symmetric_error <= 1e-12
    assert validation.min_eigenvalue >= -1e-8
    assert validation.quadratic_form_error <= 1e-9


def test_metric_is_never_thresholded() -> None:
    """Entries far below any threshold survive in the CSR form (no truncation)."""
    theta = np.array([[0.0, -30.0, -30.0]] * 4)  # p ≈ (1, 9e-14, 9e-14)
    matrix, validation = f.fisher_metric(theta, np.random.default_rng(0))
    dense = f.fisher_metric_dense(theta)
    assert validation.used_sparse
    assert matrix.nnz == np.count_nonzero(dense)
    assert np.array_equal(matrix.toarray(), dense)


@PROPERTY
@given(theta=softmax_logits())
def test_sparse_metric_is_assembled_from_the_blocks(theta: Any) -> None:
    """The CSR form, built block by block, holds exactly the dense form's non-zero entries."""
    sparse = f.fisher_metric_sparse(theta)
    dense = f.fisher_metric_dense(theta)
    assert scipy.sparse.issparse(sparse)
    assert sparse.nnz == np.count_nonzero(dense)
    assert np.array_equal(sparse.toarray(), dense)


def test_invalid_sparse_form_falls_back_to_dense_with_a_reason() -> None:
    """A corrupted (asymmetric) sparse form fails validation; the dense form is used."""
    theta = np.random.default_rng(0).standard_normal((4, 3))
    corrupted = f.fisher_metric_dense(theta)
    corrupted[0, 1] += 1e-3
    matrix, validation = f.fisher_metric(
        theta, np.random.default_rng(0), held=scipy.sparse.csr_matrix(corrupted)
    )
    assert not validation.used_sparse
    assert validation.fell_back
    assert not scipy.sparse.issparse(matrix)
    assert validation.fallback_reason is not None
    assert "symmetric" in validation.fallback_reason


def test_dense_metric_reports_why() -> None:
    """A single group (no natural sparsity) is held dense and says why."""
    _, validation = f.fisher_metric(np.zeros((1, 4)), np.random.default_rng(0))
    assert not validation.used_sparse
    assert not validation.fell_back
    assert validation.fallback_reason is not None
    assert "sparsity" in validation.fallback_reason


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 8))
def test_pure_state_qfi_is_four_times_variance(seed: int, n: int) -> None:
    """Known answer: for a pure state, F_Q = 4·(⟨H²⟩ − ⟨H⟩²), on MLX and the reference."""
    rng = np.random.default_rng(seed)
    psi = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    psi /= np.linalg.norm(psi)
    ham = random_hamiltonians(rng, 1, n)[0]
    mean = np.vdot(psi, ham @ psi).real
    var = np.vdot(psi, ham @ ham @ psi).real - mean**2
    rho = np.outer(psi, psi.conj())
    assert f.qfi_reference(rho, ham) == pytest.approx(4 * var, rel=1e-9, abs=1e-9)
    # complex64 eigenvectors: relative error ≈ n·eps32 on the weighted sum.
    assert f.qfi_mlx(rho, ham) == pytest.approx(4 * var, rel=1e-4, abs=1e-4)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 8))
def test_mixed_state_qfi_matches_reference(seed: int, n: int) -> None:
    """The MLX QFI of a full-rank mixed state matches float64 and is ≤ 4·Var(H)."""
    rng = np.random.default_rng(seed)
    rho = random_density_matrices(rng, 1, n)[0]
    ham = random_hamiltonians(rng, 1, n)[0]
    want = f.qfi_reference(rho, ham)
    mean = np.trace(rho @ ham).real
    var = np.trace(rho @ ham @ ham).real - mean**2
    assert want <= 4 * var + 1e-9
    assert f.qfi_mlx(rho, ham) == pytest.approx(want, rel=1e-3, abs=1e-4)


def test_qfi_cache_counts_hits_and_misses(fresh_caches: None) -> None:
    """A repeated (ρ, H) is a hit; a new one is a miss."""
    rng = np.random.default_rng(0)
    rho = random_density_matrices(rng, 2, 3)
    ham = random_hamiltonians(rng, 1, 3)[0]
    first = f.qfi_mlx(rho[0], ham)
    assert f.qfi_mlx(rho[0], ham) == first
    f.qfi_mlx(rho[1], ham)
    assert f.cache_stats() == (1, 2)


def test_qfi_cache_key_rounds_to_1e_10() -> None:
    """States that differ below 1e-10 share a cache key; larger differences do not."""
    rho = np.eye(2) / 2
    ham = np.diag([1.0, -1.0])
    assert f.QFICache.key(rho, ham) == f.QFICache.key(rho + 1e-13, ham)
    assert f.QFICache.key(rho, ham) != f.QFICache.key(rho + 1e-8, ham)


def test_qfi_cache_is_lru() -> None:
    """Past its capacity the least recently used entry is evicted."""
    cache = f.QFICache(maxsize=2)
    cache.put("a", 1.0)
    cache.put("b", 2.0)
    cache.get("a")
    cache.put("c", 3.0)
    assert cache.get("b") is None
    assert cache.get("a") == 1.0
    assert cache.stats() == (2, 1)


def test_qfi_cache_thrash_drill_always_misses(fresh_caches: None) -> None:
    """With cache_thrash every QFI call is a miss."""
    thrash = CANONICAL.replace(drill={"cache_thrash": True})
    rho, ham = np.eye(2) / 2, np.diag([1.0, -1.0])
    for _ in range(3):
        f.qfi_mlx(rho, ham, thrash)
    assert f.cache_stats() == (0, 3)


def test_qfi_validation_names_the_constraint() -> None:
    """A non-Hermitian H and a trace-2 ρ are rejected with the constraint named."""
    with pytest.raises(ValueError, match="Hermitian"):
        f.qfi_reference(np.eye(2) / 2, np.array([[0, 1], [0, 0]]))
    with pytest.raises(ValueError, match="trace 1"):
        f.qfi_reference(np.eye(2), np.eye(2))
