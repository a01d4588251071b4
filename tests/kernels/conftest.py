"""Fixtures for the kernel tests: a backend fixture pairing MLX and the NumPy float32 peer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from kernels import fisher, octahedron, quantum
from kernels.profile import Profile

EPS32 = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Backend:
    """One float32 implementation of every kernel, compared against the float64 oracle.

    Tolerances (absolute, against float64) and why:

    * ``rounding(n, magnitude)``: a float32 result built from values of size
      ``magnitude`` carries a few half-ulps of that magnitude; the octahedron's
      threshold θ adds one rounding per term of a sum over at most ``n`` entries
      in the NumPy peer (its float32 ``cumsum``), while MLX's residual Newton
      step keeps that term at a few ulps. Hence ``1e-6 + c·eps32·magnitude``
      with ``c = 16`` for MLX and ``c = 4·n + 16`` for NumPy.
    * Fisher–Rao distances ``d = 4·arcsin(c/2)``, c = ‖√p − √q‖₂: the float32
      sum of K non-negative squared differences has a relative error of at most
      ≈ K·eps32 (recursive summation; rounding √p and p itself adds a few eps), so
      c errs by ≲ (K + 3)·eps32·c/2 + 3·eps32. The slope dd/dc = 2/cos(d/4) is at
      most 2√2 for d ≤ π: arcsin's slope blows up only at c = 2 (d = 2π), which
      two categorical distributions never reach (c ≤ √2, equality for disjoint
      supports). Hence ``1e-6 + 4·K·eps32`` radians, with no √eps32 term even at
      d = π. Measured over 3000 Hypothesis draws (K ≤ 40) plus 800 disjoint and
      near-disjoint pairs (K up to 1000): worst 3.2e-6 rad for MLX, 8.7e-7 for
      NumPy, at most 0.27 of this bound.
    * Quantum evolution: three complex64 products of n×n matrices and one
      eigendecomposition give a trace distance of ≈ n·eps32·‖ρ‖; KERNELS.md's
      1e-5 covers n ≤ 64.
    """

    name: str
    activate: Callable[[Any, Profile], Any]
    project: Callable[[Any, Profile], Any]
    wave: Callable[[Any, Profile], Any]
    fisher_rao: Callable[[Any, Any], Any]
    evolve: Callable[[Any, Any, float], Any]
    sum_terms: bool

    def rounding(self, n: int, magnitude: float) -> float:
        """Return the absolute tolerance for float32 results of size ``magnitude``."""
        c = 4 * n + 16 if self.sum_terms else 16
        return 1e-6 + c * EPS32 * max(1.0, magnitude)

    def distance_tol(self, k: int) -> float:
        """Return the Fisher–Rao tolerance (radians) for K categories (see the class)."""
        return 1e-6 + 4 * k * EPS32


MLX = Backend(
    name="mlx",
    activate=octahedron.activate_mlx,
    project=octahedron.project_mlx,
    wave=octahedron.wave_mlx,
    fisher_rao=fisher.fisher_rao_mlx,
    evolve=quantum.evolve_mlx,
    sum_terms=False,
)
NUMPY32 = Backend(
    name="numpy-float32",
    activate=lambda x, p: octahedron.activate_reference(x, p, np.float32),
    project=lambda z, p: octahedron.project_reference(z, p.radii, np.float32),
    wave=lambda x, p: octahedron.wave_reference(x, p, np.float32),
    fisher_rao=lambda p, q: fisher.fisher_rao_reference(p, q, np.float32),
    evolve=lambda rho, h, t: quantum.evolve_reference(rho, h, t, np.complex64),
    sum_terms=True,
)


@pytest.fixture(scope="session", params=[MLX, NUMPY32], ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each float32 implementation in turn: MLX, then the NumPy peer."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    """Zero the process-wide cache counters before and after a test."""
    octahedron.reset_cache_stats()
    fisher.reset_cache_stats()
    yield
    octahedron.reset_cache_stats()
    fisher.reset_cache_stats()
