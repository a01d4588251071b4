"""Shared Hypothesis strategies for kernel inputs, profiles and quantum states."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernels.profile import Profile

__all__ = [
    "arrays_like",
    "density_batches",
    "distribution_batches",
    "distribution_pairs",
    "distribution_triples",
    "profiles",
    "quarter_arrays",
    "radii",
    "softmax_logits",
]

#: float32 values the kernels are specified for (|x| ≤ 100 keeps the wave's argument small).
_FLOAT32 = st.floats(
    min_value=-100, max_value=100, width=32, allow_nan=False, allow_subnormal=False
)


def arrays_like(arr: np.ndarray[Any, Any]) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    """float32 arrays with the shape of ``arr`` and the same element range."""
    return hnp.arrays(np.float32, arr.shape, elements=_FLOAT32)


def radii() -> st.SearchStrategy[tuple[float, float, float, float]]:
    """Four positive radii from 0.05 to 20."""
    r = st.floats(min_value=0.05, max_value=20, allow_nan=False)
    return st.tuples(r, r, r, r)


@st.composite
def profiles(draw: st.DrawFn, *, modes: tuple[str, ...] = ("balanced", "conservative")) -> Profile:
    """Valid profiles: any radii, phases, amplitude, frequency, biases, and one of ``modes``.

    ``aggressive`` is left out by default: it compiles once per new shape (about
    0.4 s on Linux), which a property test drawing many shapes cannot afford.
    """
    angle = st.floats(min_value=-math.pi, max_value=math.pi, allow_nan=False)
    small = st.floats(min_value=-1, max_value=1, allow_nan=False)
    return Profile(
        radii=draw(radii()),
        phases=draw(st.tuples(angle, angle, angle, angle)),
        amplitude=draw(st.floats(min_value=0, max_value=0.5, allow_nan=False)),
        frequency=draw(st.floats(min_value=0.25, max_value=2, allow_nan=False)),
        biases=draw(st.tuples(small, small, small, small)),
        vectorization=draw(st.sampled_from(modes)),
        chunk_rows=draw(st.integers(min_value=1, max_value=8)),
    )


def quarter_arrays(
    *, max_rows: int = 6, max_quarter: int = 12, elements: Any = _FLOAT32
) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    """float32 arrays (B, 4·n), 1 ≤ B ≤ max_rows, 1 ≤ n ≤ max_quarter."""
    shapes = st.tuples(
        st.integers(min_value=1, max_value=max_rows),
        st.integers(min_value=1, max_value=max_quarter).map(lambda n: 4 * n),
    )
    return hnp.arrays(np.float32, shapes, elements=elements)


@st.composite
def distribution_batches(
    draw: st.DrawFn, *, count: int = 2, max_rows: int = 5, max_k: int = 40
) -> tuple[np.ndarray[Any, Any], ...]:
    """``count`` (B, K) float64 batches of categorical distributions, zeros allowed."""
    rows = draw(st.integers(min_value=1, max_value=max_rows))
    k = draw(st.integers(min_value=1, max_value=max_k))
    weight = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e3))
    out = []
    for _ in range(count):
        raw = draw(hnp.arrays(np.float64, (rows, k), elements=weight))
        # Rows of all zeros become a point mass on a drawn category.
        empty = raw.sum(axis=1) == 0
        raw[empty, draw(st.integers(min_value=0, max_value=k - 1))] = 1.0
        out.append(raw / raw.sum(axis=1, keepdims=True))
    return tuple(out)


def distribution_pairs(
    *, max_rows: int = 5, max_k: int = 40
) -> st.SearchStrategy[tuple[np.ndarray[Any, Any], ...]]:
    """Two (B, K) float64 batches of categorical distributions (p, q)."""
    return distribution_batches(count=2, max_rows=max_rows, max_k=max_k)


def distribution_triples() -> st.SearchStrategy[tuple[np.ndarray[Any, Any], ...]]:
    """Three (B, K) float64 batches of categorical distributions (p, q, r)."""
    return distribution_batches(count=3)


def softmax_logits(*, max_groups: int = 6, max_classes: int = 6) -> Any:
    """Logits (G, C) for the softmax Fisher metric, |θ| ≤ 30."""
    shapes = st.tuples(
        st.integers(min_value=1, max_value=max_groups),
        st.integers(min_value=1, max_value=max_classes),
    )
    return hnp.arrays(
        np.float64, shapes, elements=st.floats(min_value=-30, max_value=30, allow_nan=False)
    )


@st.composite
def density_batches(
    draw: st.DrawFn, *, max_batch: int = 4, min_n: int = 2, max_n: int = 16
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
    """(ρ, H, t): Ginibre density matrices of random rank, GUE Hamiltonians, a time."""
    from kernels.quantum import random_density_matrices, random_hamiltonians

    batch = draw(st.integers(min_value=1, max_value=max_batch))
    n = draw(st.integers(min_value=min_n, max_value=max_n))
    rank = draw(st.integers(min_value=1, max_value=n))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    t = draw(st.floats(min_value=-3, max_value=3, allow_nan=False))
    rho = random_density_matrices(rng, batch, n, rank=rank)
    return rho, random_hamiltonians(rng, batch, n), t
