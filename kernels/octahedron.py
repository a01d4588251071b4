"""Octahedron activation: a fluidity wave, then per-quarter projection onto L1 balls.

For ``x`` of shape (B, D), D divisible by 4, the features form four contiguous
quarters q = 0..3. Per row and quarter (KERNELS.md §1):

1. wave: ``z_q = x_q + a·sin(ω·x_q + φ_q) + b_q``;
2. projection onto the cross-polytope of radius ``r_q``:
   ``y_q = argmin_{‖y‖₁ ≤ r_q} ‖y − z_q‖₂``.

The float64 reference (:func:`activate_reference`) uses the sort-based
algorithm of Duchi et al. (2008). The MLX kernel (:func:`activate_mlx`) finds
the same threshold θ without sorting (``mx.sort`` is slow on MLX's CPU backend):
Newton's method on ``f(θ) = Σ max(|z| − θ, 0) − r`` (Michelot's algorithm).
Started below θ*, its iterates increase monotonically and reach the exact θ as
soon as the set ``{|z| > θ}`` stops changing. The start comes from a small
subset problem: the threshold of any subset of |z| is a lower bound of θ*, and
the maxima of 128 strided groups of features usually hold the whole active set,
so a few cheap steps on them, then one step on all features, settle ~97 % of
rows at batch 1024, D = 4096. All this runs in one graph; the remaining
(row, quarter) pairs are gathered and continue in a loop until settled, so the
result is exact, never truncated.
The sine is a range-reduced odd polynomial (``mx.sin`` is scalar on that
backend), within 3e-7 absolute of float64 ``sin`` for ``|ω·x + φ| ≤ 1e4``; the
MLX kernel rejects inputs with ``|ω·x + φ| > WAVE_ARGUMENT_LIMIT`` (1e6).

Execution modes (``Profile.vectorization``): ``aggressive`` runs the whole
function under ``mx.compile`` through a compiled-function cache keyed by
shape and dtype (:func:`cache_stats`), ``balanced`` runs plain MLX,
``conservative`` runs plain MLX over chunks of ``Profile.chunk_rows`` rows.

Measurements for the geometry checks, each returning a float (0 or tiny when
healthy): :func:`geometric_ratio_drift`, :func:`phase_drift`,
:func:`containment_violation`, :func:`idempotence_error`,
:func:`symmetry_error`, :func:`nonexpansiveness_violation`,
:func:`reference_error`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
import numpy.typing as npt

from kernels import _drill
from kernels._compiled import CompiledCache
from kernels.profile import CANONICAL_RATIOS, Profile

__all__ = [
    "activate_mlx",
    "activate_reference",
    "cache_stats",
    "containment_violation",
    "geometric_ratio_drift",
    "idempotence_error",
    "make_inputs",
    "nonexpansiveness_violation",
    "phase_drift",
    "project_mlx",
    "project_reference",
    "reference_error",
    "reset_cache_stats",
    "sin_poly",
    "symmetry_error",
    "wave_mlx",
    "wave_reference",
]

FloatArray = npt.NDArray[np.floating[Any]]

#: Newton steps on the group maxima (cheap), then on all features, inside one graph.
SUBSET_STEPS = 5
NEWTON_STEPS = 1
_CACHE = CompiledCache()
# π split for Cody–Waite range reduction: _PI_A has 8 significant bits, so k·_PI_A is exact.
_PI_A = 3.140625
_PI_B = float(np.float32(math.pi - 3.140625))
# Adding and subtracting 1.5·2²³ rounds a float32 of magnitude < 2²² to an integer.
_ROUNDER = 1.5 * 2.0**23
#: The MLX wave rejects inputs with |ω·x + φ| above this (float32 ulp there is 0.06 rad).
WAVE_ARGUMENT_LIMIT = 1e6
# Near-minimax odd polynomial for sin on [−π/2, π/2] (c₀·r + c₁·r³ + … + c₄·r⁹), error 3.4e-9.
_SIN_COEFFS = (
    0.9999999765893766,
    -0.16666647634316226,
    0.00833289981789989,
    -0.00019800897428551802,
    2.590487827028749e-06,
)


def cache_stats() -> tuple[int, int]:
    """Return (hits, misses) of the compiled-function cache of aggressive mode."""
    return _CACHE.stats()


def reset_cache_stats() -> None:
    """Zero the compiled-function cache counters."""
    _CACHE.reset_stats()


def _check_x(x: Any, name: str = "x") -> FloatArray:
    """Validate a (B, D) finite real array with D divisible by 4 and return it."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (B, D), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must have a real floating dtype, got {arr.dtype}")
    if arr.shape[1] == 0 or arr.shape[1] % 4:
        raise ValueError(f"{name} must have D divisible by 4 and D > 0, got D = {arr.shape[1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or Inf)")
    return arr


def _quarters(arr: Any) -> Any:
    """Reshape (B, D) to (B, 4, D/4): one row per quarter."""
    return arr.reshape(arr.shape[0], 4, arr.shape[1] // 4)


# ---------------------------------------------------------------- reference (NumPy, any dtype)


def wave_reference(
    x: npt.ArrayLike, profile: Profile, dtype: npt.DTypeLike = np.float64
) -> FloatArray:
    """Return the wave stage ``x + a·sin(ω·x + φ_q) + b_q`` computed in ``dtype``.

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> z = wave_reference(np.zeros((1, 4)), canonical_profile())
    >>> np.round(z, 4).tolist()
    [[0.0, 0.0707, 0.1, 0.0707]]
    """
    x3 = _quarters(_check_x(x).astype(dtype))
    phases = np.asarray(profile.phases, dtype=dtype)[:, None]
    biases = np.asarray(profile.biases, dtype=dtype)[:, None]
    a, w = np.asarray(profile.amplitude, dtype=dtype), np.asarray(profile.frequency, dtype=dtype)
    z = x3 + a * np.sin(w * x3 + phases) + biases
    return np.asarray(z.reshape(x3.shape[0], -1), dtype=dtype)


def project_reference(
    z: npt.ArrayLike, radii: npt.ArrayLike, dtype: npt.DTypeLike = np.float64
) -> FloatArray:
    """Project each quarter of ``z`` onto the L1 ball of its radius (Duchi et al., sorted).

    Parameters
    ----------
    z : array_like, shape (B, D)
        Points to project; D divisible by 4.
    radii : array_like, shape (4,)
        Positive radius of each quarter's ball.
    dtype : dtype
        Computation dtype: float64 is the oracle, float32 the NumPy peer.

    Examples
    --------
    >>> project_reference([[3.0, 1.0, 0.0, 0.0]], [1, 1, 1, 1]).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    >>> project_reference([[3.0, 1.0, 0.0, 0.0, 0, 0, 0, 0]], [1, 1, 1, 1]).tolist()
    [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """
    z3 = _quarters(_check_x(z, "z").astype(dtype))
    r = _check_radii(radii).astype(dtype)[:, None]
    n = z3.shape[-1]
    a = np.abs(z3)
    # Step 1: u = |z| sorted descending and its running sums c.
    u = -np.sort(-a, axis=-1)
    c = np.cumsum(u, axis=-1)
    # Step 2: ρ = the largest j with u_j − (c_j − r)/j > 0 (1-based j).
    j = np.arange(1, n + 1, dtype=dtype)
    positive = u - (c - r) / j > 0
    rho = n - np.argmax(positive[..., ::-1], axis=-1)
    # Step 3: θ = (c_ρ − r)/ρ.
    c_rho = np.take_along_axis(c, (rho - 1)[..., None], axis=-1)
    theta = (c_rho - r) / rho[..., None].astype(dtype)
    # Step 4: soft-threshold; quarters already inside their ball are returned unchanged.
    y = np.sign(z3) * np.maximum(a - theta, 0)
    inside = a.sum(axis=-1, keepdims=True) <= r
    y = np.where(inside, z3, y)
    return np.asarray(y.reshape(z3.shape[0], -1), dtype=dtype)


def activate_reference(
    x: npt.ArrayLike, profile: Profile, dtype: npt.DTypeLike = np.float64
) -> FloatArray:
    """Return the octahedron activation of ``x`` computed in NumPy in ``dtype``.

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> y = activate_reference(np.full((2, 8), 5.0), canonical_profile())
    >>> np.abs(y).reshape(2, 4, 2).sum(axis=-1).round(6).tolist()[0]
    [1.0, 1.125, 1.35, 1.51875]
    """
    return project_reference(wave_reference(x, profile, dtype), profile.radii, dtype)


def _check_radii(radii: npt.ArrayLike) -> FloatArray:
    """Validate four positive finite radii."""
    r = np.asarray(radii, dtype=np.float64)
    if r.shape != (4,):
        raise ValueError(f"radii must have shape (4,), got {r.shape}")
    if not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"radii must be positive and finite, got {r.tolist()}")
    return r


# ---------------------------------------------------------------- MLX graphs


def sin_poly(u: mx.array) -> mx.array:
    """Return sin(u) in float32 by range reduction to [−π/2, π/2] and an odd polynomial.

    Within 3e-7 absolute of float64 ``sin`` for ``|u| ≤ 1e4`` and usable up to
    ``|u| ≤ WAVE_ARGUMENT_LIMIT``. Written for MLX's fusion (at most 11 ops deep
    per fused kernel on the CPU backend): no ``round``/``floor`` (scalar calls
    there), the sign flip is one XOR of the sign bit, the polynomial uses Estrin's
    scheme.

    Examples
    --------
    >>> u = np.linspace(-50, 50, 10001, dtype=np.float32)
    >>> got = np.array(sin_poly(mx.array(u)))
    >>> bool(np.max(np.abs(got - np.sin(u.astype(np.float64)))) < 2e-7)
    True
    """
    # Step 1: k = the nearest integer to u/π, by adding and removing 1.5·2²³ (the
    # float32 rounding does the work); m keeps k's parity in its lowest mantissa bit.
    m = u * (1 / math.pi) + _ROUNDER
    k = m - _ROUNDER
    # Step 2: r = u − k·π in two parts (k·_PI_A is exact for |k| < 2¹⁵).
    r = (u - k * _PI_A) - k * _PI_B
    # Step 3: sin(r) by a near-minimax odd polynomial, Estrin's scheme in r².
    c = _SIN_COEFFS
    r2 = r * r
    r4 = r2 * r2
    s = r * ((c[0] + c[1] * r2) + r4 * ((c[2] + c[3] * r2) + c[4] * r4))
    # Step 4: sin(u) = (−1)^k · sin(r): move k's parity bit into the sign bit.
    sign = m.view(mx.int32) << 31
    out: mx.array = (s.view(mx.int32) ^ sign).view(mx.float32)
    return out


def _wave_graph(x: mx.array, params: mx.array) -> mx.array:
    """MLX wave stage on (B, D); ``params`` is (4, 4): phase, bias, amplitude, frequency."""
    x3 = x.reshape(x.shape[0], 4, x.shape[1] // 4)
    phase, bias = params[:, 0:1], params[:, 1:2]
    amp, freq = params[:, 2:3], params[:, 3:4]
    z = x3 + amp * sin_poly(freq * x3 + phase) + bias
    return z.reshape(x.shape)


def _theta_steps(a: mx.array, r: mx.array, theta: mx.array, steps: int) -> tuple[Any, Any]:
    """Run ``steps`` ≥ 1 Newton/Michelot steps on θ, then count the active set once more.

    Returns θ and, per row, whether ``{|z| > θ}`` is the same before and after the
    last step; then θ is the exact threshold (it was computed from that very set).
    """
    count: Any = None
    for _ in range(steps):
        count = mx.sum(a > theta, axis=-1, keepdims=True)
        excess = mx.sum(mx.maximum(a - theta, 0), axis=-1, keepdims=True)
        # θ ← θ + (Σ max(|z| − θ, 0) − r) / #{|z| > θ}: Michelot's (Σ_{|z|>θ} |z| − r)/#,
        # written as a correction so that float32 rounding scales with r, not with ‖z‖₁.
        theta = mx.maximum(theta, theta + (excess - r) / mx.maximum(count, 1))
    return theta, mx.sum(a > theta, axis=-1, keepdims=True) == count


def _groups(n: int) -> int:
    """Return the number of strided groups whose maxima form the subset problem (≤ 128)."""
    return next(g for g in (128, 64, 32, 16, 8, 4, 2, 1) if n % g == 0)


def _project_graph(z: mx.array, r: mx.array) -> tuple[mx.array, mx.array, mx.array]:
    """MLX projection on (B, D) with radii (4, 1); returns y, θ and the converged flags."""
    z3 = z.reshape(z.shape[0], 4, z.shape[1] // 4)
    n = z3.shape[-1]
    a = mx.abs(z3)
    # Step 1: ‖z‖₁, and the maxima of up to 128 strided groups of features.
    l1 = mx.sum(a, axis=-1, keepdims=True)
    groups = _groups(n)
    peaks = mx.max(a.reshape(*a.shape[:-1], n // groups, groups), axis=-2)
    # Step 2: θ* = max_j (c_j − r)/j over the sorted prefix sums, so the threshold of
    # any subset (here the group maxima) is a lower bound; Newton steps on the small
    # subset problem, started from max|z| − r, stay below it and come close to θ*.
    top = mx.max(peaks, axis=-1, keepdims=True)
    theta = mx.maximum(mx.maximum((l1 - r) / n, top - r), 0)
    theta, _ = _theta_steps(peaks, r, theta, SUBSET_STEPS)
    # Step 3: Newton steps on all of |z| reach the exact θ once the active set settles.
    theta, settled = _theta_steps(a, r, theta, NEWTON_STEPS)
    # Step 4: soft-threshold, leaving quarters inside their ball unchanged.
    inside = l1 <= r
    y = mx.where(inside, z3, mx.sign(z3) * mx.maximum(a - theta, 0))
    return y.reshape(z.shape), theta, mx.logical_or(settled, inside)


def _finish(y: mx.array, z: mx.array, r: mx.array, theta: mx.array, settled: mx.array) -> mx.array:
    """Continue Newton steps on the (row, quarter) pairs that had not settled, in place in y."""
    quarters = z.shape[0] * 4
    n = z.shape[1] // 4
    todo = np.flatnonzero(~np.array(settled).reshape(quarters))
    if todo.size == 0:
        return y
    index = mx.array(todo)
    z_sub = z.reshape(quarters, n)[index]
    a = mx.abs(z_sub)
    r_sub = r.reshape(4)[mx.array(todo % 4)].reshape(-1, 1)
    theta_sub = theta.reshape(quarters, 1)[index]
    # Michelot's iteration reaches the exact θ in at most n steps; usually one or two.
    done = mx.zeros((todo.size, 1), dtype=mx.bool_)
    while not bool(mx.all(done).item()):
        theta_sub, step_done = _theta_steps(a, r_sub, theta_sub, 1)
        done = mx.logical_or(done, step_done)
        mx.eval(theta_sub, done)
    out = y.reshape(quarters, n)
    out[index] = mx.sign(z_sub) * mx.maximum(a - theta_sub, 0)
    return out.reshape(y.shape)


def _activate_graph(x: mx.array, params: mx.array, r: mx.array) -> tuple[Any, Any, Any, Any]:
    """Wave then projection; returns y, z, θ and the converged flags."""
    z = _wave_graph(x, params)
    y, theta, settled = _project_graph(z, r)
    return y, z, theta, settled


def _params(profile: Profile) -> tuple[mx.array, mx.array]:
    """Return the profile's wave parameters (4, 4) and radii (4, 1) as float32 MLX arrays."""
    table = np.stack(
        [
            np.asarray(profile.phases),
            np.asarray(profile.biases),
            np.full(4, profile.amplitude),
            np.full(4, profile.frequency),
        ],
        axis=1,
    ).astype(np.float32)
    radii = np.asarray(profile.radii, dtype=np.float32)[:, None]
    return mx.array(table), mx.array(radii)


def _run(
    name: str,
    graph: Callable[..., Any],
    x: mx.array,
    args: tuple[mx.array, ...],
    profile: Profile,
    *,
    chunked: bool,
) -> tuple[Any, ...]:
    """Run ``graph`` on ``x`` in the profile's execution mode and evaluate it."""
    mode = profile.vectorization
    fn: Callable[..., Any] = graph
    if mode == "aggressive":
        signature = (tuple(x.shape), str(x.dtype))
        fn = _CACHE.get(name, graph, signature, bypass=_drill.cache_thrash(profile))
    if mode == "conservative" and chunked and x.shape[0] > profile.chunk_rows:
        parts = []
        for start in range(0, x.shape[0], profile.chunk_rows):
            out = fn(x[start : start + profile.chunk_rows], *args)
            mx.eval(out)
            parts.append(out)
        return tuple(mx.concatenate([p[i] for p in parts], axis=0) for i in range(len(parts[0])))
    out = fn(x, *args)
    out = out if isinstance(out, tuple) else (out,)
    mx.eval(out)
    return tuple(out)


def _check_wave_argument(x: FloatArray, profile: Profile) -> None:
    """Reject inputs whose wave argument |ω·x + φ| exceeds ``WAVE_ARGUMENT_LIMIT``."""
    largest = float(np.max(np.abs(x), initial=0.0)) * abs(profile.frequency)
    if largest + max(abs(p) for p in profile.phases) > WAVE_ARGUMENT_LIMIT:
        raise ValueError(
            f"x: the wave argument |ω·x + φ| must be <= {WAVE_ARGUMENT_LIMIT:g} for the "
            f"float32 MLX kernel, got up to {largest:.3g}"
        )


def wave_mlx(x: npt.ArrayLike, profile: Profile) -> FloatArray:
    """Return the MLX wave stage of ``x`` (float32), in the profile's execution mode.

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> p = canonical_profile().replace(vectorization="balanced")
    >>> [round(float(v), 4) for v in wave_mlx(np.zeros((1, 4)), p)[0]]
    [0.0, 0.0707, 0.1, 0.0707]
    """
    x_np = np.asarray(_check_x(x), dtype=np.float32)
    _check_wave_argument(x_np, profile)
    xm = mx.array(x_np)
    params, _ = _params(profile)
    (z,) = _run("wave", _wave_graph, xm, (params,), profile, chunked=True)
    return np.array(z)


def project_mlx(z: npt.ArrayLike, profile: Profile) -> FloatArray:
    """Return the MLX projection of each quarter of ``z`` onto its ball (float32, exact θ).

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> p = canonical_profile().replace(radii=(1, 1, 1, 1), vectorization="balanced")
    >>> project_mlx([[3.0, 1.0, 0.0, 0.0]], p).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    """
    zm = mx.array(np.asarray(_check_x(z, "z"), dtype=np.float32))
    _, r = _params(profile)
    y, theta, settled = _run("project", _project_graph, zm, (r,), profile, chunked=True)
    y = _finish(y, zm, r, theta, settled)
    mx.eval(y)
    return np.array(y)


def activate_mlx(x: npt.ArrayLike, profile: Profile) -> FloatArray:
    """Return the octahedron activation of ``x`` computed by MLX in float32.

    Honours the profile's execution mode and its drill knobs (crash, hang,
    slow_factor repetitions, cache_thrash, batch_scale). In conservative mode the
    rows are streamed in chunks of ``Profile.chunk_rows``: each chunk's MLX input is
    made from NumPy and evaluated before the next, so MLX's peak memory is that of
    one chunk, for any batch (the memory_bloat drill's scaled batch included).

    Parameters
    ----------
    x : array_like, shape (B, D)
        Finite real input, D divisible by 4; computed in float32.
    profile : Profile
        Radii, wave parameters and execution mode.

    Returns
    -------
    ndarray, shape (B, D), float32

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> x = np.random.default_rng(0).standard_normal((4, 16))
    >>> p = canonical_profile()
    >>> bool(np.allclose(activate_mlx(x, p), activate_reference(x, p), atol=1e-5))
    True
    """
    _drill.enter_drill(profile)
    x_np = np.asarray(_check_x(x), dtype=np.float32)
    _check_wave_argument(x_np, profile)
    rows = x_np.shape[0]
    # The batch_scale drill repeats the rows (row i of the bloated batch is x[i mod B]); only
    # the first B rows of the result are returned.
    total = rows * _drill.batch_scale(profile)
    step = profile.chunk_rows if profile.vectorization == "conservative" else total
    params, r = _params(profile)
    out = np.empty_like(x_np)
    for _ in range(_drill.repetitions(profile)):
        for start in range(0, total, max(step, 1)):
            stop = min(start + step, total)
            block = x_np[start:stop] if stop <= rows else x_np[np.arange(start, stop) % rows]
            y = _activate_block(block, params, r, profile)
            if start < rows:
                out[start : min(stop, rows)] = y[: min(stop, rows) - start]
    return out


def _activate_block(
    x_np: FloatArray, params: mx.array, r: mx.array, profile: Profile
) -> FloatArray:
    """Activate one block of rows: its MLX arrays live only while this block is computed.

    ``activate_mlx`` streams the batch through here, one block in conservative mode per
    ``chunk_rows`` rows (the whole batch in the other modes), so MLX's peak memory is
    bounded by one block whatever the batch size.
    """
    xm = mx.array(x_np)
    y, z, theta, settled = _run(
        "activate", _activate_graph, xm, (params, r), profile, chunked=False
    )
    y = _finish(y, z, r, theta, settled)
    mx.eval(y)
    return np.array(y)


def make_inputs(
    rng: np.random.Generator, rows: int, profile: Profile, *, features: int = 1024
) -> FloatArray:
    """Return seeded float32 inputs of shape (rows, features), standard normal.

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> make_inputs(np.random.default_rng(0), 3, canonical_profile(), features=8).shape
    (3, 8)
    """
    del profile  # the inputs do not depend on the profile
    return rng.standard_normal((rows, features)).astype(np.float32)


# ---------------------------------------------------------------- measurements


def _quarter_l1(y: npt.ArrayLike) -> FloatArray:
    """Return ‖y_q‖₁ per row and quarter, in float64, shape (B, 4)."""
    return np.asarray(np.abs(_quarters(np.asarray(y, dtype=np.float64))).sum(axis=-1))


def geometric_ratio_drift(
    profile: Profile, rng: np.random.Generator, *, rows: int = 64, features: int = 1024
) -> float:
    """Return max |‖y_{q+1}‖₁/‖y_q‖₁ ÷ canonical ratio − 1| over rows outside every ball.

    The canonical ratios are the fixed :data:`kernels.profile.CANONICAL_RATIOS`
    (9/8, 6/5, 9/8), never the profile's: a profile whose radii drifted is measured
    against KERNELS.md, whatever else it carries. The activation runs through the MLX
    kernel; rows where some quarter lies inside its ball are skipped (their ratio is
    not fixed by the radii).

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> p = canonical_profile()
    >>> geometric_ratio_drift(p, np.random.default_rng(0), rows=8, features=64) < 1e-5
    True
    >>> bad = p.replace(radii=(1.0, 1.125 * 1.01, 1.35, 1.51875))
    >>> round(geometric_ratio_drift(bad, np.random.default_rng(0), rows=8, features=64), 4)
    0.01
    """
    x = make_inputs(rng, rows, profile, features=features)
    z_l1 = _quarter_l1(wave_reference(x, profile))
    y_l1 = _quarter_l1(activate_mlx(x, profile))
    outside = np.all(z_l1 > np.asarray(profile.radii), axis=1)
    if not np.any(outside):
        raise ValueError("no row has every quarter outside its ball; use more features")
    measured = y_l1[outside, 1:] / y_l1[outside, :-1]
    return float(np.max(np.abs(measured / np.asarray(CANONICAL_RATIOS) - 1)))


def phase_drift(profile: Profile) -> float:
    """Return the largest |φ_q − q·π/4| (radians, wrapped) measured on the MLX wave stage.

    Probing at x = ±h with ω·h = π/4 gives ``z(h) + z(−h) − 2b = 2a·sin φ·cos(ωh)``
    and ``z(h) − z(−h) − 2h = 2a·cos φ·sin(ωh)``, with equal cos and sin, so
    ``φ = atan2`` of the two. The profile's own biases are subtracted.

    Examples
    --------
    >>> from kernels.profile import canonical_profile
    >>> phase_drift(canonical_profile()) < 1e-5
    True
    >>> bad = canonical_profile().replace(phases=(0.0, 0.8, math.pi / 2, 3 * math.pi / 4))
    >>> round(phase_drift(bad), 4)
    0.0146
    """
    if profile.amplitude <= 0 or profile.frequency == 0:
        raise ValueError("phase_drift needs amplitude > 0 and frequency != 0")
    h = math.pi / (4 * abs(profile.frequency))
    x = np.repeat(np.array([[h], [-h]], dtype=np.float32), 8, axis=1)
    z = _quarters(wave_mlx(x, profile).astype(np.float64)).mean(axis=-1)
    biases = np.asarray(profile.biases)
    plus = z[0] + z[1] - 2 * biases
    minus = z[0] - z[1] - 2 * float(np.float32(h))
    if profile.frequency < 0:
        minus = -minus
    phi = np.arctan2(plus, minus)
    target = np.arange(4) * math.pi / 4
    wrapped = np.angle(np.exp(1j * (phi - target)))
    return float(np.max(np.abs(wrapped)))


def _random_outside(
    rng: np.random.Generator, rows: int, features: int, profile: Profile
) -> FloatArray:
    """Return (rows, features) float32 points, scaled so most quarters lie outside their ball."""
    return (rng.standard_normal((rows, features)) * 2).astype(np.float32)


def containment_violation(
    profile: Profile, rng: np.random.Generator, *, rows: int = 64, features: int = 256
) -> float:
    """Return max over quarters of ‖y_q‖₁/r_q − 1 (≤ 1e-6 when healthy; negative inside).

    >>> from kernels.profile import canonical_profile
    >>> containment_violation(canonical_profile(), np.random.default_rng(0), rows=4) <= 1e-6
    True
    """
    y = activate_mlx(make_inputs(rng, rows, profile, features=features), profile)
    return float(np.max(_quarter_l1(y) / np.asarray(profile.radii) - 1))


def idempotence_error(
    profile: Profile, rng: np.random.Generator, *, rows: int = 64, features: int = 256
) -> float:
    """Return max |P(P(z)) − P(z)| / max(1, max|P(z)|) for the MLX projection (≤ 1e-6).

    >>> from kernels.profile import canonical_profile
    >>> idempotence_error(canonical_profile(), np.random.default_rng(0), rows=4) <= 1e-6
    True
    """
    z = _random_outside(rng, rows, features, profile)
    y = project_mlx(z, profile)
    yy = project_mlx(y, profile)
    return float(np.max(np.abs(yy - y)) / max(1.0, float(np.max(np.abs(y)))))


def signed_permutation(
    rng: np.random.Generator, features: int
) -> tuple[npt.NDArray[np.intp], FloatArray]:
    """Return (index, signs) of a random signed permutation acting inside each quarter.

    Applying it: ``S·z = z[:, index] * signs``.
    """
    n = features // 4
    index = np.concatenate([q * n + rng.permutation(n) for q in range(4)])
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=features)
    return index, signs


def symmetry_error(
    profile: Profile, rng: np.random.Generator, *, rows: int = 64, features: int = 256
) -> float:
    """Return max |P(S·z) − S·P(z)| for a random signed permutation S (≤ 1e-6).

    >>> from kernels.profile import canonical_profile
    >>> symmetry_error(canonical_profile(), np.random.default_rng(0), rows=4) <= 1e-6
    True
    """
    z = _random_outside(rng, rows, features, profile)
    index, signs = signed_permutation(rng, features)
    left = project_mlx(z[:, index] * signs, profile)
    right = project_mlx(z, profile)[:, index] * signs
    return float(np.max(np.abs(left - right)))


def nonexpansiveness_violation(
    profile: Profile, rng: np.random.Generator, *, rows: int = 64, features: int = 256
) -> float:
    """Return max over quarters of ‖P(a) − P(b)‖₂ / ‖a − b‖₂ − 1 (≤ 1e-6 when healthy).

    >>> from kernels.profile import canonical_profile
    >>> nonexpansiveness_violation(canonical_profile(), np.random.default_rng(0), rows=4) <= 1e-6
    True
    """
    a = _random_outside(rng, rows, features, profile)
    b = (a + 0.1 * rng.standard_normal(a.shape)).astype(np.float32)
    pa = _quarters(project_mlx(a, profile).astype(np.float64))
    pb = _quarters(project_mlx(b, profile).astype(np.float64))
    gap = np.linalg.norm(_quarters(a.astype(np.float64) - b), axis=-1)
    return float(np.max(np.linalg.norm(pa - pb, axis=-1) / gap - 1))


def reference_error(
    profile: Profile, rng: np.random.Generator, *, rows: int = 64, features: int = 1024
) -> float:
    """Return max |y_mlx − y_float64| of the whole activation (≤ 1e-5 when healthy).

    >>> from kernels.profile import canonical_profile
    >>> reference_error(canonical_profile(), np.random.default_rng(0), rows=4) <= 1e-5
    True
    """
    x = make_inputs(rng, rows, profile, features=features)
    return float(np.max(np.abs(activate_mlx(x, profile) - activate_reference(x, profile))))
