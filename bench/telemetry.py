"""Telemetry sink benchmarks: records/s (buffered, and fsync every 1,000) and publish latency.

"fsync every 1,000 records" is ``flush_every_records=1000, fsync="interval",
fsync_interval_s=0``: a write of 1,000 whole lines followed by one fsync. (``fsync="always"``
would flush and fsync after every record.) Two record sizes, serialisation included: a
``CheckCompleted`` with eight labelled measurements (1.2 KB, the heaviest kind of record,
one per check run) and a ``ThresholdCrossed`` (0.4 KB, the size of most records: run,
check, threshold and recovery events).
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
from daemon.events import CheckCompleted, Event, ThresholdCrossed
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


def _stamped_events(count: int, template: Event | None = None) -> list[Event]:
    start = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    template = template or check_completed()
    return [
        template.stamped(at=start + timedelta(microseconds=i), seq=i + 1, host="bench-host")
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
    """Median and p99 seconds of ``EventBus.publish`` with only the telemetry sink (no fsync)."""
    event = check_completed()
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
    rows: list[tuple[str, str, str, bool]] = []
    for label, template in (
        ("1.2 KB CheckCompleted", check_completed()),
        ("0.4 KB ThresholdCrossed", threshold_crossed()),
    ):
        events = _stamped_events(RECORDS, template)
        to_json_s, exact_s = serialisation_cost(events)
        buffered = records_per_second(BUFFERED, events)
        synced = records_per_second(FSYNC_EVERY_1000, events)
        rows += [
            (
                f"records/s, buffered (fsync never), {label}",
                f"{buffered:,.0f}",
                f">= {TARGET_BUFFERED:,}",
                buffered >= TARGET_BUFFERED,
            ),
            (
                f"records/s, fsync every 1,000, {label}",
                f"{synced:,.0f}",
                f">= {TARGET_FSYNC_1000:,}",
                synced >= TARGET_FSYNC_1000,
            ),
            ("  of which Event.to_json(), per record", f"{to_json_s * 1e6:.1f} us", "", True),
            (
                "  (orjson.dumps(to_record()) it replaces)",
                f"{exact_s * 1e6:.1f} us",
                "",
                True,
            ),
        ]
    median, p99 = publish_latency()
    rows += [
        ("publish -> telemetry sink, median", f"{median * 1e6:.1f} us", "", True),
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
        lines.append(f"{name:<{width}}  {value:>14}  {target:<12}  {'yes' if ok else 'NO'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(telemetry_table())
