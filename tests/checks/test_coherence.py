"""The monthly coherence check: quantum evolution against float64, QFI, and a 16-bit path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from checks.api import UNIT_SUFFIXES, CheckContext, CheckResult
from checks.coherence import QUANTUM_NAMES, CoherenceCheck
from daemon.config import load_config
from daemon.evaluator import Evaluator
from daemon.events import ThresholdCrossed
from kernels.profile import Profile, canonical_profile, save_profile

FAST: dict[str, Any] = {"sizes": [16], "batch": 4, "qfi_states": 2}


def run_check(tmp_path: Path, profile: Profile | None = None, **options: Any) -> CheckResult:
    """Run the coherence check in-process with FAST options plus ``options``."""
    folder = None
    if profile is not None:
        folder = tmp_path / "profile"
        save_profile(profile, folder)
    context = CheckContext(
        tier="monthly",
        state_dir=tmp_path,
        seed=5,
        run_id="test",
        options={**FAST, **options},
        profile_path=folder,
    )
    return CoherenceCheck().run(context)


def issues(result: CheckResult) -> set[str]:
    """Return the issues the default rules raise on ``result``."""
    evaluation = Evaluator(load_config().rules).evaluate(
        run_id="test", tier="monthly", check="coherence", measurements=result.measurements
    )
    return {e.issue for e in evaluation.events if isinstance(e, ThresholdCrossed)}


def value(result: CheckResult, name: str) -> float:
    """Return the single value of measurement ``name``."""
    (found,) = [m.value for m in result.measurements if m.name == name]
    return found


def test_canonical_profile_is_coherent(tmp_path: Path) -> None:
    """The float32 path stays within every threshold, with each measurement present."""
    result = run_check(tmp_path)
    names = {m.name for m in result.measurements}
    assert {name for name, _ in QUANTUM_NAMES.values()} | {"qfi_error_ratio"} == names
    for m in result.measurements:
        assert m.unit in UNIT_SUFFIXES
        assert {"kernel", "profile_id", "seed"} <= set(m.labels)
    assert value(result, "quantum_state_deviation_distance") < 1e-5
    assert value(result, "trace_error_ratio") < 1e-6
    assert value(result, "qfi_error_ratio") < 1e-4
    assert issues(result) == set()


def test_float16_path_raises_coherence_loss(tmp_path: Path) -> None:
    """A 16-bit quantum path deviates by > 1e-5 from float64 and raises coherence_loss."""
    result = run_check(tmp_path, canonical_profile().replace(quantum_precision="float16"))
    assert value(result, "quantum_state_deviation_distance") > 1e-5
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
