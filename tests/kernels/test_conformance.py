"""Conformance of every registered kernel: seeded determinism, shapes, JSON measurements."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kernels.profile import canonical_profile
from kernels.registry import Kernel, load_kernels

KERNELS = load_kernels()
CANONICAL = canonical_profile().replace(vectorization="balanced")
ROWS = 8


@pytest.fixture(params=sorted(KERNELS), ids=str)
def kernel(request: pytest.FixtureRequest) -> Kernel:
    """Each registered kernel in turn."""
    return KERNELS[request.param]


def test_same_seed_same_inputs_and_output(kernel: Kernel) -> None:
    """Inputs and MLX output are identical for the same seed."""
    outs = []
    for _ in range(2):
        inputs = kernel.make_inputs(np.random.default_rng(42), ROWS, CANONICAL)
        outs.append(kernel.run_mlx(inputs, CANONICAL))
    assert np.array_equal(outs[0], outs[1])


def test_mlx_and_references_agree_in_shape_and_error(kernel: Kernel) -> None:
    """MLX, float32 and float64 outputs share a shape; MLX is within the kernel's error limit."""
    inputs = kernel.make_inputs(np.random.default_rng(0), ROWS, CANONICAL)
    got = kernel.run_mlx(inputs, CANONICAL)
    ref64 = kernel.run_reference(inputs, CANONICAL, np.float64)
    ref32 = kernel.run_reference(inputs, CANONICAL, np.float32)
    assert got.shape == ref64.shape == ref32.shape
    error = kernel.max_error(got, ref64)
    assert isinstance(error, float)
    assert error <= kernel.error_limit
    assert kernel.max_error(ref32, ref64) <= kernel.error_limit


def test_every_mode_runs(kernel: Kernel) -> None:
    """Each batch config's execution mode runs and stays within the error limit."""
    inputs = kernel.make_inputs(np.random.default_rng(1), ROWS, CANONICAL)
    ref64 = kernel.run_reference(inputs, CANONICAL, np.float64)
    for config in kernel.batch_configs:
        profile = CANONICAL.replace(vectorization=config.vectorization, chunk_rows=3)
        assert kernel.max_error(kernel.run_mlx(inputs, profile), ref64) <= kernel.error_limit


def test_invariants_are_json_floats_within_limits(kernel: Kernel) -> None:
    """Every invariant returns a finite float, JSON-serialisable, within its healthy limit."""
    assert set(kernel.invariants) == set(kernel.invariant_limits)
    results = {}
    for name, invariant in kernel.invariants.items():
        value = invariant(np.random.default_rng(7), CANONICAL)
        assert type(value) is float, name
        assert math.isfinite(value), name
        limit = kernel.invariant_limits[name]
        assert value >= limit if "eigenvalue" in name else value <= limit, name
        results[name] = value
    assert json.loads(json.dumps(results, allow_nan=False)) == results


def test_invariants_are_deterministic(kernel: Kernel) -> None:
    """The same seed gives the same invariant values."""
    for name, invariant in kernel.invariants.items():
        first = invariant(np.random.default_rng(3), CANONICAL)
        assert invariant(np.random.default_rng(3), CANONICAL) == first, name


def test_cache_stats_are_counts(kernel: Kernel) -> None:
    """cache_stats returns two non-negative ints, and reset zeroes them."""
    inputs = kernel.make_inputs(np.random.default_rng(0), ROWS, CANONICAL)
    kernel.run_mlx(inputs, canonical_profile())
    hits, misses = kernel.cache_stats()
    assert all(isinstance(v, int) and v >= 0 for v in (hits, misses))
    kernel.reset_cache_stats()
    assert kernel.cache_stats() == (0, 0)


def test_batch_configs_are_the_design_three(kernel: Kernel) -> None:
    """Every kernel is checked with the small, medium and large configs."""
    assert [c.rows for c in kernel.batch_configs] == [256, 512, 1024]
