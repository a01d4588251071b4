"""Tests for the metrics sink: real events in, registry samples and exposition text out."""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from checks.api import Measurement
from daemon.bus import EventBus
from daemon.clock import FakeClock
from daemon.config import Rule
from daemon.events import (
    ALL_EVENT_TYPES,
    CheckCompleted,
    CheckCrashed,
    CheckEvaluated,
    CheckStarted,
    CheckTimedOut,
    ClockJumped,
    ConfigRejected,
    ConfigReloaded,
    DaemonStarted,
    DrillInjected,
    EmergencyAborted,
    Event,
    FingerprintChanged,
    KernelsResumed,
    ProfileChanged,
    RecoveryFailed,
    RecoveryIneffective,
    RecoverySkipped,
    RecoveryStarted,
    RecoverySucceeded,
    RunCompleted,
    RunDropped,
    RunMissed,
    RunStarted,
    ThresholdCleared,
    ThresholdCrossed,
)
from daemon.metrics import CORE_METRIC_NAMES, MetricsSink, measurement_metric_name
from tests.real_programs import require_program

T0 = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)


@dataclass(frozen=True)
class _Stats:
    records_written: int = 0
    bytes_written: int = 0
    write_errors: int = 0
    repairs: int = 0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def sink(registry: CollectorRegistry) -> MetricsSink:
    return MetricsSink(registry, version="1.2.3", start_time=123.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def bus(clock: FakeClock, sink: MetricsSink) -> EventBus:
    bus = EventBus(clock, host="test-host")
    bus.subscribe("metrics", sink)
    return bus


def _completed(
    tier: str = "daily", check: str = "perf", *measurements: Measurement, duration: float = 2.0
) -> CheckCompleted:
    return CheckCompleted(
        run_id="r1",
        tier=tier,
        check=check,
        duration_s=duration,
        peak_rss_bytes=50_000_000,
        measurements=measurements,
    )


def _latency(value: float, kernel: str = "octahedron", batch: str = "256") -> Measurement:
    return Measurement(
        name="latency_per_batch_seconds",
        value=value,
        unit="seconds",
        labels={"kernel": kernel, "batch": batch, "dtype": "float32"},
    )


def _crossed(rule: str = "cache", level: str = "warning", kernel: str = "k1") -> ThresholdCrossed:
    return ThresholdCrossed(
        rule=rule,
        issue="cache_miss",
        level=level,
        measurement="cache_efficiency_ratio",
        labels={"kernel": kernel},
        value=0.8,
        threshold=0.9,
        tier="daily",
        check="perf",
        run_id="r1",
    )


def _cleared(rule: str = "cache", kernel: str = "k1") -> ThresholdCleared:
    return ThresholdCleared(
        rule=rule,
        issue="cache_miss",
        measurement="cache_efficiency_ratio",
        labels={"kernel": kernel},
        value=0.95,
        tier="daily",
        check="perf",
        run_id="r2",
    )


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# --- build and daemon -----------------------------------------------------------------------


def test_build_info_carries_version_and_python(
    registry: CollectorRegistry, sink: MetricsSink
) -> None:
    """Build info is a gauge of 1 labelled with the daemon version."""
    text = sink.render().decode()
    assert 'kernelwatch_build_info{python="' in text
    assert 'version="1.2.3"' in text


def test_daemon_started_sets_start_time(bus: EventBus, registry: CollectorRegistry) -> None:
    """DaemonStarted replaces the construction-time estimate of the start time."""
    assert _value(registry, "kernelwatch_daemon_start_time_seconds") == 123.0
    bus.publish(DaemonStarted(version="1", pid=1, config_source="x", state_dir="var"))
    assert _value(registry, "kernelwatch_daemon_start_time_seconds") == T0.timestamp()


def test_every_event_counts_as_published(bus: EventBus, registry: CollectorRegistry) -> None:
    """Each event increments events_published_total for its type."""
    bus.publish(ClockJumped(expected="a", observed="b", delta_s=300.0))
    bus.publish(ClockJumped(expected="a", observed="b", delta_s=300.0))
    assert _value(registry, "kernelwatch_events_published_total", type="ClockJumped") == 2.0
    assert _value(registry, "kernelwatch_clock_jumps_total") == 2.0


def test_event_types_start_at_zero(registry: CollectorRegistry, sink: MetricsSink) -> None:
    """Every known event type has a published series from the start."""
    for event_type in ALL_EVENT_TYPES:
        value = _value(registry, "kernelwatch_events_published_total", type=event_type.type_name)
        assert value == 0.0


def test_subscriber_failure_is_counted(bus: EventBus, registry: CollectorRegistry) -> None:
    """A subscriber that raises shows up in subscriber_failures_total under its name."""

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    bus.subscribe("broken", broken)
    bus.publish(ConfigReloaded(source="a.toml", digest="abc"))
    assert _value(registry, "kernelwatch_subscriber_failures_total", subscriber="broken") == 1.0


def test_declared_subscribers_start_at_zero(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """Every declared subscriber has a failure series at 0 before anything fails."""
    sink.declare_subscribers(["telemetry", "recovery"])
    for name in ("telemetry", "recovery"):
        assert _value(registry, "kernelwatch_subscriber_failures_total", subscriber=name) == 0.0


def test_a_started_check_has_zeroed_run_timeout_and_crash_series(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """From a check's first start, its timeouts, crashes and runs per status read 0."""
    sink(CheckStarted(run_id="r1", tier="weekly", check="geometry", pid=1, deadline_s=60.0))
    labels = {"tier": "weekly", "check": "geometry"}
    assert _value(registry, "kernelwatch_check_timeouts_total", **labels) == 0.0
    assert _value(registry, "kernelwatch_check_crashes_total", **labels) == 0.0
    for status in ("ok", "warning", "critical", "unknown"):
        assert _value(registry, "kernelwatch_check_runs_total", **labels, status=status) == 0.0


def test_config_reloads_count_by_result(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """Accepted and rejected reloads are counted separately."""
    sink(ConfigReloaded(source="a.toml", digest="abc"))
    sink(ConfigRejected(source="a.toml", error="bad"))
    sink(ConfigRejected(source="a.toml", error="bad"))
    assert _value(registry, "kernelwatch_config_reloads_total", result="accepted") == 1.0
    assert _value(registry, "kernelwatch_config_reloads_total", result="rejected") == 2.0


# --- checks ---------------------------------------------------------------------------------


def test_check_runs_count_only_evaluations(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """A timed-out run is counted once, as unknown, from its CheckEvaluated."""
    sink(CheckTimedOut(run_id="r", tier="daily", check="perf", deadline_s=10.0, duration_s=10.0))
    sink(CheckEvaluated(run_id="r", tier="daily", check="perf", status="unknown"))
    labels = {"tier": "daily", "check": "perf"}
    assert _value(registry, "kernelwatch_check_runs_total", status="unknown", **labels) == 1.0
    assert _value(registry, "kernelwatch_check_timeouts_total", **labels) == 1.0


def test_unrecognised_status_counts_as_unknown(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """A status outside ok|warning|critical|unknown is exported as unknown."""
    sink(CheckEvaluated(run_id="r", tier="daily", check="perf", status="bogus"))
    value = _value(
        registry, "kernelwatch_check_runs_total", tier="daily", check="perf", status="unknown"
    )
    assert value == 1.0


def test_durations_fill_the_histogram(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """Completed, timed-out and crashed runs all observe their duration."""
    sink(_completed(duration=0.2))
    sink(CheckTimedOut(run_id="r", tier="daily", check="perf", deadline_s=900.0, duration_s=900.0))
    sink(
        CheckCrashed(
            run_id="r",
            tier="daily",
            check="perf",
            exit_code=None,
            signal=6,
            duration_s=1.0,
            error="",
        )
    )
    labels = {"tier": "daily", "check": "perf"}
    assert _value(registry, "kernelwatch_check_duration_seconds_count", **labels) == 3.0
    assert _value(registry, "kernelwatch_check_duration_seconds_sum", **labels) == 901.2
    assert _value(registry, "kernelwatch_check_duration_seconds_bucket", le="0.25", **labels) == 1.0
    assert _value(registry, "kernelwatch_check_crashes_total", **labels) == 1.0


def test_peak_rss_is_exported(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """CheckCompleted's peak RSS becomes the peak_rss_bytes gauge."""
    sink(_completed())
    value = _value(registry, "kernelwatch_check_peak_rss_bytes", tier="daily", check="perf")
    assert value == 50_000_000


def test_kernel_status_maps_to_numbers(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """Per-kernel verdicts become 0..3 gauges."""
    sink(
        CheckEvaluated(
            run_id="r",
            tier="daily",
            check="perf",
            status="critical",
            kernel_status={"a": "ok", "b": "critical"},
        )
    )
    assert _value(registry, "kernelwatch_kernel_status", tier="daily", kernel="a") == 0.0
    assert _value(registry, "kernelwatch_kernel_status", tier="daily", kernel="b") == 2.0


# --- measurements ---------------------------------------------------------------------------


def test_measurement_becomes_gauge_without_volatile_labels(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """A measurement is exported with tier, check and its own labels, less seed and profile id."""
    m = _latency(0.005)
    volatile = {**m.labels, "seed": "7", "profile_id": "abc123", "run_id": "r9"}
    sink(_completed("daily", "perf", replace(m, labels=volatile)))
    labels = {"tier": "daily", "check": "perf", "kernel": "octahedron", "batch": "256"}
    assert (
        _value(registry, "kernelwatch_latency_per_batch_seconds", **labels, dtype="float32")
        == 0.005
    )
    text = sink.render().decode()
    assert "seed=" not in text
    assert "profile_id=" not in text
    assert "run_id=" not in text


def test_series_that_differ_by_another_label_do_not_overwrite_each_other(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """Two sizes of one kernel are two series; one without the label exports it empty."""

    def deviation(value: float, **extra: str) -> Measurement:
        return Measurement(
            name="quantum_state_deviation_distance",
            value=value,
            unit="distance",
            labels={"kernel": "quantum", **extra},
        )

    sink(
        _completed("monthly", "coherence", deviation(1e-6, size="n16"), deviation(2e-6, size="n64"))
    )
    sink(_completed("monthly", "other", deviation(3e-6)))
    name = "kernelwatch_quantum_state_deviation_distance"
    base = {"tier": "monthly", "check": "coherence", "kernel": "quantum", "batch": ""}
    assert _value(registry, name, **base, size="n16") == 1e-6
    assert _value(registry, name, **base, size="n64") == 2e-6
    assert _value(registry, name, **{**base, "check": "other"}, size="") == 3e-6


def test_measurement_keeps_latest_value(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """A later run replaces the value for the same series."""
    sink(_completed("daily", "perf", _latency(0.005)))
    sink(_completed("daily", "perf", _latency(0.007)))
    labels = {"tier": "daily", "check": "perf", "kernel": "octahedron", "batch": "256"}
    labels["dtype"] = "float32"
    assert _value(registry, "kernelwatch_latency_per_batch_seconds", **labels) == 0.007


def test_measurement_without_labels_uses_empty_strings(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """Absent kernel and batch labels are exported as empty strings."""
    sink(
        _completed(
            "daily", "runtime", Measurement(name="startup_seconds", value=0.3, unit="seconds")
        )
    )
    labels = {"tier": "daily", "check": "runtime", "kernel": "", "batch": ""}
    assert _value(registry, "kernelwatch_startup_seconds", **labels) == 0.3


def test_non_finite_measurements_are_exported(sink: MetricsSink) -> None:
    """NaN and +Inf are rendered as Prometheus spells them."""
    sink(
        _completed(
            "daily", "perf", _latency(math.nan, batch="256"), _latency(math.inf, batch="512")
        )
    )
    text = sink.render().decode()
    assert 'batch="256",check="perf",dtype="float32",kernel="octahedron",tier="daily"} NaN' in text
    assert 'batch="512",check="perf",dtype="float32",kernel="octahedron",tier="daily"} +Inf' in text


def test_measurement_colliding_with_core_name_is_renamed() -> None:
    """A measurement named like a core metric moves under kernelwatch_measurement_."""
    assert measurement_metric_name("check_duration_seconds") == (
        "kernelwatch_measurement_check_duration_seconds"
    )
    assert measurement_metric_name("open_issues_count").endswith("_value")


def test_measurement_with_reserved_suffix_gets_value_suffix() -> None:
    """Names ending in a counter or histogram suffix get _value appended."""
    assert measurement_metric_name("nonzero_count") == "kernelwatch_nonzero_count_value"
    assert measurement_metric_name("flops_total") == "kernelwatch_flops_total_value"
    assert measurement_metric_name("cache_efficiency_ratio") == "kernelwatch_cache_efficiency_ratio"


def test_renamed_names_never_hit_core_names() -> None:
    """No measurement name maps onto a core metric family."""
    for core in CORE_METRIC_NAMES:
        name = core.removeprefix("kernelwatch_")
        assert measurement_metric_name(name) not in CORE_METRIC_NAMES


# --- tiers ----------------------------------------------------------------------------------


def test_tier_start_and_success_timestamps(
    bus: EventBus, clock: FakeClock, registry: CollectorRegistry
) -> None:
    """RunStarted and a succeeded RunCompleted set the dead-man's-switch timestamps."""
    bus.publish(RunStarted(run_id="r", tier="daily", trigger="cron", checks=("perf",)))
    clock.advance(60)
    bus.publish(
        RunCompleted(run_id="r", tier="daily", status="warning", succeeded=True, duration_s=60)
    )
    assert _value(registry, "kernelwatch_tier_last_start_timestamp_seconds", tier="daily") == (
        T0.timestamp()
    )
    assert _value(registry, "kernelwatch_tier_last_success_timestamp_seconds", tier="daily") == (
        T0.timestamp() + 60
    )
    assert _value(registry, "kernelwatch_tier_status", tier="daily") == 1.0


def test_failed_run_leaves_last_success(bus: EventBus, registry: CollectorRegistry) -> None:
    """A run that did not succeed sets the status but not the success timestamp."""
    bus.publish(
        RunCompleted(run_id="r", tier="weekly", status="unknown", succeeded=False, duration_s=1)
    )
    assert (
        _value(registry, "kernelwatch_tier_last_success_timestamp_seconds", tier="weekly") is None
    )
    assert _value(registry, "kernelwatch_tier_status", tier="weekly") == 3.0


def test_missed_and_dropped_runs_are_counted(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """RunMissed and RunDropped increment their per-tier counters."""
    sink(RunMissed(tier="daily", scheduled_for="x", reason="grace"))
    sink(RunDropped(run_id="r", tier="weekly", window_end="x"))
    assert _value(registry, "kernelwatch_tier_runs_missed_total", tier="daily") == 1.0
    assert _value(registry, "kernelwatch_tier_runs_dropped_total", tier="weekly") == 1.0
    assert _value(registry, "kernelwatch_tier_runs_missed_total", tier="monthly") == 0.0


def test_expected_period_and_next_run(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """The daemon sets the expected period and next run; None removes the next run."""
    sink.set_expected_period("daily", 86400.0)
    sink.set_next_run("daily", T0 + timedelta(days=1))
    assert _value(registry, "kernelwatch_tier_expected_period_seconds", tier="daily") == 86400.0
    assert _value(registry, "kernelwatch_tier_next_run_timestamp_seconds", tier="daily") == (
        T0.timestamp() + 86400
    )
    sink.set_next_run("daily", None)
    sink.set_next_run("weekly", None)
    assert _value(registry, "kernelwatch_tier_next_run_timestamp_seconds", tier="daily") is None


# --- issues and rules -----------------------------------------------------------------------


def test_escalation_does_not_double_count(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """A warning escalating to critical for the same rule and labels is one open breach."""
    sink(_crossed(level="warning"))
    sink(_crossed(level="critical"))
    assert _value(registry, "kernelwatch_open_issues", issue="cache_miss") == 1.0
    crossings = "kernelwatch_threshold_crossings_total"
    assert _value(registry, crossings, rule="cache", issue="cache_miss", level="critical") == 1.0


def test_distinct_breaches_add_up_and_clear(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """Breaches with different labels count separately and clear one by one."""
    sink(_crossed(kernel="k1"))
    sink(_crossed(kernel="k2"))
    assert _value(registry, "kernelwatch_open_issues", issue="cache_miss") == 2.0
    sink(_cleared(kernel="k1"))
    assert _value(registry, "kernelwatch_open_issues", issue="cache_miss") == 1.0
    sink(_cleared(kernel="k1"))
    assert _value(registry, "kernelwatch_open_issues", issue="cache_miss") == 1.0


def test_breach_clears_when_its_seed_differs(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """A breach raised on one run's seed clears on another's: seeds are not series identity."""
    sink(replace(_crossed(), labels={"kernel": "k1", "seed": "1", "profile_id": "p1"}))
    assert _value(registry, "kernelwatch_open_issues", issue="cache_miss") == 1.0
    sink(replace(_cleared(), labels={"kernel": "k1", "seed": "2", "profile_id": "p1"}))
    assert _value(registry, "kernelwatch_open_issues", issue="cache_miss") == 0.0


def test_restored_open_issues_count_down(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """Open issues restored at start are exported and cleared by later clears."""
    sink.restore_open_issues({"cache_miss": 2})
    assert _value(registry, "kernelwatch_open_issues", issue="cache_miss") == 2.0
    sink(_cleared(kernel="k9"))
    sink(_cleared(kernel="k8"))
    sink(_cleared(kernel="k7"))
    assert _value(registry, "kernelwatch_open_issues", issue="cache_miss") == 0.0


def test_set_rules_replaces_thresholds(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """Rule thresholds are exported per level, and a reload removes rules that went away."""
    old = Rule(name="old", measurement="m_ratio", issue="cache_miss", direction="below", warn=0.9)
    new = Rule(name="new", measurement="x_ratio", issue="memory_spike", warn=0.45, crit=0.6)
    sink.set_rules([old])
    sink.set_rules([new])
    name = "kernelwatch_rule_threshold"
    labels = {"rule": "new", "issue": "memory_spike", "measurement": "x_ratio"}
    assert _value(registry, name, level="warning", **labels) == 0.45
    assert _value(registry, name, level="critical", **labels) == 0.6
    gone = {"rule": "old", "issue": "cache_miss", "measurement": "m_ratio", "level": "warning"}
    assert _value(registry, name, **gone) is None
    assert _value(registry, "kernelwatch_open_issues", issue="memory_spike") == 0.0


# --- recovery and profile -------------------------------------------------------------------


def test_recovery_outcomes_are_counted(bus: EventBus, registry: CollectorRegistry) -> None:
    """Each recovery event counts under its outcome and stamps its last time."""
    p, i = "revert_to_stable_checkpoint", "coherence_loss"
    bus.publish(RecoveryStarted(attempt_id="a", procedure=p, issue=i, attempt=1, trigger="t"))
    bus.publish(RecoverySucceeded(attempt_id="a", procedure=p, issue=i))
    bus.publish(RecoveryFailed(attempt_id="a", procedure=p, issue=i, error="e"))
    bus.publish(RecoveryIneffective(attempt_id="a", procedure=p, issue=i, attempts_in_window=2))
    bus.publish(RecoverySkipped(procedure=p, issue=i, reason="cooldown"))
    for outcome in ("started", "succeeded", "failed", "ineffective", "skipped"):
        labels = {"procedure": p, "issue": i, "outcome": outcome}
        assert _value(registry, "kernelwatch_recovery_actions_total", **labels) == 1.0
    last = _value(
        registry, "kernelwatch_recovery_last_timestamp_seconds", procedure=p, outcome="failed"
    )
    assert last == T0.timestamp()


def test_abort_and_resume_flip_kernel_aborted(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """EmergencyAborted sets its kernels to 1 and KernelsResumed back to 0."""
    sink(EmergencyAborted(issue="x", kernels=("a", "b"), checkpoint_id="c", stop_command_exit=0))
    assert _value(registry, "kernelwatch_emergency_aborts_total") == 1.0
    assert _value(registry, "kernelwatch_kernel_aborted", kernel="b") == 1.0
    sink(KernelsResumed(kernels=("b",)))
    assert _value(registry, "kernelwatch_kernel_aborted", kernel="a") == 1.0
    assert _value(registry, "kernelwatch_kernel_aborted", kernel="b") == 0.0


def test_profile_info_shows_only_active_profile(
    sink: MetricsSink, registry: CollectorRegistry
) -> None:
    """ProfileChanged leaves only the new profile's series."""
    sink.set_profile("p1")
    sink(ProfileChanged(profile_id="p2", previous_id="p1", cause="recovery"))
    assert _value(registry, "kernelwatch_profile_info", profile_id="p1") is None
    assert _value(registry, "kernelwatch_profile_info", profile_id="p2") == 1.0


def test_fingerprint_and_drills_are_counted(sink: MetricsSink, registry: CollectorRegistry) -> None:
    """FingerprintChanged and DrillInjected increment their counters."""
    sink(FingerprintChanged(previous="a", current="b", changed_fields=("mlx",)))
    sink(DrillInjected(fault="nan_params", profile_id="p"))
    assert _value(registry, "kernelwatch_fingerprint_changes_total") == 1.0
    assert _value(registry, "kernelwatch_drills_injected_total", fault="nan_params") == 1.0


# --- scrape-time callbacks ------------------------------------------------------------------


def test_telemetry_stats_are_read_at_scrape(registry: CollectorRegistry) -> None:
    """Telemetry counters come from the callback each time the registry is collected."""
    stats = [_Stats(records_written=10, bytes_written=2048, write_errors=1, repairs=1)]
    MetricsSink(registry, version="1", telemetry_stats=lambda: stats[-1], queue_length=lambda: 3)
    assert _value(registry, "kernelwatch_telemetry_records_total") == 10.0
    stats.append(_Stats(records_written=11, bytes_written=4096))
    assert _value(registry, "kernelwatch_telemetry_records_total") == 11.0
    assert _value(registry, "kernelwatch_telemetry_bytes_total") == 4096.0
    assert _value(registry, "kernelwatch_run_queue_length") == 3.0


def test_broken_callback_does_not_break_scrape(registry: CollectorRegistry) -> None:
    """A callback that raises drops its series and leaves the rest of the scrape intact."""

    def broken() -> int:
        raise OSError("gone")

    sink = MetricsSink(registry, version="1", telemetry_stats=broken, queue_length=broken)
    text = sink.render().decode()
    assert "kernelwatch_telemetry_records_total" not in text
    assert "kernelwatch_build_info" in text


# --- the whole exposition -------------------------------------------------------------------


def _realistic(bus: EventBus, clock: FakeClock, sink: MetricsSink) -> None:
    """Drive a sink through a day in the life of the daemon."""
    sink.set_rules(
        [
            Rule(
                name="cache",
                measurement="cache_efficiency_ratio",
                issue="cache_miss",
                direction="below",
                warn=0.9,
            )
        ]
    )
    sink.set_expected_period("daily", 86400)
    sink.set_next_run("daily", T0 + timedelta(days=1))
    sink.set_profile("p1")
    bus.publish(DaemonStarted(version="1", pid=1, config_source="x", state_dir="var"))
    bus.publish(RunStarted(run_id="r", tier="daily", trigger="cron", checks=("perf", "runtime")))
    measurements = [
        Measurement(name=n, value=v, unit=u, labels={"kernel": k, "batch": b})
        for k in ("octahedron", "fisher", "density")
        for b in ("256", "512", "1024")
        for n, v, u in (
            ("latency_per_batch_seconds", 0.005, "seconds"),
            ("cache_efficiency_ratio", 0.85, "ratio"),
            ("iterations_count", 10, "count"),
            ("drift_radians", math.nan, "radians"),
        )
    ]
    bus.publish(_completed("daily", "perf", *measurements))
    bus.publish(CheckEvaluated(run_id="r", tier="daily", check="perf", status="warning",
                               kernel_status={"octahedron": "warning"}))  # fmt: skip
    bus.publish(_crossed())
    bus.publish(
        CheckTimedOut(run_id="r", tier="daily", check="runtime", deadline_s=5, duration_s=5)
    )
    bus.publish(CheckEvaluated(run_id="r", tier="daily", check="runtime", status="unknown"))
    clock.advance(30)
    bus.publish(
        RunCompleted(run_id="r", tier="daily", status="unknown", succeeded=False, duration_s=30)
    )
    bus.publish(
        RecoveryStarted(attempt_id="a", procedure="p", issue="cache_miss", attempt=1, trigger="t")
    )
    bus.publish(
        EmergencyAborted(issue="x", kernels=("fisher",), checkpoint_id="c", stop_command_exit=None)
    )


def test_exposition_parses_and_names_are_unique(
    bus: EventBus, clock: FakeClock, sink: MetricsSink
) -> None:
    """The rendered text parses, with every family name appearing once."""
    _realistic(bus, clock, sink)
    names = [f.name for f in text_string_to_metric_families(sink.render().decode())]
    assert len(names) == len(set(names))
    assert "kernelwatch_iterations_count_value" in names


def test_every_core_metric_is_rendered(registry: CollectorRegistry) -> None:
    """With both callbacks wired, every name in CORE_METRIC_NAMES is in the exposition."""
    sink = MetricsSink(registry, version="1", telemetry_stats=_Stats, queue_length=lambda: 0)
    text = sink.render().decode()
    for name in CORE_METRIC_NAMES:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


def test_promtool_finds_no_problems(
    bus: EventBus, clock: FakeClock, registry: CollectorRegistry, sink: MetricsSink
) -> None:
    """promtool check metrics accepts the exposition after a realistic event sequence."""
    promtool = require_program("promtool", package="prometheus")
    _realistic(bus, clock, sink)
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=sink.render(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
