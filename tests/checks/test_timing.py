"""The calibration workloads and the interleaved timer of the daily performance check."""

from __future__ import annotations

import pytest

from checks.timing import DISPATCH_STEPS, Calibration, time_interleaved
from kernels.registry import CHARACTERS


def test_every_kernel_character_has_a_workload_named_in_the_spec() -> None:
    """Each character a kernel may declare builds a workload, and the spec names its size,
    so a baseline timed against other workloads is recognised."""
    calibration = Calibration(size=256, memory_mb=2)
    for kind in CHARACTERS:
        workload = calibration.build(kind)
        timed = time_interleaved(workload, None, repetitions=2, warmup=1)
        assert all(t > 0 for t in timed.kernel)
    assert calibration.spec == (
        f"mlx-compiled-elementwise-256x256x2+stream-2MB+dispatch-256x256x{DISPATCH_STEPS}"
    )
    assert Calibration().spec != calibration.spec


def test_an_unknown_workload_is_refused_naming_the_known_ones() -> None:
    """A kind outside the characters is an error that lists them."""
    with pytest.raises(ValueError, match="'compute', 'memory' or 'dispatch', got 'gpu'"):
        Calibration().build("gpu")


def test_interleaved_timing_pairs_each_kernel_call_with_a_calibration_call() -> None:
    """Every repetition gives a kernel time and the calibration time right after it."""
    calls: list[str] = []
    timed = time_interleaved(
        lambda: calls.append("k"), lambda: calls.append("c"), repetitions=3, warmup=1
    )
    assert calls == ["k", "c"] * 4
    assert len(timed.kernel) == len(timed.calibration) == len(timed.ratios) == 3
