"""Quantum state evolution: ρ' = U ρ U† with U = e^{−iHt}, in MLX and in a float64 oracle.

Density matrices ρ have shape (B, n, n) (Hermitian, positive semi-definite,
trace 1); H is Hermitian, (n, n) or one per state (B, n, n). Both
implementations follow KERNELS.md §3: the eigendecomposition H = V·diag(λ)·V†
gives U = V·diag(e^{−iλt})·V†, then ρ' = U ρ U†.

:func:`evolve_mlx` runs in complex64; with ``precision="float16"`` the two
products U·ρ and (Uρ)·U† are done on 16-bit real and imaginary parts, the
precision-downgrade drill (state deviation ≈ 1e-3 instead of ≈ 1e-6).
:func:`evolve_reference` is generic in its dtype (complex128 is the oracle,
complex64 the NumPy peer).

Measurements, all in float64 and each returning a float (or one value per
state): :func:`trace_distance`, :func:`state_deviation`, :func:`trace_error`,
:func:`hermiticity_error`, :func:`min_eigenvalue`, :func:`purity`,
:func:`purity_change`, :func:`l1_coherence`; :func:`coherence_measurements`
runs them all for the monthly tier.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np
import numpy.typing as npt

from kernels import _drill
from kernels.profile import QUANTUM_PRECISIONS, Profile

__all__ = [
    "QuantumInputs",
    "coherence_invariant",
    "coherence_measurements",
    "evolve_mlx",
    "evolve_reference",
    "hermiticity_error",
    "l1_coherence",
    "make_inputs",
    "max_error",
    "min_eigenvalue",
    "purity",
    "purity_change",
    "random_density_matrices",
    "random_hamiltonians",
    "run_mlx",
    "run_reference",
    "state_deviation",
    "trace_distance",
    "trace_error",
]

FloatArray = npt.NDArray[np.floating[Any]]
ComplexArray = npt.NDArray[np.complexfloating[Any, Any]]


def _dagger(a: Any) -> Any:
    """Conjugate transpose of the last two axes (NumPy)."""
    return np.conj(np.swapaxes(a, -1, -2))


def _check_inputs(rho: npt.ArrayLike, hamiltonian: npt.ArrayLike, t: float) -> tuple[Any, Any]:
    """Validate a (B, n, n) Hermitian trace-1 batch, a Hermitian H and a finite t."""
    r = np.asarray(rho)
    h = np.asarray(hamiltonian)
    if r.ndim != 3 or r.shape[1] != r.shape[2] or r.shape[1] == 0:
        raise ValueError(f"rho must be a (B, n, n) batch of square matrices, got {r.shape}")
    n = r.shape[1]
    if h.shape not in ((n, n), (r.shape[0], n, n)):
        raise ValueError(f"hamiltonian must be (n, n) or (B, n, n) with n = {n}, got {h.shape}")
    if not math.isfinite(t):
        raise ValueError(f"t must be finite, got {t!r}")
    for name, arr in (("rho", r), ("hamiltonian", h)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite (no NaN or Inf)")
        scale = max(1.0, float(np.max(np.abs(arr))))
        if np.max(np.abs(arr - _dagger(arr))) > 1e-5 * scale:
            raise ValueError(f"{name} must be Hermitian (within 1e-5)")
    traces = np.trace(r, axis1=1, axis2=2)
    if np.max(np.abs(traces - 1)) > 1e-4:
        raise ValueError("rho must have trace 1 (within 1e-4) for every state")
    return r, h


def evolve_reference(
    rho: npt.ArrayLike,
    hamiltonian: npt.ArrayLike,
    t: float,
    dtype: npt.DTypeLike = np.complex128,
) -> ComplexArray:
    """Return U ρ U† with U = e^{−iHt}, computed by NumPy in ``dtype``.

    Parameters
    ----------
    rho : array_like, shape (B, n, n)
        Density matrices: Hermitian, trace 1.
    hamiltonian : array_like, shape (n, n) or (B, n, n)
        Hermitian generator(s).
    t : float
        Evolution time.
    dtype : complex dtype
        complex128 for the oracle, complex64 for the NumPy peer.

    Examples
    --------
    >>> rho = np.array([[[0.5, 0.5], [0.5, 0.5]]])
    >>> out = evolve_reference(rho, np.diag([0.0, np.pi]), 1.0)
    >>> np.round(out.real, 12).tolist()
    [[[0.5, -0.5], [-0.5, 0.5]]]
    """
    r, h = _check_inputs(rho, hamiltonian, t)
    real = np.dtype(np.float32 if np.dtype(dtype) == np.complex64 else np.float64)
    # Step 1: eigendecomposition H = V·diag(λ)·V†.
    lam, vec = np.linalg.eigh(h.astype(dtype))
    # Step 2: U = V·diag(e^{−iλt})·V†.
    angle = np.asarray(lam, dtype=real) * np.asarray(t, dtype=real)
    phase = np.asarray(np.cos(angle) - 1j * np.sin(angle), dtype=dtype)
    u = (vec * phase[..., None, :]) @ _dagger(vec)
    # Step 3: ρ' = U ρ U†.
    return np.asarray(u @ r.astype(dtype) @ _dagger(u), dtype=dtype)


def _dagger_mx(a: mx.array) -> mx.array:
    """Conjugate transpose of the last two axes (MLX)."""
    return mx.conj(mx.swapaxes(a, -1, -2))


def _matmul16(a: mx.array, b: mx.array) -> mx.array:
    """Complex product a·b computed on float16 real and imaginary parts."""
    ar, ai = mx.real(a).astype(mx.float16), mx.imag(a).astype(mx.float16)
    br, bi = mx.real(b).astype(mx.float16), mx.imag(b).astype(mx.float16)
    re = (ar @ br - ai @ bi).astype(mx.float32)
    im = (ar @ bi + ai @ br).astype(mx.float32)
    return re + 1j * im


def evolve_mlx(
    rho: npt.ArrayLike,
    hamiltonian: npt.ArrayLike,
    t: float,
    *,
    precision: str = "float32",
) -> ComplexArray:
    """Return U ρ U† with U = e^{−iHt}, computed by MLX in complex64 (or float16 products).

    Parameters
    ----------
    rho, hamiltonian, t
        As in :func:`evolve_reference`.
    precision : {"float32", "float16"}
        ``"float16"`` does the products U·ρ·U† on 16-bit parts (the downgrade drill).

    Examples
    --------
    >>> rho = np.array([[[0.5, 0.5], [0.5, 0.5]]])
    >>> out = evolve_mlx(rho, np.diag([0.0, np.pi]), 1.0)
    >>> bool(np.allclose(out, evolve_reference(rho, np.diag([0.0, np.pi]), 1.0), atol=1e-6))
    True
    """
    if precision not in QUANTUM_PRECISIONS:
        raise ValueError(f"precision must be one of {QUANTUM_PRECISIONS}, got {precision!r}")
    r, h = _check_inputs(rho, hamiltonian, t)
    rm = mx.array(np.asarray(r, dtype=np.complex64))
    hm = mx.array(np.asarray(h, dtype=np.complex64))
    # Step 1: eigendecomposition H = V·diag(λ)·V† (LAPACK on the CPU stream).
    lam, vec = mx.linalg.eigh(hm, stream=mx.cpu)
    # Step 1b: MLX's complex64 eigenvectors are orthonormal only to ≈ 1e-6 (LAPACK's to
    # ≈ 1e-7), which breaks trace preservation; one Newton–Schulz step V ← V·(3I − V†V)/2
    # squares that error away.
    eye = mx.eye(vec.shape[-1], dtype=mx.complex64)
    vec = vec @ (1.5 * eye - 0.5 * (_dagger_mx(vec) @ vec))
    # Step 2: U = V·diag(e^{−iλt})·V†, the phases as cos − i·sin of λt.
    angle = lam * float(t)
    phase = mx.cos(angle) - 1j * mx.sin(angle)
    u = (vec * mx.expand_dims(phase, -2)) @ _dagger_mx(vec)
    # Step 3: ρ' = U ρ U†, in complex64 or on float16 parts.
    if precision == "float16":
        out = _matmul16(_matmul16(u, rm), _dagger_mx(u))
    else:
        out = u @ rm @ _dagger_mx(u)
    mx.eval(out)
    return np.array(out)


# ---------------------------------------------------------------- random states


def random_density_matrices(
    rng: np.random.Generator, batch: int, n: int, *, rank: int | None = None
) -> ComplexArray:
    """Return ``batch`` random density matrices ρ = A·A†/tr(A·A†), A complex Ginibre (n, rank).

    >>> rho = random_density_matrices(np.random.default_rng(0), 2, 3)
    >>> np.round(np.trace(rho, axis1=1, axis2=2).real, 12).tolist()
    [1.0, 1.0]
    """
    k = n if rank is None else rank
    a = rng.standard_normal((batch, n, k)) + 1j * rng.standard_normal((batch, n, k))
    rho = a @ _dagger(a)
    rho /= np.trace(rho, axis1=1, axis2=2)[:, None, None]
    return np.asarray((rho + _dagger(rho)) / 2, dtype=np.complex128)


def random_hamiltonians(rng: np.random.Generator, batch: int, n: int) -> ComplexArray:
    """Return ``batch`` random Hermitian matrices (X + X†)/2, X complex Gaussian.

    >>> h = random_hamiltonians(np.random.default_rng(0), 2, 3)
    >>> bool(np.allclose(h, np.conj(np.swapaxes(h, -1, -2))))
    True
    """
    x = rng.standard_normal((batch, n, n)) + 1j * rng.standard_normal((batch, n, n))
    return np.asarray((x + _dagger(x)) / 2, dtype=np.complex128)


# ---------------------------------------------------------------- measurements


def trace_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Return ½‖a − b‖₁ per state (the sum of |eigenvalues| of the Hermitian difference).

    >>> trace_distance(np.diag([1.0, 0.0])[None], np.diag([0.0, 1.0])[None]).tolist()
    [1.0]
    """
    diff = np.asarray(a, dtype=np.complex128) - np.asarray(b, dtype=np.complex128)
    diff = (diff + _dagger(diff)) / 2
    return np.asarray(0.5 * np.abs(np.linalg.eigvalsh(diff)).sum(axis=-1), dtype=np.float64)


def state_deviation(rho: npt.ArrayLike, rho_ref: npt.ArrayLike) -> float:
    """Return the quantum state deviation: max over the batch of the trace distance."""
    return float(np.max(trace_distance(rho, rho_ref)))


def trace_error(rho: npt.ArrayLike) -> float:
    """Return max |tr ρ − 1| over the batch.

    >>> trace_error(np.eye(2)[None] / 2)
    0.0
    """
    traces = np.trace(np.asarray(rho, dtype=np.complex128), axis1=-2, axis2=-1)
    return float(np.max(np.abs(traces - 1)))


def hermiticity_error(rho: npt.ArrayLike) -> float:
    """Return max |ρ − ρ†| over all entries of the batch."""
    r = np.asarray(rho, dtype=np.complex128)
    return float(np.max(np.abs(r - _dagger(r))))


def min_eigenvalue(rho: npt.ArrayLike) -> float:
    """Return the smallest eigenvalue over the batch (of the Hermitian part), in float64."""
    r = np.asarray(rho, dtype=np.complex128)
    return float(np.min(np.linalg.eigvalsh((r + _dagger(r)) / 2)))


def purity(rho: npt.ArrayLike) -> FloatArray:
    """Return tr ρ² per state (1 for pure states, 1/n for the maximally mixed one).

    >>> purity(np.eye(2)[None] / 2).tolist()
    [0.5]
    """
    r = np.asarray(rho, dtype=np.complex128)
    # tr(ρ²) = Σᵢⱼ ρᵢⱼ ρⱼᵢ = Σᵢⱼ |ρᵢⱼ|² for Hermitian ρ.
    return np.asarray(np.einsum("bij,bji->b", r, r).real, dtype=np.float64)


def purity_change(before: npt.ArrayLike, after: npt.ArrayLike) -> float:
    """Return max |tr ρ'² − tr ρ²| over the batch."""
    return float(np.max(np.abs(purity(after) - purity(before))))


def l1_coherence(rho: npt.ArrayLike) -> FloatArray:
    """Return C(ρ) = Σ_{i≠j} |ρᵢⱼ| per state.

    >>> l1_coherence(np.full((1, 2, 2), 0.5)).tolist()
    [1.0]
    """
    r = np.abs(np.asarray(rho, dtype=np.complex128))
    return np.asarray(r.sum(axis=(-2, -1)) - np.trace(r, axis1=-2, axis2=-1), dtype=np.float64)


# ---------------------------------------------------------------- the registered kernel


@dataclass(frozen=True, slots=True)
class QuantumInputs:
    """Inputs of the ``quantum`` kernel: states (B, n, n), one Hamiltonian per state, a time."""

    rho: ComplexArray
    hamiltonian: ComplexArray
    t: float


def make_inputs(
    rng: np.random.Generator, rows: int, profile: Profile, *, n: int = 16, t: float = 1.0
) -> QuantumInputs:
    """Return ``rows`` random states of size ``n`` with random Hamiltonians, complex128.

    >>> from kernels.profile import canonical_profile
    >>> make_inputs(np.random.default_rng(0), 3, canonical_profile(), n=4).rho.shape
    (3, 4, 4)
    """
    del profile  # the inputs do not depend on the profile
    return QuantumInputs(
        rho=random_density_matrices(rng, rows, n),
        hamiltonian=random_hamiltonians(rng, rows, n),
        t=t,
    )


def run_mlx(inputs: QuantumInputs, profile: Profile) -> ComplexArray:
    """Evolve the inputs with MLX at the profile's ``quantum_precision``, honouring drills."""
    _drill.enter_drill(profile)
    out: ComplexArray = np.zeros(0, dtype=np.complex64)
    for _ in range(_drill.repetitions(profile)):
        out = evolve_mlx(
            inputs.rho, inputs.hamiltonian, inputs.t, precision=profile.quantum_precision
        )
    return out


def run_reference(inputs: QuantumInputs, profile: Profile, dtype: npt.DTypeLike) -> ComplexArray:
    """Evolve the inputs with NumPy; ``dtype`` float32/float64 maps to complex64/complex128."""
    del profile
    complex_dtype = np.result_type(np.dtype(dtype), np.complex64)
    return evolve_reference(inputs.rho, inputs.hamiltonian, inputs.t, complex_dtype)


def max_error(mlx_out: npt.ArrayLike, ref64_out: npt.ArrayLike) -> float:
    """Return the quantum state deviation (max trace distance) of an output to the oracle."""
    return state_deviation(mlx_out, ref64_out)


def coherence_measurements(
    profile: Profile, rng: np.random.Generator, *, batch: int = 8, n: int = 16, t: float = 1.0
) -> dict[str, float]:
    """Return the monthly tier's measurements of one seeded batch, as plain floats.

    Keys: ``state_deviation`` (trace distance to float64), ``trace_error``,
    ``hermiticity_error``, ``min_eigenvalue`` (MLX output),
    ``reference_min_eigenvalue`` (float64 oracle output), ``purity_change``,
    ``l1_coherence`` (mean over the batch, MLX) and ``l1_coherence_error``
    (max |C_mlx − C_float64|).

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> m = coherence_measurements(canonical_profile(), np.random.default_rng(0))
    >>> m["state_deviation"] < 1e-5, m["trace_error"] < 1e-6
    (True, True)
    """
    inputs = make_inputs(rng, batch, profile, n=n, t=t)
    out = run_mlx(inputs, profile)
    ref = evolve_reference(inputs.rho, inputs.hamiltonian, t)
    return {
        "state_deviation": state_deviation(out, ref),
        "trace_error": trace_error(out),
        "hermiticity_error": hermiticity_error(out),
        "min_eigenvalue": min_eigenvalue(out),
        "reference_min_eigenvalue": min_eigenvalue(ref),
        "purity_change": purity_change(inputs.rho, out),
        "l1_coherence": float(np.mean(l1_coherence(out))),
        "l1_coherence_error": float(np.max(np.abs(l1_coherence(out) - l1_coherence(ref)))),
    }


def coherence_invariant(key: str) -> Callable[[np.random.Generator, Profile], float]:
    """Return an invariant ``(rng, profile) -> float`` reading one key of the measurements.

    >>> from kernels.profile import canonical_profile
    >>> coherence_invariant("trace_error")(np.random.default_rng(0), canonical_profile()) < 1e-6
    True
    """

    def invariant(rng: np.random.Generator, profile: Profile) -> float:
        return coherence_measurements(profile, rng)[key]

    invariant.__doc__ = f"Return ``{key}`` of :func:`coherence_measurements` on a seeded batch."
    invariant.__name__ = key
    return invariant
