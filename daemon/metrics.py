"""The metrics sink: every metric kernelwatch exports, declared against an injected registry.

Metric names are an API (Grafana dashboards and alert rules are written against them), so
they are all declared here and listed in ``CORE_METRIC_NAMES``. ``MetricsSink`` is a bus
subscriber: it turns each event into counter/gauge/histogram updates through a dict of
event type → handler, and the daemon sets the few values that are not events (expected
period, next run, rules, restored open issues, active profile) through methods.

Measurements become gauges named ``kernelwatch_<measurement name>`` with the labels
``tier``, ``check``, ``kernel`` and ``batch`` only (other measurement labels stay in the
telemetry log, to bound cardinality). Two renames keep the exposition valid:

- a name that would collide with a core metric (or one of its ``_total``/``_created``/
  ``_bucket``/``_count``/``_sum``/``_info`` series) becomes ``kernelwatch_measurement_<name>``;
- a name ending in a suffix Prometheus reserves for counters, histograms and summaries
  (``_total``, ``_count``, ``_sum``, ``_bucket``, ``_created``, ``_info``) gets ``_value``
  appended (``nonzero_count`` → ``kernelwatch_nonzero_count_value``).

``measurement_metric_name`` is the one function that applies both rules.
"""

from __future__ import annotations

import contextlib
import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, final

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from checks.api import TIERS, Status
from daemon.config import Rule
from daemon.evaluator import VOLATILE_LABELS
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
    SubscriberFailed,
    ThresholdCleared,
    ThresholdCrossed,
)

log = structlog.get_logger("kernelwatch.metrics")

PREFIX: Final = "kernelwatch_"

# 0.1 s … 15 min, roughly ×2–×2.5 per step; 1800 s catches checks that overran a 900 s default.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
)  # fmt: skip

CHECK_STATUSES: Final[tuple[str, ...]] = tuple(s.label for s in Status)
RECOVERY_OUTCOMES: Final[tuple[str, ...]] = (
    "started", "succeeded", "failed", "ineffective", "skipped",
)  # fmt: skip

# Family names as they appear in the exposition (counters with their _total, Info with _info).
CORE_METRIC_NAMES: Final[frozenset[str]] = frozenset(
    {
        "kernelwatch_build_info",
        "kernelwatch_daemon_start_time_seconds",
        "kernelwatch_check_runs_total",
        "kernelwatch_check_duration_seconds",
        "kernelwatch_check_peak_rss_bytes",
        "kernelwatch_check_timeouts_total",
        "kernelwatch_check_crashes_total",
        "kernelwatch_tier_last_start_timestamp_seconds",
        "kernelwatch_tier_last_success_timestamp_seconds",
        "kernelwatch_tier_expected_period_seconds",
        "kernelwatch_tier_status",
        "kernelwatch_tier_next_run_timestamp_seconds",
        "kernelwatch_tier_runs_missed_total",
        "kernelwatch_tier_runs_dropped_total",
        "kernelwatch_kernel_status",
        "kernelwatch_open_issues",
        "kernelwatch_threshold_crossings_total",
        "kernelwatch_rule_threshold",
        "kernelwatch_events_published_total",
        "kernelwatch_subscriber_failures_total",
        "kernelwatch_telemetry_records_total",
        "kernelwatch_telemetry_bytes_total",
        "kernelwatch_telemetry_write_errors_total",
        "kernelwatch_telemetry_repairs_total",
        "kernelwatch_config_reloads_total",
        "kernelwatch_clock_jumps_total",
        "kernelwatch_run_queue_length",
        "kernelwatch_recovery_actions_total",
        "kernelwatch_recovery_last_timestamp_seconds",
        "kernelwatch_emergency_aborts_total",
        "kernelwatch_kernel_aborted",
        "kernelwatch_profile_info",
        "kernelwatch_fingerprint_changes_total",
        "kernelwatch_drills_injected_total",
    }
)

_RESERVED_SUFFIXES: Final = ("_total", "_created", "_bucket", "_count", "_sum", "_info")


def _series_names(family: str) -> set[str]:
    """Every name a core family can occupy, in either exposition format."""
    base = family.removesuffix("_total")
    return {family, base, f"{base}_total"} | {f"{base}{s}" for s in _RESERVED_SUFFIXES}


_RESERVED_NAMES: Final[frozenset[str]] = frozenset(
    name for family in CORE_METRIC_NAMES for name in _series_names(family)
)


def measurement_metric_name(measurement: str) -> str:
    """The exported gauge name for a measurement; see the module docstring for the two renames."""
    name = PREFIX + measurement
    if name in _RESERVED_NAMES:
        name = f"{PREFIX}measurement_{measurement}"
    if name.endswith(_RESERVED_SUFFIXES):
        name += "_value"
    return name


def _status_value(status: str) -> int:
    """Map a status label to 0..3; anything unrecognised is UNKNOWN, never an error."""
    try:
        return int(Status[status.upper()])
    except KeyError:
        return int(Status.UNKNOWN)


def _status_label(status: str) -> str:
    return status if status in CHECK_STATUSES else Status.UNKNOWN.label


_BreachKey = tuple[str, tuple[tuple[str, str], ...]]


def _breach_key(rule: str, labels: Mapping[str, str]) -> _BreachKey:
    # The evaluator's series identity: a crossing and its clearing carry different seeds.
    return (rule, tuple(sorted((k, v) for k, v in labels.items() if k not in VOLATILE_LABELS)))


_SeriesKey = tuple[tuple[str, str], ...]


@final
class _MeasurementCollector:
    """Scrape-time gauges for the latest measurement values (one family per measurement name).

    A series is labelled by tier, check and the measurement's own labels except the
    volatile ones (seed, profile id, run id), which change every run and would make
    every run a new series. Every other label tells series apart (the coherence check's
    ``size``, the runtime check's ``module``): dropping one would let their values
    overwrite each other. A family's label names are the union over its series; a
    series without one of them exports it as an empty string.
    """

    _FIRST: Final = ("tier", "check", "kernel", "batch")

    def __init__(self) -> None:
        # metric name → (help text, {series key: value}); written by the bus thread, read by
        # scrape threads, hence the lock and the snapshot in collect().
        self._values: dict[str, tuple[str, dict[_SeriesKey, float]]] = {}
        self._names: dict[str, str] = {}  # measurement name → metric name (cache of the renames)
        self._lock = threading.Lock()

    def update(self, tier: str, check: str, measurements: Iterable[Any]) -> None:
        with self._lock:
            for m in measurements:
                metric = self._names.get(m.name)
                if metric is None:
                    metric = self._names[m.name] = measurement_metric_name(m.name)
                entry = self._values.get(metric)
                if entry is None:
                    doc = f"Latest {m.name} reported by a check (unit: {m.unit})."
                    entry = self._values[metric] = (doc, {})
                key = tuple(
                    sorted(
                        (k, v)
                        for k, v in m.labels.items()
                        if k not in VOLATILE_LABELS and k not in ("tier", "check")
                    )
                )
                entry[1][(("check", check), ("tier", tier), *key)] = m.value

    def describe(self) -> list[Metric]:
        return []  # names are dynamic; measurement_metric_name keeps them off the core names

    def collect(self) -> list[Metric]:
        with self._lock:
            snapshot = [
                (name, doc, list(series.items())) for name, (doc, series) in self._values.items()
            ]
        families: list[Metric] = []
        for name, doc, series in snapshot:
            seen = {k for key, _ in series for k, _ in key}
            # tier, check, kernel and batch always, so dashboards can rely on them.
            names: list[str] = list(self._FIRST)
            names += sorted(seen - set(names))
            family = GaugeMetricFamily(name, doc, labels=names)
            for key, value in series:
                labels = dict(key)
                family.add_metric([labels.get(n, "") for n in names], value)
            families.append(family)
        return families


@final
class _CallbackCollector:
    """Scrape-time telemetry counters and run-queue length, read from the daemon's callbacks."""

    def __init__(
        self,
        telemetry_stats: Callable[[], Any] | None,
        queue_length: Callable[[], int] | None,
    ) -> None:
        self._telemetry_stats = telemetry_stats
        self._queue_length = queue_length

    _TELEMETRY: Final = (
        ("kernelwatch_telemetry_records", "records_written", "Telemetry records written."),
        ("kernelwatch_telemetry_bytes", "bytes_written", "Telemetry bytes written."),
        ("kernelwatch_telemetry_write_errors", "write_errors", "Telemetry write errors."),
        ("kernelwatch_telemetry_repairs", "repairs", "Torn telemetry files repaired on start."),
    )

    def describe(self) -> list[Metric]:
        families: list[Metric] = []
        if self._telemetry_stats is not None:
            families += [CounterMetricFamily(n, d) for n, _, d in self._TELEMETRY]
        if self._queue_length is not None:
            families.append(self._queue_family())
        return families

    @staticmethod
    def _queue_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "kernelwatch_run_queue_length", "Runs queued behind the running one."
        )

    def collect(self) -> list[Metric]:
        families: list[Metric] = []
        # A failing callback must not fail the whole scrape: log it and leave its series out.
        if self._telemetry_stats is not None:
            try:
                stats = self._telemetry_stats()
                for name, attr, doc in self._TELEMETRY:
                    families.append(
                        CounterMetricFamily(name, doc, value=float(getattr(stats, attr)))
                    )
            except Exception as exc:  # noqa: BLE001 - a scrape must survive a broken callback
                log.warning("telemetry_stats_failed", error=repr(exc))
                families = []
        if self._queue_length is not None:
            try:
                family = self._queue_family()
                family.add_metric([], float(self._queue_length()))
                families.append(family)
            except Exception as exc:  # noqa: BLE001 - as above
                log.warning("queue_length_failed", error=repr(exc))
        return families


@final
class MetricsSink:
    """Bus subscriber that keeps every kernelwatch metric up to date in ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str,
        telemetry_stats: Callable[[], Any] | None = None,
        queue_length: Callable[[], int] | None = None,
        start_time: float | None = None,
    ) -> None:
        self._registry: Final = registry
        r = registry
        tc = ("tier", "check")

        Info("kernelwatch_build", "Build of the running daemon.", registry=r).info(
            {"version": version, "python": platform.python_version()}
        )
        self.daemon_start_time = Gauge(
            "kernelwatch_daemon_start_time_seconds", "Unix time the daemon started.", registry=r
        )
        # Until DaemonStarted arrives, the sink's creation is the best estimate of the start.
        self.daemon_start_time.set(time.time() if start_time is None else start_time)

        self.check_runs = Counter(
            "kernelwatch_check_runs_total",
            "Evaluated check runs by status.",
            [*tc, "status"],
            registry=r,
        )
        self.check_duration = Histogram(
            "kernelwatch_check_duration_seconds",
            "Wall time of check runs, timeouts and crashes included.",
            tc,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.check_peak_rss = Gauge(
            "kernelwatch_check_peak_rss_bytes",
            "Peak RSS of the check's child process.",
            tc,
            registry=r,
        )
        self.check_timeouts = Counter(
            "kernelwatch_check_timeouts_total", "Checks killed at their deadline.", tc, registry=r
        )
        self.check_crashes = Counter(
            "kernelwatch_check_crashes_total", "Checks whose child crashed.", tc, registry=r
        )

        self.tier_last_start = Gauge(
            "kernelwatch_tier_last_start_timestamp_seconds",
            "Unix time the tier's last run started.",
            ["tier"],
            registry=r,
        )
        self.tier_last_success = Gauge(
            "kernelwatch_tier_last_success_timestamp_seconds",
            "Unix time the tier's last run finished with every check producing a result.",
            ["tier"],
            registry=r,
        )
        self.tier_expected_period = Gauge(
            "kernelwatch_tier_expected_period_seconds",
            "Expected seconds between runs of the tier (for dead-man's-switch alerts).",
            ["tier"],
            registry=r,
        )
        self.tier_status = Gauge(
            "kernelwatch_tier_status",
            "Status of the tier's last run: 0 ok, 1 warning, 2 critical, 3 unknown.",
            ["tier"],
            registry=r,
        )
        self.tier_next_run = Gauge(
            "kernelwatch_tier_next_run_timestamp_seconds",
            "Unix time of the tier's next scheduled run.",
            ["tier"],
            registry=r,
        )
        self.tier_runs_missed = Counter(
            "kernelwatch_tier_runs_missed_total",
            "Scheduled runs that could not be caught up.",
            ["tier"],
            registry=r,
        )
        self.tier_runs_dropped = Counter(
            "kernelwatch_tier_runs_dropped_total",
            "Queued runs dropped when their window closed.",
            ["tier"],
            registry=r,
        )
        self.kernel_status = Gauge(
            "kernelwatch_kernel_status",
            "Last verdict per kernel: 0 ok, 1 warning, 2 critical, 3 unknown.",
            ["tier", "kernel"],
            registry=r,
        )

        self.open_issues = Gauge(
            "kernelwatch_open_issues",
            "Rule breaches crossed and not yet cleared, per issue.",
            ["issue"],
            registry=r,
        )
        self.threshold_crossings = Counter(
            "kernelwatch_threshold_crossings_total",
            "Threshold crossings by rule and level.",
            ["rule", "issue", "level"],
            registry=r,
        )
        self.rule_threshold = Gauge(
            "kernelwatch_rule_threshold",
            "Configured rule thresholds (for dashboard threshold lines).",
            ["rule", "issue", "measurement", "level"],
            registry=r,
        )

        self.events_published = Counter(
            "kernelwatch_events_published_total",
            "Events seen on the bus, by type.",
            ["type"],
            registry=r,
        )
        self.subscriber_failures = Counter(
            "kernelwatch_subscriber_failures_total",
            "Exceptions raised by bus subscribers.",
            ["subscriber"],
            registry=r,
        )
        self.config_reloads = Counter(
            "kernelwatch_config_reloads_total",
            "Configuration reloads by result.",
            ["result"],
            registry=r,
        )
        self.clock_jumps = Counter(
            "kernelwatch_clock_jumps_total", "Wall-clock jumps detected.", registry=r
        )

        self.recovery_actions = Counter(
            "kernelwatch_recovery_actions_total",
            "Recovery procedure events by outcome.",
            ["procedure", "issue", "outcome"],
            registry=r,
        )
        self.recovery_last = Gauge(
            "kernelwatch_recovery_last_timestamp_seconds",
            "Unix time of the last recovery event by outcome.",
            ["procedure", "outcome"],
            registry=r,
        )
        self.emergency_aborts = Counter(
            "kernelwatch_emergency_aborts_total", "Emergency aborts.", registry=r
        )
        self.kernel_aborted = Gauge(
            "kernelwatch_kernel_aborted",
            "1 while the kernel is stopped by an emergency abort.",
            ["kernel"],
            registry=r,
        )
        self.profile_info = Gauge(
            "kernelwatch_profile_info",
            "1 for the active kernel profile.",
            ["profile_id"],
            registry=r,
        )
        self.fingerprint_changes = Counter(
            "kernelwatch_fingerprint_changes_total", "Environment fingerprint changes.", registry=r
        )
        self.drills_injected = Counter(
            "kernelwatch_drills_injected_total", "Fault drills injected.", ["fault"], registry=r
        )

        self._measurements = _MeasurementCollector()
        r.register(self._measurements)
        r.register(_CallbackCollector(telemetry_stats, queue_length))

        # Open breaches: key → issue; _restored holds per-issue counts restored without keys.
        self._open: dict[_BreachKey, str] = {}
        self._restored: dict[str, int] = {}
        self._issues_lock = threading.Lock()
        self._profile_lock = threading.Lock()

        # Series that exist from the start, so rate() and absent-free alerts work at once.
        for event_type in ALL_EVENT_TYPES:
            self.events_published.labels(event_type.type_name)
        for tier in TIERS:
            self.tier_runs_missed.labels(tier)
            self.tier_runs_dropped.labels(tier)
        for result in ("accepted", "rejected"):
            self.config_reloads.labels(result)

        self._handlers: Final[dict[type[Event], Callable[[Any], None]]] = {
            DaemonStarted: self._on_daemon_started,
            CheckStarted: self._on_check_started,
            CheckEvaluated: self._on_check_evaluated,
            CheckCompleted: self._on_check_completed,
            CheckTimedOut: self._on_check_timed_out,
            CheckCrashed: self._on_check_crashed,
            RunStarted: self._on_run_started,
            RunCompleted: self._on_run_completed,
            RunMissed: lambda e: self.tier_runs_missed.labels(e.tier).inc(),
            RunDropped: lambda e: self.tier_runs_dropped.labels(e.tier).inc(),
            ThresholdCrossed: self._on_threshold_crossed,
            ThresholdCleared: self._on_threshold_cleared,
            SubscriberFailed: lambda e: self.subscriber_failures.labels(e.subscriber).inc(),
            ConfigReloaded: lambda e: self.config_reloads.labels("accepted").inc(),
            ConfigRejected: lambda e: self.config_reloads.labels("rejected").inc(),
            ClockJumped: lambda e: self.clock_jumps.inc(),
            RecoveryStarted: lambda e: self._on_recovery(e, "started"),
            RecoverySucceeded: lambda e: self._on_recovery(e, "succeeded"),
            RecoveryFailed: lambda e: self._on_recovery(e, "failed"),
            RecoveryIneffective: lambda e: self._on_recovery(e, "ineffective"),
            RecoverySkipped: lambda e: self._on_recovery(e, "skipped"),
            EmergencyAborted: self._on_emergency_aborted,
            KernelsResumed: self._on_kernels_resumed,
            ProfileChanged: lambda e: self.set_profile(e.profile_id),
            FingerprintChanged: lambda e: self.fingerprint_changes.inc(),
            DrillInjected: lambda e: self.drills_injected.labels(e.fault).inc(),
        }

    # --- the bus subscriber ----------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Count ``event`` and apply its handler, if its type has one."""
        self.events_published.labels(event.type_name).inc()
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def render(self) -> bytes:
        """The registry in the Prometheus text format (0.0.4)."""
        return generate_latest(self._registry)

    # --- values the daemon sets ------------------------------------------------------------

    def set_expected_period(self, tier: str, seconds: float) -> None:
        self.tier_expected_period.labels(tier).set(seconds)

    def set_next_run(self, tier: str, when: datetime | None) -> None:
        """Set the tier's next run; ``None`` (disabled, nothing scheduled) removes the series."""
        if when is None:
            with contextlib.suppress(KeyError):
                self.tier_next_run.remove(tier)
            return
        self.tier_next_run.labels(tier).set(when.timestamp())

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Publish the configured thresholds; call again on reload (old rules disappear)."""
        self.rule_threshold.clear()
        for rule in rules:
            for level, value in (("warning", rule.warn), ("critical", rule.crit)):
                if value is not None:
                    self.rule_threshold.labels(rule.name, rule.issue, rule.measurement, level).set(
                        value
                    )
            # Every configured issue gets a series at 0, so "no open issue" is visible.
            with self._issues_lock:
                self.open_issues.labels(rule.issue).set(self._open_count(rule.issue))

    def restore_open_issues(self, open: Mapping[str, int]) -> None:
        """Set open-issue counts restored from state; later clears of those breaches count down.

        Without the breach keys, a later ``ThresholdCrossed`` for a restored breach (an
        escalation from warning to critical) cannot be told apart from a new one and counts
        again; a clear brings it back down.
        """
        with self._issues_lock:
            for issue, count in open.items():
                self._restored[issue] = max(0, int(count))
                self.open_issues.labels(issue).set(self._open_count(issue))

    def set_profile(self, profile_id: str) -> None:
        """Mark ``profile_id`` as the only active profile."""
        with self._profile_lock:
            self.profile_info.clear()
            self.profile_info.labels(profile_id).set(1)

    # --- handlers --------------------------------------------------------------------------

    def _on_daemon_started(self, e: DaemonStarted) -> None:
        self.daemon_start_time.set(e.at.timestamp())

    def declare_subscribers(self, names: Iterable[str]) -> None:
        """Start each subscriber's failure counter at 0, so increase() works from the start."""
        for name in names:
            self.subscriber_failures.labels(name)

    def _on_check_started(self, e: CheckStarted) -> None:
        # A check's counters exist from its first start: a panel or an alert on timeouts or
        # crashes then reads 0, not "no data", until one happens.
        for status in CHECK_STATUSES:
            self.check_runs.labels(e.tier, e.check, status)
        self.check_timeouts.labels(e.tier, e.check)
        self.check_crashes.labels(e.tier, e.check)

    def _on_check_evaluated(self, e: CheckEvaluated) -> None:
        # The only event counted in check_runs_total: the daemon evaluates timeouts and
        # crashes too (as unknown), so counting those events as well would count twice.
        self.check_runs.labels(e.tier, e.check, _status_label(e.status)).inc()
        for kernel, status in e.kernel_status.items():
            self.kernel_status.labels(e.tier, kernel).set(_status_value(status))

    def _on_check_completed(self, e: CheckCompleted) -> None:
        self.check_duration.labels(e.tier, e.check).observe(e.duration_s)
        self.check_peak_rss.labels(e.tier, e.check).set(e.peak_rss_bytes)
        self._measurements.update(e.tier, e.check, e.measurements)

    def _on_check_timed_out(self, e: CheckTimedOut) -> None:
        self.check_duration.labels(e.tier, e.check).observe(e.duration_s)
        self.check_timeouts.labels(e.tier, e.check).inc()

    def _on_check_crashed(self, e: CheckCrashed) -> None:
        self.check_duration.labels(e.tier, e.check).observe(e.duration_s)
        self.check_crashes.labels(e.tier, e.check).inc()

    def _on_run_started(self, e: RunStarted) -> None:
        self.tier_last_start.labels(e.tier).set(e.at.timestamp())

    def _on_run_completed(self, e: RunCompleted) -> None:
        self.tier_status.labels(e.tier).set(_status_value(e.status))
        if e.succeeded:
            self.tier_last_success.labels(e.tier).set(e.at.timestamp())

    def _open_count(self, issue: str) -> int:
        # Callers hold _issues_lock.
        keyed = sum(1 for i in self._open.values() if i == issue)
        return keyed + self._restored.get(issue, 0)

    def _on_threshold_crossed(self, e: ThresholdCrossed) -> None:
        self.threshold_crossings.labels(e.rule, e.issue, e.level).inc()
        with self._issues_lock:
            # Keyed by (rule, labels): an escalation of an open breach is not a new one.
            self._open[_breach_key(e.rule, e.labels)] = e.issue
            self.open_issues.labels(e.issue).set(self._open_count(e.issue))

    def _on_threshold_cleared(self, e: ThresholdCleared) -> None:
        with self._issues_lock:
            known = self._open.pop(_breach_key(e.rule, e.labels), None) is not None
            # Not seen crossing in this process: it may be one restored from state.
            if not known and self._restored.get(e.issue, 0) > 0:
                self._restored[e.issue] -= 1
            self.open_issues.labels(e.issue).set(self._open_count(e.issue))

    def _on_recovery(
        self,
        e: RecoveryStarted
        | RecoverySucceeded
        | RecoveryFailed
        | RecoveryIneffective
        | RecoverySkipped,
        outcome: str,
    ) -> None:
        self.recovery_actions.labels(e.procedure, e.issue, outcome).inc()
        self.recovery_last.labels(e.procedure, outcome).set(e.at.timestamp())

    def _on_emergency_aborted(self, e: EmergencyAborted) -> None:
        self.emergency_aborts.inc()
        for kernel in e.kernels:
            self.kernel_aborted.labels(kernel).set(1)

    def _on_kernels_resumed(self, e: KernelsResumed) -> None:
        for kernel in e.kernels:
            self.kernel_aborted.labels(kernel).set(0)


__all__ = [
    "CHECK_STATUSES",
    "CORE_METRIC_NAMES",
    "DURATION_BUCKETS",
    "MetricsSink",
    "measurement_metric_name",
]
