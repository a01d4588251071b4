"""Tests for `kernelwatch policy test`: the shipped default-policy file, and failure reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli_recovery import main
from daemon.policy_test import PolicyTestError, run_file

DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "policy" / "default_policy.toml"


def test_default_policy_file_passes_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped tests of the default policy pass, run as `kernelwatch policy test`."""
    code = main(["policy", "test", str(DEFAULT_POLICY)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "SUCCESS" in out
    assert "FAILED" not in out


def test_a_wrong_expectation_fails_with_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test whose expectation is wrong exits 1 and shows expected and actual events."""
    path = tmp_path / "wrong.toml"
    path.write_text(
        """
[[tests]]
name = "wrong"
procedures = { activate_geometric_stabilization = "fixes" }
expect_events = ["ThresholdCrossed:geometric_drift"]
expect_counts = { EmergencyAborted = 1 }
[[tests.input]]
tier = "weekly"
check = "geometry"
measurement = "geometric_ratio_drift_ratio"
values = "0 0.002"
fixed = 0.0
"""
    )
    code = main(["policy", "test", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED  wrong" in out
    assert "got events: ['ThresholdCrossed:geometric_drift', 'RecoveryStarted:" in out
    assert "expected 1 × EmergencyAborted, got 0" in out


def test_policy_overrides_change_the_outcome(tmp_path: Path) -> None:
    """A [recovery.policy] override in the file is the policy under test."""
    path = tmp_path / "override.toml"
    path.write_text(
        """
[recovery.policy.geometric_drift]
procedure = "my_fix"
max_attempts = 1
cooldown_s = 0

[[tests]]
name = "one attempt then abort"
interval = "1h"
expect_procedures = ["my_fix", "emergency_abort"]
[[tests.input]]
tier = "weekly"
check = "geometry"
measurement = "geometric_ratio_drift_ratio"
values = "0 0.002 0.002"
"""
    )
    (result,) = run_file(path)
    assert result.failures == ()


def test_expectation_misplaced_under_an_input_is_refused(tmp_path: Path) -> None:
    """A key written after [[tests.input]] belongs to the input in TOML: refused, not ignored."""
    path = tmp_path / "misplaced.toml"
    path.write_text(
        '[[tests]]\nname = "t"\n[[tests.input]]\ntier = "weekly"\ncheck = "geometry"\n'
        'measurement = "geometric_ratio_drift_ratio"\nvalues = "0"\nexpect_events = []\n'
    )
    with pytest.raises(PolicyTestError, match="expect_events"):
        run_file(path)


def test_malformed_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file with a bad input is reported as an error naming the test, exit 1."""
    path = tmp_path / "bad.toml"
    path.write_text('[[tests]]\nname = "t"\n[[tests.input]]\ntier = "weekly"\n')
    assert main(["policy", "test", str(path)]) == 1
    assert "ERROR" in capsys.readouterr().out


def test_a_test_without_expectations_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test that expects nothing would pass whatever fired: an error that names it, exit 1."""
    path = tmp_path / "empty.toml"
    path.write_text(
        '[[tests]]\nname = "asserts nothing"\nexpect_counts = {}\n[[tests.input]]\n'
        'tier = "weekly"\ncheck = "geometry"\nmeasurement = "geometric_ratio_drift_ratio"\n'
        'values = "0 0.002"\n'
    )
    assert main(["policy", "test", str(path)]) == 1
    out = capsys.readouterr().out
    assert "ERROR" in out
    assert "tests[0] ('asserts nothing'): no expectations" in out
