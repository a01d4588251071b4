"""Alert rules, their promtool tests, scrape and Alertmanager examples, checked by real tools."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops._support import (
    ALERTMANAGER_EXAMPLE,
    PROMETHEUS_EXAMPLE,
    REPO,
    RULES,
    RULES_TEST,
    load_rules,
)
from tests.real_programs import require_program

REQUIRED_ALERTS = {
    "KernelwatchTierCritical",
    "KernelwatchTierOverdue",
    "KernelwatchTierNeverSucceeded",
    "KernelwatchRecoveryFailed",
    "KernelwatchEmergencyAbort",
    "KernelwatchDaemonDown",
    "KernelwatchTelemetryWriteErrors",
    "KernelwatchHeartbeat",
}


def run_tool(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a real tool with a bounded time, capturing its output."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def alerts() -> dict[str, dict[str, Any]]:
    """Every alerting rule by name."""
    return {
        rule["alert"]: rule
        for group in load_rules()["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_promtool_check_rules_passes() -> None:
    """`promtool check rules` accepts the rules file."""
    promtool = require_program("promtool", package="prometheus")
    result = run_tool([promtool, "check", "rules", str(RULES)], RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    """`promtool test rules` passes the rules' unit tests."""
    promtool = require_program("promtool", package="prometheus")
    result = run_tool([promtool, "test", "rules", RULES_TEST.name], RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_prometheus_config_is_valid() -> None:
    """`promtool check config` accepts the example scrape config and the rules it loads."""
    promtool = require_program("promtool", package="prometheus")
    result = run_tool(
        [promtool, "check", "config", PROMETHEUS_EXAMPLE.name], PROMETHEUS_EXAMPLE.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_amtool_check_config_passes() -> None:
    """`amtool check-config` accepts the Alertmanager example."""
    amtool = require_program("amtool", package="prometheus-alertmanager")
    result = run_tool([amtool, "check-config", str(ALERTMANAGER_EXAMPLE)], REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_alert_is_defined() -> None:
    """The rules define every alert the issue asks for, each with a severity and a summary."""
    defined = alerts()
    assert defined.keys() >= REQUIRED_ALERTS, REQUIRED_ALERTS - defined.keys()
    for name, rule in defined.items():
        assert rule["labels"]["severity"] in {"page", "ticket", "none"}, name
        assert rule["annotations"]["summary"], name


def test_heartbeat_always_fires_and_routes_to_the_watchdog() -> None:
    """The heartbeat is vector(1) and Alertmanager sends it to its own receiver, not a pager."""
    assert alerts()["KernelwatchHeartbeat"]["expr"].strip() == "vector(1)"
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text(encoding="utf-8"))
    routes = config["route"]["routes"]
    heartbeat = next(r for r in routes if 'alertname = "KernelwatchHeartbeat"' in r["matchers"])
    assert heartbeat["receiver"] in {"watchdog", "null"}
    assert routes.index(heartbeat) == 0  # matched before the severity routes
    assert any('severity = "page"' in r["matchers"] for r in routes)


@pytest.mark.parametrize("alert", sorted(REQUIRED_ALERTS - {"KernelwatchHeartbeat"}))
def test_each_alert_is_unit_tested_firing_and_silent(alert: str) -> None:
    """The promtool tests show each alert both firing and not firing."""
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
    cases = [
        case
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]
    assert any(case.get("exp_alerts") for case in cases), f"{alert} never shown firing"
    assert any(not case.get("exp_alerts") for case in cases), f"{alert} never shown silent"
