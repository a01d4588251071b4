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
    * Fisher–Rao distances: ``4·arcsin(chord/2)`` has condition number ≈ 1 away
      from π, so a float32 sum of K squared differences errs by ≈ K·eps32;
      the bound is ``1e-6 + 4·K·eps32`` radians, plus √eps32 near d = π where
      arcsin's slope is unbounded.
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
        """Return the Fisher–Rao tolerance (radians) for K categories."""
        return 1e-6 + 4 * k * EPS32 + float(np.sqrt(EPS32))


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
