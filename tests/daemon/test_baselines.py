"""The baseline keeper: options for the check, learning the first run, fingerprint changes, CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from checks.api import Measurement
from checks.fingerprint import Fingerprint
from daemon.baselines import (
    BASELINE_RUNS,
    BaselineKeeper,
    pool_samples,
    record_command,
    show_command,
)
from daemon.clock import FakeClock
from daemon.config import load_config
from daemon.events import BaselineRecorded, CheckCompleted, Event, FingerprintChanged
from daemon.state_dir import StateLayout
from daemon.store import StateStore

FP = Fingerprint(
    cpu_model="Test CPU",
    cpu_count=2,
    os_name="Linux",
    os_release="6.1",
    machine="x86_64",
    python_version="3.11.2",
    mlx_version="0.32.4",
    numpy_version="2.0.0",
    scipy_version="1.17.1",
)
KEY = "octahedron/small/aggressive"
SAMPLES = {
    KEY: {
        "kernel": "octahedron",
        "batch": "small",
        "vectorization": "aggressive",
        "profile_id": "p1",
        "regressed": False,
        "latency_seconds": [0.005, 0.006],
        "ratio": [0.5, 0.6],
        "run_ratio_medians": [0.55],
        "calibration_seconds": [0.01, 0.01],
        "peak_memory_bytes": 1000,
    }
}


class Harness:
    """A keeper on a real store with a settable fingerprint and a list of published events."""

    def __init__(self, store: StateStore) -> None:
        self.fingerprint = FP
        self.events: list[Event] = []
        self.keeper = BaselineKeeper(
            store,
            FakeClock(datetime(2026, 1, 4, tzinfo=UTC)),
            publish=self.events.append,
            fingerprint=lambda: self.fingerprint,
        )

    def completed(
        self, fingerprint: Fingerprint, samples: Any = SAMPLES, calibration: str = "cal-1"
    ) -> None:
        """Deliver a CheckCompleted of the performance check to the keeper."""
        self.keeper.observe(
            CheckCompleted(
                run_id="r",
                tier="daily",
                check="performance",
                duration_s=1.0,
                peak_rss_bytes=1,
                measurements=(Measurement(name="x_count", value=1, unit="count"),),
                details={
                    "samples": samples,
                    "calibration": calibration,
                    "fingerprint": fingerprint.to_record(),
                    "digest": fingerprint.digest(),
                },
            )
        )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A Harness on a fresh store, closed afterwards."""
    with StateStore.open(tmp_path / "state.sqlite3") as store:
        yield Harness(store)


def test_options_say_missing_before_any_baseline(harness: Harness) -> None:
    """With nothing stored the check is told the baseline is missing; other checks get nothing."""
    assert harness.keeper.options_for("performance", "daily") == {
        "baseline": None,
        "baseline_state": "missing",
    }
    assert harness.keeper.options_for("geometry", "weekly") == {}


def test_first_run_records_a_baseline(harness: Harness) -> None:
    """The first completed run's samples become the baseline, and BaselineRecorded says so."""
    harness.completed(FP)
    (event,) = harness.events
    assert event == BaselineRecorded(fingerprint=FP.digest(), samples=2, reason="first run")
    baseline = harness.keeper.options_for("performance", "daily")["baseline"]
    assert baseline["entries"] == SAMPLES
    assert baseline["calibration"] == "cal-1"
    assert baseline["stale"] is False


def test_the_first_runs_are_pooled_into_the_baseline(harness: Harness) -> None:
    """Runs of the same profile pool into the baseline until it holds BASELINE_RUNS (5) runs;
    later runs leave it as it is."""
    medians = [0.55, 0.6, 0.65, 0.7, 0.75]
    assert len(medians) == BASELINE_RUNS
    for median in [*medians, 9.0]:
        run = {KEY: {**SAMPLES[KEY], "ratio": [median] * 2, "run_ratio_medians": [median]}}
        harness.completed(FP, run)
    assert [e.reason for e in harness.events if isinstance(e, BaselineRecorded)] == [
        "first run",
        *["pooled run"] * (BASELINE_RUNS - 1),
    ]
    baseline = harness.keeper.options_for("performance", "daily")["baseline"]
    entry = baseline["entries"][KEY]
    assert entry["run_ratio_medians"] == medians
    assert len(entry["latency_seconds"]) == 2 * BASELINE_RUNS
    assert baseline["runs"] == BASELINE_RUNS


@pytest.mark.parametrize(
    "change", [{"profile_id": "drilled"}, {"regressed": True}], ids=["profile", "regressed"]
)
def test_a_run_of_another_profile_or_a_regressed_run_is_not_pooled(
    harness: Harness, change: dict[str, Any]
) -> None:
    """A run under another profile (a drill), or one that found a regression, leaves the
    baseline as it is."""
    harness.completed(FP)
    harness.completed(FP, {KEY: {**SAMPLES[KEY], **change, "ratio": [9.0, 9.0]}})
    assert len(harness.events) == 1
    baseline = harness.keeper.options_for("performance", "daily")["baseline"]
    assert baseline["entries"][KEY]["ratio"] == [0.5, 0.6]


def test_a_run_far_faster_than_a_baseline_of_two_runs_is_not_pooled(harness: Harness) -> None:
    """A run faster than the baseline by more than its threshold (a passing state) joins
    a one-run baseline, which cannot tell which of the two is off, but not a baseline of
    two or more runs, whose level and spread it would pull."""
    faster = {KEY: {**SAMPLES[KEY], "faster_than_baseline": True, "ratio": [0.1, 0.1]}}
    harness.completed(FP)
    harness.completed(FP, faster)
    harness.completed(FP, faster)
    assert [e.reason for e in harness.events if isinstance(e, BaselineRecorded)] == [
        "first run",
        "pooled run",
    ]
    baseline = harness.keeper.options_for("performance", "daily")["baseline"]
    assert baseline["entries"][KEY]["ratio"] == [0.5, 0.6, 0.1, 0.1]


def test_a_run_with_other_calibration_workloads_starts_a_new_baseline(harness: Harness) -> None:
    """After an upgrade that changed the calibration workloads, the old baseline cannot be
    compared with: the next run replaces it and says why, and later runs pool into it."""
    harness.completed(FP)
    moved = {KEY: {**SAMPLES[KEY], "ratio": [2.0, 2.1]}}
    harness.completed(FP, moved, calibration="cal-2")
    assert harness.events[-1] == BaselineRecorded(
        fingerprint=FP.digest(), samples=2, reason="calibration changed"
    )
    baseline = harness.keeper.options_for("performance", "daily")["baseline"]
    assert baseline["calibration"] == "cal-2"
    assert baseline["entries"][KEY]["ratio"] == [2.0, 2.1]
    harness.completed(FP, moved, calibration="cal-2")
    assert harness.events[-1].reason == "pooled run"


def test_new_execution_mode_entries_are_added(harness: Harness) -> None:
    """A kernel × batch × mode the baseline lacks (conservative mode after a memory spike)
    is recorded from the run that first has it."""
    harness.completed(FP)
    conservative = {**SAMPLES[KEY], "vectorization": "conservative", "profile_id": "p2"}
    key = "octahedron/small/conservative:128"
    harness.completed(FP, {key: conservative})
    assert harness.events[-1] == BaselineRecorded(
        fingerprint=FP.digest(), samples=2, reason="new entries"
    )
    entries = harness.keeper.options_for("performance", "daily")["baseline"]["entries"]
    assert set(entries) == {KEY, key}


def test_fingerprint_change_is_an_event_and_marks_baselines_stale(harness: Harness) -> None:
    """A new MLX version publishes FingerprintChanged, keeps the old baseline as stale."""
    harness.completed(FP)
    upgraded = dataclasses.replace(FP, mlx_version="0.33.0")
    harness.fingerprint = upgraded
    assert harness.keeper.options_for("performance", "daily") == {
        "baseline": None,
        "baseline_state": "stale",
    }
    harness.completed(upgraded)
    changed, recorded = harness.events[1:]
    assert changed == FingerprintChanged(
        previous=FP.digest(), current=upgraded.digest(), changed_fields=("mlx_version",)
    )
    assert recorded == BaselineRecorded(
        fingerprint=upgraded.digest(), samples=2, reason="fingerprint changed"
    )
    stored = harness.keeper.baselines()
    assert stored[FP.digest()]["stale"] is True
    assert stored[upgraded.digest()]["stale"] is False


def test_other_checks_and_events_are_ignored(harness: Harness) -> None:
    """Completed runs of other checks leave the store alone."""
    harness.keeper.observe(
        CheckCompleted(
            run_id="r",
            tier="weekly",
            check="geometry",
            duration_s=1.0,
            peak_rss_bytes=1,
            measurements=(),
            details={"samples": SAMPLES, "fingerprint": FP.to_record()},
        )
    )
    assert harness.events == []
    assert harness.keeper.baselines() == {}


def test_pool_samples_concatenates_lists_and_takes_the_median_peak() -> None:
    """Pooling three runs concatenates their samples; the peak is the median run's."""
    runs: list[Mapping[str, Any]] = [
        {"k/small": {"latency_seconds": [float(i)], "ratio": [1.0], "peak_memory_bytes": peak}}
        for i, peak in enumerate((10, 30, 20))
    ]
    pooled = pool_samples(runs)
    assert pooled["k/small"]["latency_seconds"] == [0.0, 1.0, 2.0]
    assert pooled["k/small"]["peak_memory_bytes"] == 20
    # Pooling run by run gives the median over the runs too, not that of a median and a run.
    peaks: list[Mapping[str, Any]] = [
        {"k/small": {"ratio": [1.0], "peak_memory_bytes": p}} for p in (10, 12, 30)
    ]
    stepwise = pool_samples([pool_samples(peaks[:2]), peaks[2]])
    assert stepwise["k/small"]["peak_memory_bytes"] == 12


def test_show_lists_learned_and_configured_baselines(tmp_path: Path) -> None:
    """``baseline show`` prints stored baselines and configured figures, as text and JSON."""
    layout = StateLayout(tmp_path)
    layout.create()
    with StateStore.open(layout.database) as store:
        Harness(store).completed(FP)
    overlay = tmp_path / "config.toml"
    overlay.write_text(
        "[checks.performance.options.baselines.octahedron.small]\nlatency_seconds = 0.005\n"
    )
    config = load_config(overlay)
    out = io.StringIO()
    assert show_command(config, tmp_path, out, as_json=False) == 0
    text = out.getvalue()
    assert FP.digest() in text
    assert KEY in text
    assert "configured octahedron/small" in text
    out = io.StringIO()
    assert show_command(config, tmp_path, out, as_json=True) == 0
    payload = json.loads(out.getvalue())
    assert payload["current"] == FP.digest()
    assert payload["learned"][0]["entries"][KEY]["samples"] == 2
    assert payload["configured"]["octahedron"]["small"]["latency_seconds"] == 0.005


def test_show_gives_each_entrys_level_and_its_run_to_run_spread(tmp_path: Path) -> None:
    """The level is the geometric mean of the pooled runs' levels, the spread the sd of their
    logarithms: the figures the regression threshold is built from."""
    layout = StateLayout(tmp_path)
    layout.create()
    with StateStore.open(layout.database) as store:
        harness = Harness(store)
        for level in (0.5, 0.55):
            harness.completed(FP, {KEY: {**SAMPLES[KEY], "run_levels": [level]}})
    out = io.StringIO()
    assert show_command(load_config(), tmp_path, out, as_json=True) == 0
    entry = json.loads(out.getvalue())["learned"][0]["entries"][KEY]
    assert entry["level"] == pytest.approx(math.sqrt(0.5 * 0.55))
    assert entry["level_spread"] == pytest.approx(math.log(1.1) / math.sqrt(2))
    out = io.StringIO()
    assert show_command(load_config(), tmp_path, out, as_json=False) == 0
    assert "level 0.524 ±6.7 %" in out.getvalue()


def test_show_gives_the_learned_host_response_and_threshold_a_run_is_judged_by(
    tmp_path: Path,
) -> None:
    """β and the thresholds shown are those the check judges a run of the entry by; with
    ``host_response`` off there is no β to show."""
    from checks.performance import Rule, Timings, judge

    layout = StateLayout(tmp_path)
    layout.create()
    # The kernel's level follows its calibration's: the host's speed moved both.
    runs = ((0.50, 1.00), (0.56, 1.10), (0.53, 1.04))
    with StateStore.open(layout.database) as store:
        harness = Harness(store)
        for level, calibration in runs:
            sample = {
                **SAMPLES[KEY],
                "calibration_kind": "compute",
                "run_levels": [level],
                "run_calibration_levels": [calibration],
                "calibration_cpu_seconds": [calibration] * 4,
            }
            harness.completed(FP, {KEY: sample})
        stored = BaselineKeeper(store).baselines()[FP.digest()]["entries"]
    out = io.StringIO()
    assert show_command(load_config(), tmp_path, out, as_json=True) == 0
    shown = json.loads(out.getvalue())["learned"][0]["entries"][KEY]
    timings = Timings(kernel_cpu=[0.6] * 8, calibration_cpu=[1.0] * 8)
    rule = Rule.from_options({}, judge_first_pass_alone=False)
    judged = judge(stored, KEY, "octahedron", "compute", timings, rule)
    assert judged is not None
    assert 0 < shown["host_response"] == judged.judgement.host_response
    assert shown["regression_threshold_ratio"] == judged.judgement.threshold
    assert shown["retime_threshold_ratio"] == judged.judgement.retime_threshold
    out = io.StringIO()
    assert show_command(load_config(), tmp_path, out, as_json=False) == 0
    assert f"β {shown['host_response']:.2f}  threshold" in out.getvalue()

    overlay = tmp_path / "config.toml"
    overlay.write_text("[checks.performance.options]\nhost_response = false\n")
    out = io.StringIO()
    assert show_command(load_config(overlay), tmp_path, out, as_json=True) == 0
    assert json.loads(out.getvalue())["learned"][0]["entries"][KEY]["host_response"] == 0


def test_show_without_state_says_none(tmp_path: Path) -> None:
    """With no state yet, show says the first daily run will record one."""
    out = io.StringIO()
    assert show_command(load_config(), tmp_path / "empty", out, as_json=False) == 0
    assert "no learned baselines" in out.getvalue()


@pytest.mark.slow
def test_record_runs_the_check_in_children_and_stores_pooled_samples(tmp_path: Path) -> None:
    """``baseline record --runs 2`` runs the real check twice and stores 2× the samples."""
    overlay = tmp_path / "config.toml"
    overlay.write_text(
        "[checks.performance.options]\n"
        'kernels = ["fisher"]\nbatches = ["small"]\nrepetitions = 3\nwarmup = 1\n'
        "extra_timing_s = 0\n"
    )
    state = tmp_path / "state"
    out = io.StringIO()
    assert record_command(load_config(overlay), state, 2, out) == 0
    with StateStore.open(StateLayout(state).database) as store:
        keeper = BaselineKeeper(store)
        (record,) = keeper.baselines().values()
        options = keeper.options_for("performance", "daily")
    assert record["runs"] == 2
    entry = record["entries"]["fisher/small/aggressive"]
    assert len(entry["latency_seconds"]) == 6
    assert len(entry["run_ratio_medians"]) == 2
    assert options["baseline"]["digest"] == record["digest"]
    assert "2 runs" in record["reason"]


def test_record_refuses_zero_runs(tmp_path: Path) -> None:
    """A run count below one is a usage error."""
    out = io.StringIO()
    assert record_command(load_config(), tmp_path, 0, out) == 2


@pytest.mark.slow
def test_check_command_judges_against_the_recorded_baseline(tmp_path: Path) -> None:
    """``kernelwatch check`` compares with the learned baseline, and learns nothing itself."""
    from daemon.oneshot import run_once

    overlay = tmp_path / "config.toml"
    overlay.write_text(
        "[checks.performance.options]\n"
        'kernels = ["fisher"]\nbatches = ["small"]\nrepetitions = 3\nwarmup = 1\n'
        "extra_timing_s = 0\n"
    )
    config = load_config(overlay)
    state = tmp_path / "state"

    def names(payload: dict[str, Any]) -> set[str]:
        return {m["name"] for check in payload["checks"] for m in check["measurements"]}

    _, before = run_once(config, state, "performance")
    assert "normalized_slowdown_ratio" not in names(before)  # no baseline: nothing to judge
    assert "no baseline yet: this run records one" in before["checks"][0]["notes"]
    assert not StateLayout(state).database.exists()  # and the one-shot run wrote none
    assert record_command(config, state, 1, io.StringIO()) == 0
    _, after = run_once(config, state, "performance")
    assert {"normalized_slowdown_ratio", "performance_regression_ratio"} <= names(after)
    with StateStore.open(StateLayout(state).database) as store:
        (record,) = BaselineKeeper(store).baselines().values()
    assert record["runs"] == 1  # the one-shot runs were not pooled into it
