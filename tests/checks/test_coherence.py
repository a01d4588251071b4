"""The monthly coherence check: quantum evolution against float64, QFI, and a 16-bit path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from checks.api import UNIT_SUFFIXES, CheckResult
from checks.coherence import QUANTUM_NAMES, CoherenceCheck
from kernels.profile import Profile, canonical_profile
from tests.checks.helpers import raised_issues, run_in_process, single_value

FAST: dict[str, Any] = {"sizes": [16], "batch": 4, "qfi_states": 2}


def run_check(tmp_path: Path, profile: Profile | None = None, **options: Any) -> CheckResult:
    """Run the coherence check in-process with FAST options plus ``options``."""
    return run_in_process(
        CoherenceCheck(),
        tmp_path,
        tier="monthly",
        seed=5,
        options={**FAST, **options},
        profile=profile,
    )


def issues(result: CheckResult) -> set[str]:
    """Return the issues the default rules raise on ``result``."""
    return raised_issues(result, tier="monthly")


def test_canonical_profile_is_coherent(tmp_path: Path) -> None:
    """The float32 path stays within every threshold, with each measurement present."""
    result = run_check(tmp_path)
    names = {m.name for m in result.measurements}
    assert {name for name, _ in QUANTUM_NAMES.values()} | {"qfi_error_ratio"} == names
    for m in result.measurements:
        assert m.unit in UNIT_SUFFIXES
        assert {"kernel", "profile_id", "seed"} <= set(m.labels)
    assert single_value(result, "quantum_state_deviation_distance") < 1e-5
    assert single_value(result, "trace_error_ratio") < 1e-6
    assert single_value(result, "qfi_error_ratio") < 1e-4
    assert issues(result) == set()


def test_float16_path_raises_coherence_loss(tmp_path: Path) -> None:
    """A 16-bit quantum path deviates by > 1e-5 from float64 and raises coherence_loss."""
    result = run_check(tmp_path, canonical_profile().replace(quantum_precision="float16"))
    assert single_value(result, "quantum_state_deviation_distance") > 1e-5
    assert "coherence_loss" in issues(result)


def test_every_size_is_labelled(tmp_path: Path) -> None:
    """Each state size gets its own series, labelled by size."""
    result = run_check(tmp_path, sizes=[8, 16], kernels=["quantum"])
    sizes = {m.labels["size"] for m in result.measurements}
    assert sizes == {"n8", "n16"}


def test_skip_kernels_and_bad_sizes(tmp_path: Path) -> None:
    """Skipped kernels are not run, and non-positive sizes are refused."""
    result = run_check(tmp_path, skip_kernels=["quantum"])
    assert [m.name for m in result.measurements] == ["qfi_error_ratio"]
    with pytest.raises(ValueError, match="sizes"):
        run_check(tmp_path, sizes=[0])
