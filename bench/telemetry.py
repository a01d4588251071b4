"""Telemetry sink benchmarks: records/s (buffered, and fsync every 1,000) and publish latency.

"fsync every 1,000 records" is ``flush_every_records=1000, fsync="interval",
fsync_interval_s=0``: a write of 1,000 whole lines followed by one fsync. (``fsync="always"``
would flush and fsync after every record.) Serialisation is included.

The targets are judged on the records the daemon writes: the six records of one scheduled
run of one check (RunScheduled, RunStarted, CheckStarted, CheckCompleted with eight labelled
measurements, CheckEvaluated, RunCompleted; 2.3 KB in all), repeated. The telemetry of the
end-to-end tests (1,120 records of 27 kinds) has the same shape: those six kinds are 71 % of
its records, CheckCompleted 11 %, and most other records are 0.15–0.4 KB. Two single kinds
are shown beside it: a ``ThresholdCrossed`` (0.4 KB, a typical event) and a
``CheckCompleted`` alone (1.2 KB, the heaviest kind, one per check run).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from checks.api import Measurement
from daemon.bus import EventBus
from daemon.clock import SystemClock
from daemon.config import TelemetrySettings
from daemon.events import (
    CheckCompleted,
    CheckEvaluated,
    CheckStarted,
    Event,
    RunCompleted,
    RunScheduled,
    RunStarted,
    ThresholdCrossed,
)
from daemon.telemetry import TelemetrySink

RECORDS = 50_000
RUNS = 3
LATENCY_EVENTS = 50_000
TARGET_BUFFERED = 200_000
TARGET_FSYNC_1000 = 100_000
TARGET_P99_S = 1e-3

BUFFERED = TelemetrySettings(fsync="never")
FSYNC_EVERY_1000 = TelemetrySettings(
    flush_every_records=1000, flush_every_s=3600.0, fsync="interval", fsync_interval_s=0.0
)


def check_completed(seq: int = 0) -> CheckCompleted:
    """A CheckCompleted the size of a daily performance run: 8 measurements with labels."""
    measurements = tuple(
        Measurement(
            name=name,
            value=value * (1 + (seq % 7) * 1e-3),
            unit=unit,
            labels={"kernel": "octahedral_attention", "batch": str(batch)},
        )
        for batch in (256, 1024)
        for name, value, unit in (
            ("latency_per_batch_seconds", 0.00512, "seconds"),
            ("peak_memory_bytes", 104_857_600.0, "bytes"),
            ("cache_efficiency_ratio", 0.953, "ratio"),
            ("memory_overhead_ratio", 0.12, "ratio"),
        )
    )
    return CheckCompleted(
        run_id=f"daily-20261122T010000Z-{seq:06d}",
        tier="daily",
        check="performance",
        duration_s=12.345,
        peak_rss_bytes=412_000_000,
        measurements=measurements,
    )


def threshold_crossed() -> ThresholdCrossed:
    """A ThresholdCrossed as the weekly tier publishes it (about 0.4 KB)."""
    return ThresholdCrossed(
        rule="geometric_ratio_drift",
        issue="geometric_drift",
        level="warning",
        measurement="geometric_ratio_drift_ratio",
        labels={"kernel": "octahedron", "batch": "256", "seed": "1234567"},
        value=0.0102,
        threshold=0.001,
        tier="weekly",
        check="geometry",
        run_id="weekly-20261122T000000Z-000001",
    )


def scheduled_run() -> tuple[Event, ...]:
    """The six records one scheduled run of the daily performance check writes, in order."""
    run_id = "daily-20261122T010000Z-000001"
    return (
        RunScheduled(
            run_id=run_id,
            tier="daily",
            trigger="schedule",
            scheduled_for="2026-11-22T01:00:00+00:00",
            window_end="2026-11-22T03:00:00+00:00",
        ),
        RunStarted(run_id=run_id, tier="daily", trigger="schedule", checks=("performance",)),
        CheckStarted(
            run_id=run_id,
            tier="daily",
            check="performance",
            pid=26659,
            deadline_s=300.0,
            seed=1260677954,
        ),
        check_completed(),
        CheckEvaluated(
            run_id=run_id,
            tier="daily",
            check="performance",
            status="ok",
            kernel_status={"octahedral_attention": "ok"},
        ),
        RunCompleted(run_id=run_id, tier="daily", status="ok", succeeded=True, duration_s=14.2),
    )


def _stamped_events(count: int, templates: Event | tuple[Event, ...]) -> list[Event]:
    """``count`` stamped copies of ``templates``, cycling through them in order."""
    start = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    cycle = templates if isinstance(templates, tuple) else (templates,)
    return [
        cycle[i % len(cycle)].stamped(
            at=start + timedelta(microseconds=i), seq=i + 1, host="bench-host"
        )
        for i in range(count)
    ]


def records_per_second(settings: TelemetrySettings, events: list[Event]) -> float:
    """Median records/s of feeding ``events`` to a fresh sink, close (flush + fsync) included."""
    rates = []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as tmp:
            sink = TelemetrySink(Path(tmp) / "telemetry", settings, SystemClock())
            began = time.perf_counter()
            for event in events:
                sink(event)
            sink.close()
            rates.append(len(events) / (time.perf_counter() - began))
    return statistics.median(rates)


def publish_latency() -> tuple[float, float]:
    """Median and p99 seconds of ``EventBus.publish`` of a ThresholdCrossed with only the
    telemetry sink (no fsync)."""
    event = threshold_crossed()
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        clock = SystemClock()
        sink = TelemetrySink(Path(tmp) / "telemetry", BUFFERED, clock)
        bus = EventBus(clock, host="bench-host")
        bus.subscribe("telemetry", sink)
        for _ in range(LATENCY_EVENTS):
            began = time.perf_counter_ns()
            bus.publish(event)
            samples.append(time.perf_counter_ns() - began)
        sink.close()
    samples.sort()
    return statistics.median(samples) / 1e9, samples[int(len(samples) * 0.99)] / 1e9


def serialisation_cost(events: list[Event]) -> tuple[float, float]:
    """Median seconds per record of ``to_json()`` (the sink's path) and of the exact
    ``orjson.dumps(to_record())`` it replaces, alternating in one run."""
    fast, exact = [], []
    for _ in range(RUNS):
        began = time.perf_counter()
        for event in events:
            event.to_json()
        fast.append((time.perf_counter() - began) / len(events))
        began = time.perf_counter()
        for event in events:
            orjson.dumps(event.to_record())
        exact.append((time.perf_counter() - began) / len(events))
    return statistics.median(fast), statistics.median(exact)


def telemetry_table() -> str:
    """Run the telemetry benchmarks and return them as a text table with targets."""
    rows: list[tuple[str, str, str, bool | None]] = []  # ok: None where no target
    run = scheduled_run()
    run_kb = sum(len(event.to_json()) + 1 for event in _stamped_events(len(run), run)) / 1000
    for label, template, judged in (
        (f"scheduled runs ({len(run)} records, {run_kb:.1f} KB)", run, True),
        ("0.4 KB ThresholdCrossed alone", threshold_crossed(), False),
        ("1.2 KB CheckCompleted alone", check_completed(), False),
    ):
        events = _stamped_events(RECORDS, template)
        to_json_s, exact_s = serialisation_cost(events)
        buffered = records_per_second(BUFFERED, events)
        synced = records_per_second(FSYNC_EVERY_1000, events)
        rows += [
            (
                f"records/s, buffered (fsync never), {label}",
                f"{buffered:,.0f}",
                f">= {TARGET_BUFFERED:,}" if judged else "",
                buffered >= TARGET_BUFFERED if judged else None,
            ),
            (
                f"records/s, fsync every 1,000, {label}",
                f"{synced:,.0f}",
                f">= {TARGET_FSYNC_1000:,}" if judged else "",
                synced >= TARGET_FSYNC_1000 if judged else None,
            ),
            ("  of which Event.to_json(), per record", f"{to_json_s * 1e6:.1f} us", "", None),
            (
                "  (orjson.dumps(to_record()) it replaces)",
                f"{exact_s * 1e6:.1f} us",
                "",
                None,
            ),
        ]
    median, p99 = publish_latency()
    rows += [
        ("publish -> telemetry sink, median", f"{median * 1e6:.1f} us", "", None),
        (
            "publish -> telemetry sink, p99",
            f"{p99 * 1e6:.1f} us",
            f"< {TARGET_P99_S * 1e3:.0f} ms",
            p99 < TARGET_P99_S,
        ),
    ]
    width = max(len(name) for name, *_ in rows)
    lines = [f"{'measure':<{width}}  {'value':>14}  {'target':<12}  ok"]
    for name, value, target, ok in rows:
        verdict = "" if ok is None else "yes" if ok else "NO"
        lines.append(f"{name:<{width}}  {value:>14}  {target:<12}  {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(telemetry_table())
