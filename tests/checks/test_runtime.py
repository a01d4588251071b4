"""The built-in runtime check, run in a real child, and the environment fingerprint."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from checks.api import UNIT_SUFFIXES
from checks.fingerprint import Fingerprint, collect_fingerprint
from checks.runtime import RuntimeCheck
from daemon.runner import CheckRunner, ChildCompleted, ChildRequest


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> ChildCompleted:
    """One real run of the runtime check in a child process, shared by the tests below."""
    runner = CheckRunner(kill_grace_s=1.0)
    result = runner.run(
        ChildRequest(
            check="runtime",
            target="checks.runtime:RuntimeCheck",
            tier="daily",
            run_id="run-1",
            seed=0,
            state_dir=str(tmp_path_factory.mktemp("state")),
            options={},
            profile_path=None,
        ),
        deadline_s=RuntimeCheck.timeout_s,
    )
    assert isinstance(result, ChildCompleted), result
    return result


def test_runtime_check_identity() -> None:
    """The runtime check is named ``runtime``, runs daily and has a 60 s timeout."""
    check = RuntimeCheck()
    assert (check.name, check.tier, check.timeout_s) == ("runtime", "daily", 60.0)


def test_measurement_names_end_with_their_units(outcome: ChildCompleted) -> None:
    """Every runtime measurement has a known unit that ends its name."""
    assert outcome.result.measurements
    for m in outcome.result.measurements:
        assert m.unit in UNIT_SUFFIXES
        assert m.name.endswith(m.unit)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="read from /proc on Linux")
def test_child_startup_is_measured(outcome: ChildCompleted) -> None:
    """On Linux the child's start-up time is positive and shorter than the whole run."""
    [startup] = [m for m in outcome.result.measurements if m.name == "child_startup_seconds"]
    assert 0 < startup.value <= outcome.duration_s + 0.05  # /proc start time is tick-granular


def test_import_times_are_labelled_by_module(outcome: ChildCompleted) -> None:
    """numpy and scipy.linalg import times are reported with a ``module`` label."""
    imports = {
        m.labels["module"]: m.value
        for m in outcome.result.measurements
        if m.name == "python_import_seconds"
    }
    assert {"numpy", "scipy.linalg"} <= set(imports)
    assert all(value >= 0 for value in imports.values())


def test_fingerprint_is_reported(outcome: ChildCompleted) -> None:
    """The child reports the same fingerprint as this process, in details and as a note."""
    expected = collect_fingerprint()
    assert outcome.result.details["fingerprint"] == expected.to_record()
    assert outcome.result.details["digest"] == expected.digest()
    assert f"fingerprint {expected.digest()}" in outcome.result.notes


def test_fingerprint_digest_is_stable_and_short() -> None:
    """Two reads of the fingerprint give the same 16-hex-digit digest."""
    first, second = collect_fingerprint(), collect_fingerprint()
    assert first == second
    assert len(first.digest()) == 16
    int(first.digest(), 16)


def test_fingerprint_digest_changes_with_a_library_version() -> None:
    """A different numpy version gives a different digest."""
    fingerprint = collect_fingerprint()
    bumped = dataclasses.replace(fingerprint, numpy_version=fingerprint.numpy_version + ".post1")
    assert bumped.digest() != fingerprint.digest()


def test_fingerprint_round_trips_through_its_record() -> None:
    """A fingerprint read back from its record is equal, with the same digest."""
    fingerprint = collect_fingerprint()
    again = Fingerprint.from_record(fingerprint.to_record())
    assert again == fingerprint
    assert again.digest() == fingerprint.digest()


def test_fingerprint_fields_are_filled() -> None:
    """The fingerprint names a CPU, a positive core count, and the installed numpy version."""
    fingerprint = collect_fingerprint()
    assert fingerprint.cpu_model
    assert fingerprint.cpu_count > 0
    assert fingerprint.numpy_version != "absent"
