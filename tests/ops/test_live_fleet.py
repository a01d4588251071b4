"""A real Prometheus scrapes two real daemons; every dashboard and rule query runs against it."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ops._support import (
    MEASUREMENT_METRICS,
    REPO,
    Processes,
    daemon_env,
    dashboard_expressions,
    expand_grafana,
    exposed_families,
    free_port,
    http_get,
    iter_panels,
    kernelwatch_script,
    load_dashboard,
    load_rules,
    prometheus_query,
    referenced_metrics,
    rule_expressions,
    start_prometheus,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAEMONS = 2
# The measurement gauges the dashboard shows come from these tiers' checks.
TIERS = ("daily", "weekly", "monthly")
_COMPLETED = re.compile(r'^kernelwatch_events_published_total\{type="RunCompleted"\} (\S+)$', re.M)


@dataclass(frozen=True)
class Fleet:
    """Two daemons that ran the daily, weekly and monthly tiers, and their Prometheus."""

    prometheus: str
    instances: tuple[str, ...]
    processes: Processes

    @property
    def instance_regex(self) -> str:
        """The regex Grafana substitutes for $instance, escaped for a PromQL string literal."""
        return "|".join(re.escape(i) for i in self.instances).replace("\\", "\\\\")


def kernelwatch(*args: str) -> None:
    """Run a one-shot kernelwatch command the way an operator would; it must succeed."""
    result = subprocess.run(
        [str(kernelwatch_script()), *args],
        cwd=REPO,
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"kernelwatch {' '.join(args)}: {result.stderr[-2000:]}"


def start_daemon(processes: Processes, root: Path, name: str) -> str:
    """Record a baseline, then start ``kernelwatch run`` with tiers queued; return host:port."""
    port = free_port()
    config = root / f"{name}.toml"
    # Every kernel and batch, so every panel has data, but fewer timed calls, no extra
    # rounds and a short pause before a re-timing: the fleet tests dashboards and metrics,
    # not the timings, and two daemons on two cores often cross a one-run baseline.
    config.write_text(
        f'[http]\nlisten = "127.0.0.1"\nport = {port}\n'
        "[checks.performance.options]\n"
        "repetitions = 12\nextra_timing_s = 0\nconfirm_after_s = 5.0\n",
        encoding="utf-8",
    )
    state = ("--config", str(config), "--state-dir", str(root / f"{name}-state"))
    # With a learned baseline the daily run reports its regression measurements too.
    kernelwatch("baseline", "record", "--runs", "1", *state)
    processes.start(
        name,
        [
            str(kernelwatch_script()),
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(root / f"{name}-state"),
            *(arg for tier in TIERS for arg in ("--run-now", tier)),
        ],
        cwd=REPO,
        env=daemon_env(),
    )
    return f"127.0.0.1:{port}"


def runs_completed(instance: str) -> float:
    """How many tier runs the daemon at ``instance`` has completed, per its own /metrics."""
    match = _COMPLETED.search(http_get(f"http://127.0.0.1:{instance.split(':')[1]}/metrics"))
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two daemons after one run of each tier in TIERS, scraped every second by Prometheus."""
    root = tmp_path_factory.mktemp("fleet")
    processes = Processes(root)
    try:
        instances = tuple(start_daemon(processes, root, f"daemon-{i}") for i in range(DAEMONS))
        url = start_prometheus(processes, root, name="prometheus", targets=instances)
        # Runs are serial (one check at a time); each run gets its own bounded wait, sized
        # for default options (a daily run of 25-50 s, plus a re-timing after a crossing).
        for done, tier in enumerate(TIERS, start=1):
            for instance in instances:

                def completed(instance: str = instance, done: int = done) -> bool:
                    return runs_completed(instance) >= done

                wait_until(
                    f"the daemon at {instance} to complete its {tier} run ({done} runs)",
                    completed,
                    timeout_s=180,
                    diagnostics=processes.logs,
                )
        # One drill on the first daemon: detection → ThresholdCrossed → recovery, verified.
        drilled = instances[0]
        kernelwatch(
            "inject",
            "radius_drift",
            "--yes",
            "--config",
            str(root / "daemon-0.toml"),
            "--state-dir",
            str(root / "daemon-0-state"),
        )
        # The repair's verification queues behind the daily run the profile change started.
        wait_until(
            f"the daemon at {drilled} to repair the drill",
            lambda: 'outcome="succeeded"' in http_get(f"http://{drilled}/metrics"),
            timeout_s=180,
            diagnostics=processes.logs,
        )
        # Then until Prometheus has a scrape of both taken after the runs completed.
        expr = f'kernelwatch_events_published_total{{type="RunCompleted"}} >= {len(TIERS)}'
        wait_until(
            "Prometheus to scrape both daemons after their runs",
            lambda: len(prometheus_query(url, expr)["data"]["result"]) == DAEMONS,
            diagnostics=processes.logs,
        )
        yield Fleet(prometheus=url, instances=instances, processes=processes)
    finally:
        processes.stop_all()


def test_both_daemons_are_scraped(fleet: Fleet) -> None:
    """The dashboard's instance variable query lists both daemons."""
    query = urllib.parse.urlencode({"match[]": "kernelwatch_build_info"})
    answer = json.loads(http_get(f"{fleet.prometheus}/api/v1/label/instance/values?{query}"))
    assert answer["status"] == "success"
    assert set(answer["data"]) == set(fleet.instances)
    up = prometheus_query(fleet.prometheus, 'up{job="kernelwatch"} == 1')["data"]["result"]
    assert len(up) == DAEMONS


def test_every_dashboard_and_rule_query_succeeds(fleet: Fleet) -> None:
    """Every PromQL expression in the dashboard and the rules runs without error on the fleet."""
    expressions = [
        (where, expand_grafana(expr, fleet.instance_regex))
        for where, expr in dashboard_expressions(load_dashboard())
    ] + rule_expressions(load_rules())
    failures = []
    for where, expr in expressions:
        answer = prometheus_query(fleet.prometheus, expr)
        if answer.get("status") != "success":
            failures.append(f"{where}: {answer.get('errorType')}: {answer.get('error')}\n  {expr}")
    assert not failures, "\n".join(failures)


def test_dashboard_instance_filter_selects_the_fleet(fleet: Fleet) -> None:
    """With $instance expanded, the tier status panel's query returns both daemons."""
    expr = expand_grafana('kernelwatch_tier_status{instance=~"$instance"}', fleet.instance_regex)
    result = prometheus_query(fleet.prometheus, expr)["data"]["result"]
    assert {r["metric"]["instance"] for r in result} == set(fleet.instances)


def test_every_referenced_metric_exists_in_the_daemons(fleet: Fleet) -> None:
    """Every kernelwatch_* name used by the dashboard or the rules is in the daemons' /metrics."""
    exposed: set[str] = set()
    for instance in fleet.instances:
        exposed |= exposed_families(http_get(f"http://127.0.0.1:{instance.split(':')[1]}/metrics"))
    used = referenced_metrics(
        dashboard_expressions(load_dashboard()) + rule_expressions(load_rules())
    )
    missing = sorted(set(used) - exposed)
    if missing:
        core = [n for n in missing if n not in MEASUREMENT_METRICS]
        measurements = [n for n in missing if n in MEASUREMENT_METRICS]
        lines = ["metric names used in grafana/ or prometheus/ but absent from /metrics:"]
        lines += [f"  core metric {n} (used by {', '.join(sorted(set(used[n])))})" for n in core]
        lines += [
            f"  measurement gauge {n} (provisional; used by {', '.join(sorted(set(used[n])))})"
            for n in measurements
        ]
        pytest.fail("\n".join(lines))


def test_every_panel_query_returns_data(fleet: Fleet) -> None:
    """Every query of every dashboard panel returns series from the fleet.

    Panels fed only by events (recovery actions, threshold crossings) need a drill or a
    breach; measurement panels need the checks that emit their gauges: the fleet ran a
    daily and a weekly tier and one drill, as a user's first day would.
    """
    empty = []
    for panel in iter_panels(load_dashboard()):
        for target in panel.get("targets", []):
            expr = expand_grafana(target["expr"], fleet.instance_regex)
            if not prometheus_query(fleet.prometheus, expr)["data"]["result"]:
                empty.append(f"  {panel['title']!r} ({target.get('refId', '?')}): {target['expr']}")
    assert not empty, "panel queries that return no series:\n" + "\n".join(empty)
