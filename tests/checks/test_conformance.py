"""Every registered check honours the Check contract, run for real in a child process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checks.api import TIERS, Check, CheckResult
from checks.registry import discover_checks, load_check
from daemon.runner import CheckRunner, ChildCompleted, ChildRequest

# Small inputs so every check runs in seconds; the options are each check's documented ones.
TINY: dict[str, dict[str, Any]] = {
    "runtime": {},
    "performance": {
        "kernels": ["quantum"],
        "batches": ["small"],
        "repetitions": 5,
        "warmup": 1,
        "extra_timing_s": 0,
    },
    "geometry": {"kernels": ["octahedron"], "rounds": 2},
    "coherence": {"kernels": ["quantum"], "sizes": [16], "batch": 4},
    "benchmark": {
        "kernels": ["quantum"],
        "batches": ["small"],
        "repetitions": 3,
        "warmup": 1,
        "sizes": [64, 128],
    },
}
DETERMINISTIC = ("geometry", "coherence")  # measure numbers, not time
REGISTERED = sorted(discover_checks({}))


def test_every_builtin_check_is_covered() -> None:
    """This file knows options for every registered built-in check."""
    assert set(REGISTERED) == set(TINY)


@pytest.mark.parametrize("name", REGISTERED)
def test_check_declares_name_tier_and_timeout(name: str) -> None:
    """A check's name matches its registration, its tier is known and its timeout positive."""
    check = load_check(discover_checks({})[name])
    assert isinstance(check, Check)
    assert check.name == name
    assert check.tier in TIERS
    assert check.timeout_s > 0


def run_in_child(name: str, tmp_path: Path, seed: int) -> CheckResult:
    spec = discover_checks({})[name]
    request = ChildRequest(
        check=name,
        target=spec.target,
        tier=load_check(spec).tier,
        run_id=f"conf-{seed}",
        seed=seed,
        state_dir=str(tmp_path),
        options=TINY[name],
        profile_path=None,
    )
    outcome = CheckRunner(kill_grace_s=2).run(request, deadline_s=240)
    assert isinstance(outcome, ChildCompleted), outcome
    return outcome.result


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTERED)
def test_result_is_well_formed_and_serialisable(name: str, tmp_path: Path) -> None:
    """A real run returns its own name, unique series, units in names, strict JSON."""
    result = run_in_child(name, tmp_path, seed=7)
    assert result.check == name
    assert result.measurements
    series = [(m.name, tuple(sorted(m.labels.items()))) for m in result.measurements]
    assert len(series) == len(set(series)), "two measurements of the same series"
    for measurement in result.measurements:
        assert measurement.name.endswith(measurement.unit)
    json.dumps(result.to_record(), allow_nan=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_same_seed_gives_the_same_numbers(name: str, tmp_path: Path) -> None:
    """Numerical checks are replayable: the same seed gives the same measurements."""
    first = run_in_child(name, tmp_path, seed=11)
    second = run_in_child(name, tmp_path, seed=11)
    assert [m.to_record() for m in first.measurements] == [
        m.to_record() for m in second.measurements
    ]
