"""Tests of the octahedron activation: oracle agreement, KERNELS.md invariants, modes, drills."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
import scipy.optimize
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kernels import octahedron as o
from kernels.profile import CANONICAL_RATIOS, Profile, canonical_profile
from tests.helpers import wait_until
from tests.kernels.conftest import Backend
from tests.strategies import arrays_like, profiles, quarter_arrays, radii

PROPERTY = settings(max_examples=100, deadline=None)
CANONICAL = canonical_profile()


def _quarter_l1(y: Any) -> Any:
    """‖y_q‖₁ per row and quarter in float64."""
    y = np.asarray(y, dtype=np.float64)
    return np.abs(y.reshape(y.shape[0], 4, -1)).sum(axis=-1)


def _with_radii(r: tuple[float, ...]) -> Profile:
    """The canonical profile in balanced mode with radii ``r``."""
    return CANONICAL.replace(radii=r, vectorization="balanced")


@PROPERTY
@given(x=quarter_arrays(), profile=profiles())
def test_activation_matches_float64_oracle(backend: Backend, x: Any, profile: Profile) -> None:
    """Each float32 implementation agrees with the float64 oracle within its rounding bound."""
    got = backend.activate(x, profile)
    want = o.activate_reference(x, profile)
    magnitude = float(np.max(np.abs(x), initial=0)) + profile.amplitude + 1
    assert got.shape == x.shape
    assert np.max(np.abs(got - want)) <= backend.rounding(x.shape[1] // 4, magnitude)


@PROPERTY
@given(z=quarter_arrays(), r=radii())
def test_projection_is_contained(backend: Backend, z: Any, r: tuple[float, ...]) -> None:
    """Containment: ‖y_q‖₁ ≤ r_q·(1 + 1e-6) plus the float32 rounding of θ."""
    y = backend.project(z, _with_radii(r))
    # ‖y_q‖₁ = Σ_active (|z| − θ) moves by m·δθ when θ is off by δθ, and m·θ ≤ ‖z_q‖₁, so
    # a θ rounded to a few eps32 of itself, from sums over the quarter, moves it by a few
    # eps32·‖z_q‖₁. MLX rounds θ once per Newton step: 2·eps32·‖z_q‖₁; NumPy's θ comes from
    # a float32 cumsum: 4·eps32·‖z_q‖₁. Measured over 4000 draws: at most 0.46 (MLX) and
    # 1.99 (NumPy) eps32·‖z_q‖₁ beyond r_q·(1 + 1e-6).
    c = 4 if backend.sum_terms else 2
    slack = np.asarray(r) * 1e-6 + c * float(np.finfo(np.float32).eps) * _quarter_l1(z)
    assert np.all(_quarter_l1(y) <= np.asarray(r) + slack)


@PROPERTY
@given(z=quarter_arrays(), r=radii())
@example(z=np.full((1, 44), 64.684845, dtype=np.float32), r=(1.0, 1.0, 1.0, 1.0))
def test_projection_is_idempotent(backend: Backend, z: Any, r: tuple[float, ...]) -> None:
    """Idempotence: projecting y again changes it by at most 1e-6 relative, plus rounding,
    plus the float32 excess of y over its ball that the containment test allows."""
    profile = _with_radii(r)
    y = backend.project(z, profile)
    yy = backend.project(y, profile)
    scale = max(1.0, float(np.max(np.abs(y), initial=0)))
    n = z.shape[1] // 4
    # y may lie outside its ball by the containment slack, c·eps32·‖z_q‖₁ (θ is rounded at
    # the scale of z, not of y); projecting again removes that excess, spread over the
    # m ≥ 1 active entries, so each moves by at most the whole excess. Found by Hypothesis:
    # a constant quarter of 64.7 (‖z_q‖₁ = 712, r = 1) left ‖y_q‖₁ = 1 + 1.1e-4, and the
    # second projection moved all 11 entries by 1.04e-5.
    c = 4 if backend.sum_terms else 2
    excess = c * float(np.finfo(np.float32).eps) * float(np.max(_quarter_l1(z)))
    bound = 1e-6 * scale + backend.rounding(n, float(np.max(r))) + excess
    assert np.max(np.abs(yy - y)) <= bound


@PROPERTY
@given(z=quarter_arrays(), r=radii(), seed=st.integers(0, 2**32 - 1))
def test_projection_has_octahedral_symmetry(
    backend: Backend, z: Any, r: tuple[float, ...], seed: int
) -> None:
    """Symmetry: P(S·z) = S·P(z) for a signed permutation S inside each quarter."""
    profile = _with_radii(r)
    index, signs = o.signed_permutation(np.random.default_rng(seed), z.shape[1])
    left = backend.project(z[:, index] * signs, profile)
    right = backend.project(z, profile)[:, index] * signs
    magnitude = float(np.max(np.abs(z), initial=0))
    assert np.max(np.abs(left - right)) <= backend.rounding(z.shape[1] // 4, magnitude)


@PROPERTY
@given(data=st.data(), r=radii())
def test_projection_is_nonexpansive(backend: Backend, data: st.DataObject, r: Any) -> None:
    """Non-expansiveness: ‖P(a) − P(b)‖₂ ≤ ‖a − b‖₂·(1 + 1e-6) plus rounding."""
    a = data.draw(quarter_arrays())
    b = data.draw(arrays_like(a), label="b")
    profile = _with_radii(r)
    quarters = (a.shape[0], 4, -1)
    pa = backend.project(a, profile).astype(np.float64).reshape(quarters)
    pb = backend.project(b, profile).astype(np.float64).reshape(quarters)
    gap = np.linalg.norm(a.astype(np.float64).reshape(quarters) - b.reshape(quarters), axis=-1)
    n = a.shape[1] // 4
    magnitude = float(max(np.max(np.abs(a)), np.max(np.abs(b))))
    slack = 2 * math.sqrt(n) * backend.rounding(n, magnitude)
    assert np.all(np.linalg.norm(pa - pb, axis=-1) <= gap * (1 + 1e-6) + slack)


@PROPERTY
@given(x=quarter_arrays(elements=st.floats(-3, 3, width=32)))
def test_ratio_preserved_outside_every_ball(backend: Backend, x: Any) -> None:
    """Ratio preservation: rows outside every ball keep ‖y_{q+1}‖₁/‖y_q‖₁ = r_{q+1}/r_q."""
    # 2 ≤ |entries| ≤ 17 keeps |z| ≥ 1.9 after the wave, so every quarter lies outside its
    # ball, and spans the kernels' inputs (standard normal) several times over.
    big = (np.where(x >= 0, 1, -1) * (2 + 5 * np.abs(x))).astype(np.float32)
    profile = CANONICAL.replace(vectorization="balanced")
    l1 = _quarter_l1(backend.activate(big, profile))
    measured = l1[:, 1:] / l1[:, :-1]
    # Each ‖y_q‖₁ = r_q carries a relative error of a few eps32·‖z_q‖₁/r_q (see the
    # containment test); a ratio adds the two. Measured over 4000 draws: at most 1.04 (MLX)
    # and 1.6 (NumPy) eps32·(‖z_q‖₁/r_q + ‖z_{q+1}‖₁/r_{q+1}); 4× that is allowed.
    z_l1 = _quarter_l1(o.wave_reference(big, profile)) / np.asarray(profile.radii)
    tol = 4 * float(np.finfo(np.float32).eps) * (z_l1[:, 1:] + z_l1[:, :-1])
    # The bound stays below geometric_drift's 1e-3 warn threshold: a drift the weekly
    # check warns about fails here.
    assert np.max(tol) < 1e-3
    assert np.all(np.abs(measured / np.asarray(CANONICAL_RATIOS) - 1) <= tol)


@settings(max_examples=25, deadline=None)
@given(
    z=quarter_arrays(max_rows=1, max_quarter=4, elements=st.floats(-5, 5, width=32)),
    r=radii(),
)
def test_projection_matches_scipy_brute_force(z: Any, r: tuple[float, ...]) -> None:
    """Known answer: the float64 projection equals SLSQP's solution of the QP on small cases."""
    y = o.project_reference(z, r)[0]
    n = z.shape[1] // 4
    for q in range(4):
        target = z[0, q * n : (q + 1) * n].astype(np.float64)
        # y = u − v with u, v ≥ 0 and Σ(u + v) ≤ r turns the L1 ball into linear constraints.
        result = scipy.optimize.minimize(
            lambda w, t=target: float(np.sum((w[:n] - w[n:] - t) ** 2)),
            np.zeros(2 * n),
            jac=lambda w, t=target: np.repeat([2.0, -2.0], n) * np.tile(w[:n] - w[n:] - t, 2),
            bounds=[(0, None)] * (2 * n),
            constraints=[{"type": "ineq", "fun": lambda w, rq=r[q]: rq - np.sum(w)}],
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        brute = result.x[:n] - result.x[n:]
        assert np.max(np.abs(y[q * n : (q + 1) * n] - brute)) <= 1e-5


def test_known_projection_values() -> None:
    """Known answers: a point inside stays, a point outside is soft-thresholded."""
    profile = _with_radii((1, 1, 1, 1))
    z = np.array([[0.2, -0.3, 3.0, 1.0, -2.0, 0.0, 0.5, 0.5]], dtype=np.float32)
    want = [[0.2, -0.3, 1.0, 0.0, -1.0, 0.0, 0.5, 0.5]]
    np.testing.assert_allclose(o.project_mlx(z, profile), want, atol=1e-7)
    np.testing.assert_allclose(o.project_reference(z, (1, 1, 1, 1)), want, atol=1e-15)


def test_sin_poly_error_bound() -> None:
    """The polynomial sine stays within 3e-7 of float64 sin for |u| ≤ 1e4 (2e-7 for |u| ≤ 100)."""
    rng = np.random.default_rng(0)
    for limit, bound in ((1e4, 3e-7), (100, 2e-7)):
        u = rng.uniform(-limit, limit, 200_000).astype(np.float32)
        got = np.array(o.sin_poly(mx.array(u)))
        assert np.max(np.abs(got - np.sin(u.astype(np.float64)))) < bound


def test_wave_argument_limit_is_enforced() -> None:
    """The MLX kernel rejects |ω·x + φ| above WAVE_ARGUMENT_LIMIT; the reference accepts it."""
    x = np.full((1, 4), 2e6, dtype=np.float32)
    with pytest.raises(ValueError, match="wave argument"):
        o.activate_mlx(x, CANONICAL)
    with pytest.raises(ValueError, match="wave argument"):
        o.wave_mlx(x, CANONICAL)
    assert np.all(np.isfinite(o.activate_reference(x, CANONICAL)))


def test_ratio_drift_one_percent_off() -> None:
    """A second radius off by 1 % gives a geometric ratio drift of about 0.01."""
    r = CANONICAL.radii
    bad = CANONICAL.replace(radii=(r[0], r[1] * 1.01, r[2], r[3]))
    drift = o.geometric_ratio_drift(bad, np.random.default_rng(0))
    assert drift == pytest.approx(0.01, abs=1e-4)


def test_ratio_drift_is_measured_against_the_fixed_canonical_ratios() -> None:
    """Radii scaled together keep zero drift; a 1 %-off radius drifts whatever else is set."""
    r = CANONICAL.radii
    scaled = CANONICAL.replace(radii=tuple(2 * v for v in r), base_radius=2.0)
    assert o.geometric_ratio_drift(scaled, np.random.default_rng(0)) < 1e-5
    bad = CANONICAL.replace(radii=(r[0], r[1] * 1.01, r[2], r[3]), base_radius=0.5)
    assert o.geometric_ratio_drift(bad, np.random.default_rng(0)) == pytest.approx(0.01, abs=1e-4)


def test_ratio_drift_canonical_is_tiny() -> None:
    """The canonical profile gives a geometric ratio drift below 1e-5."""
    assert o.geometric_ratio_drift(CANONICAL, np.random.default_rng(0)) < 1e-5


def test_phase_drift_canonical_and_shifted() -> None:
    """Phase drift is tiny for the canonical phases and equals an injected shift."""
    assert o.phase_drift(CANONICAL) < 1e-5
    shifted = list(CANONICAL.phases)
    shifted[2] += 0.003
    assert o.phase_drift(CANONICAL.replace(phases=tuple(shifted))) == pytest.approx(0.003, abs=2e-5)


def test_phase_drift_wraps_angles() -> None:
    """A phase shifted by 2π measures no drift (angles are wrapped)."""
    phases = tuple(p + 2 * math.pi for p in CANONICAL.phases)
    assert o.phase_drift(CANONICAL.replace(phases=phases)) < 1e-5


@pytest.mark.parametrize(
    "measure",
    [
        o.containment_violation,
        o.idempotence_error,
        o.symmetry_error,
        o.nonexpansiveness_violation,
        o.reference_error,
    ],
)
def test_measurements_healthy_on_canonical_profile(measure: Any) -> None:
    """Every octahedron measurement is within its KERNELS.md bound on the canonical profile."""
    limit = 1e-5 if measure is o.reference_error else 1e-6
    assert measure(CANONICAL, np.random.default_rng(1)) <= limit


def test_modes_agree() -> None:
    """Aggressive, balanced and conservative modes give the same activation."""
    x = np.random.default_rng(0).standard_normal((37, 64)).astype(np.float32)
    outs = [
        o.activate_mlx(x, CANONICAL.replace(vectorization=mode, chunk_rows=8))
        for mode in ("aggressive", "balanced", "conservative")
    ]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    np.testing.assert_allclose(outs[1], outs[2], atol=1e-6)


def test_compiled_cache_counts_hits_and_misses(fresh_caches: None) -> None:
    """A new shape signature is a miss; the same signature again is a hit."""
    x = np.zeros((3, 24), dtype=np.float32)
    o.activate_mlx(x, CANONICAL)
    o.activate_mlx(x, CANONICAL)
    o.activate_mlx(np.zeros((4, 24), dtype=np.float32), CANONICAL)
    assert o.cache_stats() == (1, 2)


def test_cache_thrash_drill_misses_every_call(fresh_caches: None) -> None:
    """The cache_thrash drill turns every call into a miss."""
    x = np.zeros((3, 24), dtype=np.float32)
    thrash = CANONICAL.replace(drill={"cache_thrash": True})
    for _ in range(3):
        o.activate_mlx(x, thrash)
    assert o.cache_stats() == (0, 3)


def test_slow_factor_drill_repeats_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """slow_factor = 3 runs the kernel's graph three times per call, each pass evaluated
    (every pass copies its rows out to NumPy, so MLX's lazy graph cannot drop one)."""
    calls = []
    original = o._run

    def counted_run(*a: Any, **k: Any) -> tuple[Any, ...]:
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(o, "_run", counted_run)
    o.activate_mlx(np.ones((2, 8), np.float32), CANONICAL.replace(drill={"slow_factor": 3.0}))
    assert len(calls) == 3


@pytest.mark.parametrize("mode", ["balanced", "conservative"])
def test_batch_scale_drill_scales_rows_and_conservative_mode_streams_them(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """batch_scale = 4 processes 4x the rows: in one pass, or streamed by chunk_rows when
    conservative (which is how enable_conservative_mode bounds a memory_bloat drill)."""
    shapes: list[tuple[int, ...]] = []
    original = o._run

    def spy(name: str, graph: Any, x: Any, args: Any, profile: Profile, *, chunked: bool) -> Any:
        shapes.append(tuple(x.shape))
        return original(name, graph, x, args, profile, chunked=chunked)

    monkeypatch.setattr(o, "_run", spy)
    profile = CANONICAL.replace(vectorization=mode, chunk_rows=2, drill={"batch_scale": 4})
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    y = o.activate_mlx(x, profile)
    assert sum(shape[0] for shape in shapes) == 20
    if mode == "balanced":
        assert shapes == [(20, 8)]
    else:
        assert max(shape[0] for shape in shapes) <= 2
    assert y.shape == (5, 8)
    np.testing.assert_allclose(y, o.activate_reference(x, profile), atol=1e-5)


def _drill_child(knob: str, prelude: str = "") -> list[str]:
    """argv of a child that runs the octahedron with the drill ``knob`` set."""
    code = (
        f"{prelude}import numpy as np; from kernels import octahedron as o; "
        "from kernels.profile import canonical_profile as c; "
        f"o.activate_mlx(np.ones((2, 8), np.float32), c().replace(drill={{'{knob}': True}}))"
    )
    return [sys.executable, "-c", code]


@pytest.mark.slow
def test_crash_drill_aborts_the_child() -> None:
    """crash aborts the child process with SIGABRT."""
    proc = subprocess.run(_drill_child("crash"), timeout=300, capture_output=True)
    assert proc.returncode == -signal.SIGABRT


@pytest.mark.slow
def test_hang_drill_blocks_the_child_in_its_wait(tmp_path: Path) -> None:
    """hang blocks the child inside the drill's wait: its own traceback dump shows it there."""
    dump = tmp_path / "traceback.txt"
    # The dump file gets its name only once the handler is registered (a rename keeps the
    # open file): before that, SIGUSR1 would kill the child.
    prelude = (
        "import faulthandler, os, signal; "
        f"dump = open({str(dump)!r} + '.tmp', 'w'); "
        "faulthandler.register(signal.SIGUSR1, file=dump, all_threads=True); "
        f"os.rename({str(dump)!r} + '.tmp', {str(dump)!r}); "
    )
    proc = subprocess.Popen(_drill_child("hang", prelude), stderr=subprocess.DEVNULL)
    try:

        def blocked() -> bool:
            if not dump.exists():
                return False
            proc.send_signal(signal.SIGUSR1)
            text = dump.read_text()
            return "in enter_drill" in text and "in wait" in text

        wait_until(blocked, timeout=300, what="the child blocked in the hang drill")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros(8), "2-D"),
        (np.zeros((2, 6)), "divisible by 4"),
        (np.zeros((2, 0)), "divisible by 4"),
        (np.array([[1, 2, 3, 4]]), "floating"),
        (np.array([[np.nan, 0, 0, 0]]), "finite"),
    ],
)
def test_input_validation_names_the_constraint(x: Any, message: str) -> None:
    """Bad inputs raise ValueError naming the broken constraint, on both implementations."""
    with pytest.raises(ValueError, match=message):
        o.activate_mlx(x, CANONICAL)
    with pytest.raises(ValueError, match=message):
        o.activate_reference(x, CANONICAL)


def test_projection_rejects_bad_radii() -> None:
    """Non-positive radii are rejected by the reference projection."""
    with pytest.raises(ValueError, match="radii"):
        o.project_reference(np.zeros((1, 4)), (1, 0, 1, 1))
