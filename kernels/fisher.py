"""Fisher geometry: Fisher–Rao distances, the softmax Fisher metric, and cached QFI.

Three pieces (KERNELS.md §2):

* Fisher–Rao distance between categorical distributions p, q (rows summing to
  1), ``d = 4·arcsin(‖√p − √q‖₂ / 2)`` row by row (:func:`fisher_rao_mlx`,
  :func:`fisher_rao_reference`); exact at zero distance, unlike the arccos form.
  All pairs use one matmul, ``2·arccos(clip(√P·√Qᵀ))``
  (:func:`fisher_rao_pairs_reference`, :func:`fisher_rao_pairs_mlx`), whose
  error near zero distance is ``2·√(2·δ)`` for an error δ in the coefficient
  √p·√q, because arccos is flat at 1: at least ``2·√(2·ε)`` (≈ 1e-3 in float32,
  4e-8 in float64), and up to ``2·√(2·K·ε)`` over K categories, since the sum of
  K products carries up to K roundings.
* The Fisher information metric of G independent softmax groups of C classes:
  block-diagonal, one block ``diag(p) − p·pᵀ`` per group. Held as a SciPy CSR
  matrix when more than half of its entries are exactly zero, never thresholded,
  and validated (:func:`fisher_metric`, :class:`MetricValidation`).
* Quantum Fisher information of ``ρ(θ) = e^{−iθH} ρ e^{iθH}`` computed by MLX in
  the eigenbasis of ρ, with an LRU cache keyed by a hash of (ρ, H) rounded to
  1e-10 whose hits and misses are the kernel's cache efficiency
  (:func:`qfi_mlx`, :func:`qfi_reference`, :func:`cache_stats`).

The registered ``fisher`` kernel's output is the row-wise distances of a batch
followed by the QFI of a few fixed states (:func:`run_mlx`, :func:`run_reference`).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse

from kernels import _drill
from kernels._counting import CountingCache
from kernels.profile import Profile

__all__ = [
    "FisherInputs",
    "MetricValidation",
    "QFICache",
    "cache_stats",
    "disjoint_distance_error",
    "fisher_metric",
    "fisher_metric_dense",
    "fisher_metric_sparse",
    "fisher_rao_mlx",
    "fisher_rao_pairs_mlx",
    "fisher_rao_pairs_reference",
    "fisher_rao_reference",
    "make_inputs",
    "max_error",
    "metric_min_eigenvalue",
    "metric_quadratic_form_error",
    "metric_symmetric_error",
    "metric_validation",
    "natural_sparsity",
    "pure_state_qfi_error",
    "qfi_mlx",
    "qfi_reference",
    "reset_cache_stats",
    "run_mlx",
    "run_reference",
    "self_distance",
    "validate_metric",
]

FloatArray = npt.NDArray[np.floating[Any]]
ComplexArray = npt.NDArray[np.complexfloating[Any, Any]]

#: Eigenvalue pairs with λᵢ + λⱼ ≤ QFI_EPS are left out of the QFI sum.
QFI_EPS = 1e-6
#: States whose QFI the registered kernel computes through the cache per call.
QFI_STATES = 4


def _check_distributions(p: npt.ArrayLike, name: str) -> FloatArray:
    """Validate a (B, K) finite, non-negative array whose rows sum to 1."""
    arr = np.asarray(p)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be 2-D (B, K) with K > 0, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must have a real floating dtype, got {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or Inf)")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative")
    tol = 1e-6 + arr.shape[1] * float(np.finfo(arr.dtype).eps)
    if not np.allclose(arr.sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=tol):
        raise ValueError(f"{name}: every row must sum to 1 (within {tol:.1e})")
    return arr


def _to_mx32(arr: FloatArray) -> mx.array:
    """Return ``arr`` as a float32 MLX array (no intermediate copy when already float32)."""
    return mx.array(np.asarray(arr, dtype=np.float32))


def _check_pair(p: npt.ArrayLike, q: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validate two batches of distributions with the same shape."""
    pa, qa = _check_distributions(p, "p"), _check_distributions(q, "q")
    if pa.shape != qa.shape:
        raise ValueError(f"p and q must have the same shape, got {pa.shape} and {qa.shape}")
    return pa, qa


# ---------------------------------------------------------------- Fisher–Rao


def fisher_rao_reference(
    p: npt.ArrayLike, q: npt.ArrayLike, dtype: npt.DTypeLike = np.float64
) -> FloatArray:
    """Return the row-wise Fisher–Rao distance ``4·arcsin(‖√p − √q‖₂ / 2)`` in ``dtype``.

    Examples
    --------
    >>> fisher_rao_reference([[0.5, 0.5]], [[0.5, 0.5]]).tolist()
    [0.0]
    >>> round(float(fisher_rao_reference([[1.0, 0.0]], [[0.0, 1.0]])[0]) - math.pi, 12)
    0.0
    """
    pa, qa = _check_pair(p, q)
    # Step 1: the chord between the points √p and √q of the unit sphere.
    chord = np.linalg.norm(np.sqrt(pa.astype(dtype)) - np.sqrt(qa.astype(dtype)), axis=1)
    # Step 2: arc length on the sphere of radius 2 (clipped against rounding above 2).
    return np.asarray(4 * np.arcsin(np.minimum(chord / 2, 1)), dtype=dtype)


def _fisher_rao_graph(p: mx.array, q: mx.array) -> mx.array:
    """MLX row-wise Fisher–Rao distance."""
    diff = mx.sqrt(p) - mx.sqrt(q)
    chord = mx.sqrt(mx.sum(diff * diff, axis=1))
    # The distance is at most π. Near it, float32 sqrt and arcsin can round a few ulp over
    # (3.1415946 for p = e₀ against a q without that category), so the result is clipped
    # as the arcsin argument is.
    out: mx.array = mx.minimum(4 * mx.arcsin(mx.minimum(chord * 0.5, 1)), math.pi)
    return out


_FISHER_RAO = mx.compile(_fisher_rao_graph)


def fisher_rao_mlx(p: npt.ArrayLike, q: npt.ArrayLike) -> FloatArray:
    """Return the row-wise Fisher–Rao distance computed by compiled MLX in float32.

    Examples
    --------
    >>> p = np.array([[0.2, 0.8], [1.0, 0.0]], dtype=np.float32)
    >>> q = np.array([[0.2, 0.8], [0.0, 1.0]], dtype=np.float32)
    >>> [round(float(d), 5) for d in fisher_rao_mlx(p, q)]
    [0.0, 3.14159]
    """
    pa, qa = _check_pair(p, q)
    out = _FISHER_RAO(_to_mx32(pa), _to_mx32(qa))
    mx.eval(out)
    return np.array(out)


def fisher_rao_pairs_reference(
    p: npt.ArrayLike, q: npt.ArrayLike, dtype: npt.DTypeLike = np.float64
) -> FloatArray:
    """Return all-pairs distances ``2·arccos(clip(√P·√Qᵀ, −1, 1))``, shape (Bp, Bq).

    Near zero distance the error is up to ``2·√(2·K·ε)`` of ``dtype`` over K categories
    (see the module docstring).

    >>> np.round(fisher_rao_pairs_reference([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]), 6).tolist()
    [[0.0, 3.141593]]
    """
    pa, qa = _check_distributions(p, "p"), _check_distributions(q, "q")
    if pa.shape[1] != qa.shape[1]:
        raise ValueError(f"p and q must have the same K, got {pa.shape[1]} and {qa.shape[1]}")
    # Step 1: Bhattacharyya coefficients of every pair by one matmul.
    bc = np.sqrt(pa.astype(dtype)) @ np.sqrt(qa.astype(dtype)).T
    # Step 2: the angle between the points on the sphere, clipped against rounding.
    return np.asarray(2 * np.arccos(np.clip(bc, -1, 1)), dtype=dtype)


def fisher_rao_pairs_mlx(p: npt.ArrayLike, q: npt.ArrayLike) -> FloatArray:
    """Return all-pairs Fisher–Rao distances by one MLX matmul (float32; see the reference).

    >>> round(float(fisher_rao_pairs_mlx([[1.0, 0.0]], [[0.0, 1.0]])[0, 0]), 5)
    3.14159
    """
    pa, qa = _check_distributions(p, "p"), _check_distributions(q, "q")
    if pa.shape[1] != qa.shape[1]:
        raise ValueError(f"p and q must have the same K, got {pa.shape[1]} and {qa.shape[1]}")
    sp, sq = mx.sqrt(_to_mx32(pa)), mx.sqrt(_to_mx32(qa))
    out = 2 * mx.arccos(mx.clip(sp @ sq.T, -1, 1))
    mx.eval(out)
    return np.array(out)


# ---------------------------------------------------------------- softmax Fisher metric


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricValidation:
    """The outcome of validating a Fisher metric's sparse form against its dense form.

    Attributes
    ----------
    symmetric_error : float
        max |G − Gᵀ| of the held form (must be ≤ 1e-12).
    min_eigenvalue : float
        Smallest eigenvalue, float64 (must be ≥ −1e-8).
    quadratic_form_error : float
        max over random v of |vᵀG_sparse v − vᵀG_dense v| / |vᵀG_dense v| (≤ 1e-9).
    sparsity : float
        Share of entries that are exactly zero.
    used_sparse : bool
        Whether the CSR form is the one in use.
    fallback_reason : str or None
        Why the dense form is used, when it is (too little natural sparsity, or the
        failed validation checks).
    fell_back : bool
        Whether a sparse form was validated and failed, so the dense form replaced it
        (False when the metric is dense because it has too little natural sparsity).
    """

    symmetric_error: float
    min_eigenvalue: float
    quadratic_form_error: float
    sparsity: float
    used_sparse: bool
    fallback_reason: str | None
    fell_back: bool = False


def _check_logits(theta: npt.ArrayLike) -> FloatArray:
    """Validate logits of shape (G, C), finite."""
    arr = np.asarray(theta, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"theta must be 2-D (G, C) with G, C > 0, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("theta must be finite (no NaN or Inf)")
    return arr


def _metric_blocks(theta: npt.ArrayLike) -> list[FloatArray]:
    """Return the per-group blocks diag(p_k) − p_k p_kᵀ of the softmax Fisher metric."""
    logits = _check_logits(theta)
    # Step 1: p_k = softmax(θ_k), shifted by the row maximum for stability.
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    # Step 2: one block diag(p_k) − p_k p_kᵀ per group.
    return [np.diag(p[k]) - np.outer(p[k], p[k]) for k in range(logits.shape[0])]


def fisher_metric_dense(theta: npt.ArrayLike) -> FloatArray:
    """Return the dense (G·C, G·C) Fisher metric of G softmax groups, in float64.

    >>> fisher_metric_dense([[0.0, 0.0]]).tolist()
    [[0.25, -0.25], [-0.25, 0.25]]
    """
    return np.asarray(scipy.linalg.block_diag(*_metric_blocks(theta)), dtype=np.float64)


def fisher_metric_sparse(theta: npt.ArrayLike) -> Any:
    """Return the (G·C, G·C) Fisher metric as CSR, assembled block by block (no dense array).

    Built by ``scipy.sparse.block_diag`` from the per-group blocks, never from the dense
    form, so comparing the two (:func:`validate_metric`) tests the sparse assembly. Only
    entries that are exactly zero are left out: nothing is thresholded.

    >>> m = fisher_metric_sparse([[0.0, 0.0], [0.0, 0.0]])
    >>> type(m).__name__, m.nnz, m.shape
    ('csr_matrix', 8, (4, 4))
    """
    blocks = [scipy.sparse.csr_matrix(block) for block in _metric_blocks(theta)]
    return scipy.sparse.csr_matrix(scipy.sparse.block_diag(blocks, format="csr"))


def natural_sparsity(matrix: FloatArray) -> float:
    """Return the share of entries that are exactly zero.

    >>> natural_sparsity(fisher_metric_dense(np.zeros((4, 3))))
    0.75
    """
    return float(np.count_nonzero(matrix == 0) / matrix.size)


def validate_metric(
    held: Any, dense: FloatArray, rng: np.random.Generator, *, vectors: int = 8
) -> tuple[float, float, float]:
    """Return (symmetric error, min eigenvalue, quadratic-form error) of ``held`` vs ``dense``.

    ``held`` is the form in use (CSR or ndarray); the quadratic forms vᵀGv are
    compared for ``vectors`` random v drawn from ``rng``.
    """
    as_dense = held.toarray() if scipy.sparse.issparse(held) else np.asarray(held)
    # Step 1: symmetry of the held form.
    symmetric = float(np.max(np.abs(as_dense - as_dense.T)))
    # Step 2: smallest eigenvalue of its symmetric part, in float64.
    sym = (as_dense + as_dense.T) / 2
    min_eig = float(scipy.linalg.eigvalsh(sym, subset_by_index=[0, 0])[0])
    # Step 3: quadratic forms of the held form against the dense form.
    v = rng.standard_normal((dense.shape[0], vectors))
    held_q = np.einsum("iv,iv->v", v, held @ v)
    dense_q = np.einsum("iv,iv->v", v, dense @ v)
    rel = np.abs(held_q - dense_q) / np.maximum(np.abs(dense_q), np.finfo(np.float64).tiny)
    return symmetric, min_eig, float(np.max(rel))


def fisher_metric(
    theta: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    held: Any = None,
) -> tuple[Any, MetricValidation]:
    """Return the Fisher metric of softmax groups (CSR when > 50 % zeros) and its validation.

    Parameters
    ----------
    theta : array_like, shape (G, C)
        Finite logits.
    rng : numpy.random.Generator
        Draws the vectors of the quadratic-form comparison.
    held : sparse matrix, optional
        Use this candidate sparse form instead of building one (lets a check
        validate a stored or corrupted form); its dense twin is always rebuilt.

    Returns
    -------
    matrix : scipy.sparse.csr_matrix or ndarray
        The form in use: dense whenever validation of the sparse form fails.
    validation : MetricValidation

    Examples
    --------
    >>> m, v = fisher_metric(np.zeros((4, 3)), np.random.default_rng(0))
    >>> type(m).__name__, v.used_sparse, v.fallback_reason, v.sparsity
    ('csr_matrix', True, None, 0.75)
    """
    dense = fisher_metric_dense(theta)
    sparsity = natural_sparsity(dense)
    # Step 1: dense whenever at most half of the entries are exactly zero (no thresholding).
    if held is None and sparsity <= 0.5:
        sym, eig, _ = validate_metric(dense, dense, rng)
        reason = f"natural sparsity {sparsity:.3f} <= 0.5"
        return dense, MetricValidation(
            symmetric_error=sym,
            min_eigenvalue=eig,
            quadratic_form_error=0.0,
            sparsity=sparsity,
            used_sparse=False,
            fallback_reason=reason,
        )
    # The CSR is assembled from the per-group blocks, independently of the dense array it is
    # validated against, so an assembly error shows up as a failed validation.
    candidate = fisher_metric_sparse(theta) if held is None else scipy.sparse.csr_matrix(held)
    # Step 2: validate the sparse form; any failure falls back to dense and says why.
    sym, eig, quad = validate_metric(candidate, dense, rng)
    failures = []
    if not sym <= 1e-12:
        failures.append(f"symmetric error {sym:.3g} > 1e-12")
    if not eig >= -1e-8:
        failures.append(f"min eigenvalue {eig:.3g} < -1e-8")
    if not quad <= 1e-9:
        failures.append(f"sparse-vs-dense quadratic form error {quad:.3g} > 1e-9")
    validation = MetricValidation(
        symmetric_error=sym,
        min_eigenvalue=eig,
        quadratic_form_error=quad,
        sparsity=sparsity,
        used_sparse=not failures,
        fallback_reason="; ".join(failures) or None,
        fell_back=bool(failures),
    )
    return (dense if failures else candidate), validation


# ---------------------------------------------------------------- quantum Fisher information


class QFICache(CountingCache):
    """An LRU cache of QFI values keyed by a hash of (ρ, H) rounded to 1e-10, with counts.

    >>> cache = QFICache(maxsize=2)
    >>> cache.get("k") is None, cache.stats()
    (True, (0, 1))
    >>> cache.put("k", 1.0); cache.get("k"), cache.stats()
    (1.0, (1, 1))
    """

    def __init__(self, *, maxsize: int = 256) -> None:
        super().__init__()
        self.maxsize = maxsize
        self._data: OrderedDict[str, float] = OrderedDict()

    @staticmethod
    def key(rho: npt.ArrayLike, hamiltonian: npt.ArrayLike) -> str:
        """Return the sha256 of (ρ, H) rounded to 1e-10, as complex128 bytes."""
        digest = hashlib.sha256()
        for arr in (rho, hamiltonian):
            rounded = np.round(np.asarray(arr, dtype=np.complex128), 10) + 0.0
            digest.update(str(rounded.shape).encode())
            digest.update(np.ascontiguousarray(rounded).tobytes())
        return digest.hexdigest()

    def get(self, key: str) -> float | None:
        """Return the cached value (a hit) or None (a miss)."""
        with self._lock:
            if key in self._data:
                self._hits += 1
                self._data.move_to_end(key)
                return self._data[key]
            self._misses += 1
            return None

    def put(self, key: str, value: float) -> None:
        """Store ``value``, evicting the least recently used entries beyond ``maxsize``."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


_QFI_CACHE = QFICache()


def cache_stats() -> tuple[int, int]:
    """Return (hits, misses) of the process-wide QFI cache."""
    return _QFI_CACHE.stats()


def reset_cache_stats() -> None:
    """Zero the process-wide QFI cache counters."""
    _QFI_CACHE.reset_stats()


def _check_state(rho: npt.ArrayLike, hamiltonian: npt.ArrayLike) -> tuple[Any, Any]:
    """Validate an (n, n) density matrix and an (n, n) Hermitian matrix."""
    r = np.asarray(rho, dtype=np.complex128)
    h = np.asarray(hamiltonian, dtype=np.complex128)
    for name, arr in (("rho", r), ("hamiltonian", h)):
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
            raise ValueError(f"{name} must be square (n, n), got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (no NaN or Inf)")
        scale = max(1.0, float(np.max(np.abs(arr))))
        if np.max(np.abs(arr - arr.conj().T)) > 1e-6 * scale:
            raise ValueError(f"{name} must be Hermitian (within 1e-6)")
    if r.shape != h.shape:
        raise ValueError(f"rho and hamiltonian must match, got {r.shape} and {h.shape}")
    if abs(np.trace(r) - 1) > 1e-5:
        raise ValueError("rho must have trace 1 (within 1e-5)")
    return r, h


def _qfi_sum(lam: Any, h_eig_abs2: Any, eps: float, xp: Any) -> Any:
    """Return 2·Σ_{λᵢ+λⱼ>ε} (λᵢ−λⱼ)²/(λᵢ+λⱼ)·|⟨i|H|j⟩|² for NumPy or MLX arrays."""
    total = lam[:, None] + lam[None, :]
    diff = lam[:, None] - lam[None, :]
    keep = total > eps
    terms = xp.where(keep, diff * diff / xp.where(keep, total, 1.0), 0.0) * h_eig_abs2
    return 2 * xp.sum(terms)


def qfi_reference(rho: npt.ArrayLike, hamiltonian: npt.ArrayLike, *, eps: float = QFI_EPS) -> float:
    """Return the quantum Fisher information of ρ under H, in float64.

    Examples
    --------
    >>> psi = np.array([1.0, 1.0]) / np.sqrt(2)
    >>> round(qfi_reference(np.outer(psi, psi), np.diag([0.5, -0.5])), 12)
    1.0
    """
    r, h = _check_state(rho, hamiltonian)
    # Step 1: eigenbasis of ρ.
    lam, vec = np.linalg.eigh(r)
    # Step 2: H in that basis, and the weighted sum over eigenvalue pairs.
    h_eig = vec.conj().T @ h @ vec
    return float(_qfi_sum(lam, np.abs(h_eig) ** 2, eps, np))


def qfi_mlx(
    rho: npt.ArrayLike,
    hamiltonian: npt.ArrayLike,
    profile: Profile | None = None,
    *,
    eps: float = QFI_EPS,
) -> float:
    """Return the QFI computed by MLX (complex64), through the process-wide LRU cache.

    The cache holds ``profile.qfi_cache_size`` entries; the drill knob
    ``cache_thrash`` makes every call a miss.

    Examples
    --------
    >>> psi = np.array([1.0, 1.0]) / np.sqrt(2)
    >>> round(qfi_mlx(np.outer(psi, psi), np.diag([0.5, -0.5])), 5)
    1.0
    """
    r, h = _check_state(rho, hamiltonian)
    thrash = profile is not None and _drill.cache_thrash(profile)
    if profile is not None:
        _QFI_CACHE.maxsize = profile.qfi_cache_size
    key = QFICache.key(r, h)
    # Under cache_thrash the lookup uses a key that is never stored, so it always misses.
    cached = _QFI_CACHE.get(key + "#thrash" if thrash else key)
    if cached is not None:
        return cached
    lam, vec = mx.linalg.eigh(mx.array(r.astype(np.complex64)), stream=mx.cpu)
    h_eig = mx.conj(vec.T) @ mx.array(h.astype(np.complex64)) @ vec
    value = _qfi_sum(lam, mx.abs(h_eig) ** 2, eps, mx)
    mx.eval(value)
    result = float(value.item())
    if not thrash:
        _QFI_CACHE.put(key, result)
    return result


# ---------------------------------------------------------------- the registered kernel


@dataclass(frozen=True, slots=True)
class FisherInputs:
    """Inputs of the ``fisher`` kernel: distribution batches and a few QFI states."""

    p: FloatArray
    q: FloatArray
    rho: ComplexArray
    hamiltonian: ComplexArray


def make_inputs(
    rng: np.random.Generator, rows: int, profile: Profile, *, features: int = 1024
) -> FisherInputs:
    """Return seeded inputs: (rows, features) float32 distributions and QFI states n=4.

    >>> from kernels.profile import canonical_profile
    >>> make_inputs(np.random.default_rng(0), 2, canonical_profile(), features=8).p.shape
    (2, 8)
    """
    del profile  # the inputs do not depend on the profile

    def dist() -> FloatArray:
        e = rng.exponential(size=(rows, features))
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)

    a = rng.standard_normal((QFI_STATES, 4, 4)) + 1j * rng.standard_normal((QFI_STATES, 4, 4))
    rho = a @ a.conj().transpose(0, 2, 1)
    rho /= np.trace(rho, axis1=1, axis2=2)[:, None, None]
    x = rng.standard_normal((QFI_STATES, 4, 4)) + 1j * rng.standard_normal((QFI_STATES, 4, 4))
    ham = np.asarray((x + x.conj().transpose(0, 2, 1)) / 2, dtype=np.complex128)
    return FisherInputs(p=dist(), q=dist(), rho=rho, hamiltonian=ham)


def run_mlx(inputs: FisherInputs, profile: Profile) -> FloatArray:
    """Return the MLX row-wise distances followed by the cached MLX QFI of the states."""
    _drill.enter_drill(profile)
    out = np.zeros(0)
    for _ in range(_drill.repetitions(profile)):
        dist = fisher_rao_mlx(inputs.p, inputs.q).astype(np.float64)
        qfi = [qfi_mlx(r, h, profile) for r, h in zip(inputs.rho, inputs.hamiltonian, strict=True)]
        out = np.concatenate([dist, np.asarray(qfi)])
    return out


def run_reference(inputs: FisherInputs, profile: Profile, dtype: npt.DTypeLike) -> FloatArray:
    """Return the NumPy distances in ``dtype`` followed by the float64 QFI of the states."""
    del profile
    dist = fisher_rao_reference(inputs.p, inputs.q, dtype).astype(np.float64)
    qfi = [qfi_reference(r, h) for r, h in zip(inputs.rho, inputs.hamiltonian, strict=True)]
    return np.concatenate([dist, np.asarray(qfi)])


def max_error(mlx_out: npt.ArrayLike, ref64_out: npt.ArrayLike) -> float:
    """Return max |mlx − float64| over all outputs (radians for distances)."""
    return float(np.max(np.abs(np.asarray(mlx_out) - np.asarray(ref64_out)), initial=0.0))


def pure_state_qfi_error(profile: Profile, rng: np.random.Generator, *, n: int = 8) -> float:
    """Return |QFI_mlx(|ψ⟩⟨ψ|, H) − 4·Var_ψ(H)| / max(1, 4·Var) for a random pure state.

    >>> from kernels.profile import canonical_profile
    >>> pure_state_qfi_error(canonical_profile(), np.random.default_rng(0)) < 1e-4
    True
    """
    psi = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    psi /= np.linalg.norm(psi)
    x = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    ham = (x + x.conj().T) / 2
    mean = float(np.vdot(psi, ham @ psi).real)
    var = float(np.vdot(psi, ham @ ham @ psi).real) - mean**2
    got = qfi_mlx(np.outer(psi, psi.conj()), ham, profile)
    return abs(got - 4 * var) / max(1.0, 4 * var)


def self_distance(profile: Profile, rng: np.random.Generator, *, features: int = 1024) -> float:
    """Return max Fisher–Rao distance of rows to themselves on MLX (0 when healthy).

    >>> from kernels.profile import canonical_profile
    >>> self_distance(canonical_profile(), np.random.default_rng(0))
    0.0
    """
    p = make_inputs(rng, 16, profile, features=features).p
    return float(np.max(fisher_rao_mlx(p, p)))


def disjoint_distance_error(profile: Profile, rng: np.random.Generator) -> float:
    """Return max |d(p, q) − π| on MLX for distributions with disjoint supports.

    >>> from kernels.profile import canonical_profile
    >>> disjoint_distance_error(canonical_profile(), np.random.default_rng(0)) < 1e-6
    True
    """
    del profile
    e = rng.exponential(size=(8, 32))
    p, q = e.copy(), e.copy()
    p[:, 16:] = 0
    q[:, :16] = 0
    p /= p.sum(axis=1, keepdims=True)
    q /= q.sum(axis=1, keepdims=True)
    return float(np.max(np.abs(fisher_rao_mlx(p, q) - math.pi)))


def metric_validation(profile: Profile, rng: np.random.Generator) -> MetricValidation:
    """Return the validation of the metric of random 8×16 softmax logits (θ ~ 3·N(0, 1)).

    The weekly geometry check reports its numbers and, when the sparse form failed,
    its ``fallback_reason``.

    >>> from kernels.profile import canonical_profile
    >>> v = metric_validation(canonical_profile(), np.random.default_rng(0))
    >>> v.used_sparse, v.fell_back, v.fallback_reason
    (True, False, None)
    """
    del profile
    _, validation = fisher_metric(rng.standard_normal((8, 16)) * 3, rng)
    return validation


def metric_quadratic_form_error(profile: Profile, rng: np.random.Generator) -> float:
    """Return the sparse-vs-dense quadratic-form error of a random 8×16 softmax metric.

    >>> from kernels.profile import canonical_profile
    >>> metric_quadratic_form_error(canonical_profile(), np.random.default_rng(0)) <= 1e-9
    True
    """
    return metric_validation(profile, rng).quadratic_form_error


def metric_symmetric_error(profile: Profile, rng: np.random.Generator) -> float:
    """Return max |G − Gᵀ| of the held form of a random 8×16 softmax metric (≤ 1e-12).

    >>> from kernels.profile import canonical_profile
    >>> metric_symmetric_error(canonical_profile(), np.random.default_rng(0))
    0.0
    """
    return metric_validation(profile, rng).symmetric_error


def metric_min_eigenvalue(profile: Profile, rng: np.random.Generator) -> float:
    """Return the smallest eigenvalue of a random 8×16 softmax metric (≥ −1e-8).

    >>> from kernels.profile import canonical_profile
    >>> metric_min_eigenvalue(canonical_profile(), np.random.default_rng(0)) >= -1e-8
    True
    """
    return metric_validation(profile, rng).min_eigenvalue
