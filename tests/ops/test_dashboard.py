"""The Grafana dashboard: structure, and every query accepted by a real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops._support import (
    REPO,
    Processes,
    dashboard_expressions,
    expand_grafana,
    iter_panels,
    load_dashboard,
    load_rules,
    prometheus_query,
    referenced_metrics,
    rule_expressions,
    start_prometheus,
)

LOG_PANELS = {"Geometric ratio drift and phase drift (log)", "Quantum state deviation (log)"}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Real programs started by the test, all stopped at teardown."""
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def panel(title: str) -> dict[str, Any]:
    """The dashboard panel with this title."""
    return next(p for p in iter_panels(load_dashboard()) if p["title"] == title)


def test_dashboard_has_an_instance_variable_for_fleets() -> None:
    """The `instance` variable lists every daemon reporting build info, with multi-select."""
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    instance = variables["instance"]
    assert instance["definition"] == "label_values(kernelwatch_build_info, instance)"
    assert instance["query"]["query"] == instance["definition"]
    assert instance["multi"] is True
    assert instance["includeAll"] is True
    assert variables["datasource"]["query"] == "prometheus"


def test_every_query_filters_by_instance() -> None:
    """Every panel and annotation query selects `instance=~"$instance"` on each metric."""
    for where, expr in dashboard_expressions(load_dashboard()):
        selectors = expr.count("{")
        assert selectors > 0, where
        assert expr.count('instance=~"$instance"') == selectors, where


def test_panel_ids_are_unique_and_targets_have_ref_ids() -> None:
    """Panel ids are unique and every target has a distinct refId within its panel."""
    panels = list(iter_panels(load_dashboard()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]


@pytest.mark.parametrize(
    ("title", "metrics"),
    [
        ("Tier status", {"kernelwatch_tier_status"}),
        ("Kernel status per tier", {"kernelwatch_kernel_status"}),
        ("Last success age per tier", {"kernelwatch_tier_last_success_timestamp_seconds"}),
        (
            "Latency per batch vs baseline",
            {"kernelwatch_latency_per_batch_seconds", "kernelwatch_latency_baseline_seconds"},
        ),
        (
            "Peak memory vs limit",
            {"kernelwatch_peak_memory_bytes", "kernelwatch_memory_limit_bytes"},
        ),
        ("Cache efficiency", {"kernelwatch_cache_efficiency_ratio", "kernelwatch_rule_threshold"}),
        (
            "Geometric ratio drift and phase drift (log)",
            {"kernelwatch_geometric_ratio_drift_ratio", "kernelwatch_rule_threshold"},
        ),
        (
            "Quantum state deviation (log)",
            {"kernelwatch_quantum_state_deviation_distance", "kernelwatch_rule_threshold"},
        ),
        ("Open issues", {"kernelwatch_open_issues"}),
        ("Build and uptime", {"kernelwatch_build_info", "kernelwatch_daemon_start_time_seconds"}),
    ],
)
def test_required_panels_show_their_metrics(title: str, metrics: set[str]) -> None:
    """Each panel the issue asks for exists and queries the metrics it is about."""
    exprs = [(title, t["expr"]) for t in panel(title)["targets"]]
    assert metrics <= referenced_metrics(exprs).keys()


@pytest.mark.parametrize("title", sorted(LOG_PANELS))
def test_drift_panels_use_log_scale_with_threshold_lines(title: str) -> None:
    """Drift and deviation panels have a log10 axis and dashed threshold series."""
    p = panel(title)
    assert p["fieldConfig"]["defaults"]["custom"]["scaleDistribution"] == {"type": "log", "log": 10}
    assert any("kernelwatch_rule_threshold" in t["expr"] for t in p["targets"])
    styles = [
        prop["value"]
        for override in p["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "custom.lineStyle"
    ]
    assert styles
    assert all(s["fill"] == "dash" for s in styles)


def test_recovery_actions_are_annotations() -> None:
    """Recovery actions and emergency aborts are drawn as annotations."""
    annotations = {a["name"]: a for a in load_dashboard()["annotations"]["list"]}
    assert "kernelwatch_recovery_last_timestamp_seconds" in annotations["Recovery actions"]["expr"]
    assert "kernelwatch_kernel_aborted" in annotations["Emergency aborts"]["expr"]


def test_provisioning_points_at_the_dashboard_folder() -> None:
    """The provisioning examples are valid YAML describing a file provider and a Prometheus."""
    provider = yaml.safe_load(
        (REPO / "grafana/provisioning/dashboards/kernelwatch.yaml").read_text(encoding="utf-8")
    )["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    source = yaml.safe_load(
        (REPO / "grafana/provisioning/datasources/prometheus.yaml").read_text(encoding="utf-8")
    )["datasources"][0]
    assert source["type"] == "prometheus"


@pytest.mark.integration
def test_real_prometheus_accepts_every_query(processes: Processes, tmp_path: Path) -> None:
    """Every dashboard and rule expression parses and evaluates in a real Prometheus."""
    url = start_prometheus(processes, tmp_path, name="prometheus-syntax")
    expressions = [
        (where, expand_grafana(expr, "(?:a|b)"))
        for where, expr in dashboard_expressions(load_dashboard())
    ] + rule_expressions(load_rules())
    failures = []
    for where, expr in expressions:
        answer = prometheus_query(url, expr)
        if answer.get("status") != "success":
            failures.append(f"{where}: {answer.get('error')}\n    {expr}")
    assert not failures, "\n".join(failures)
