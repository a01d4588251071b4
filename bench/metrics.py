"""Metrics benchmarks: ``/metrics`` render time with a realistic registry, and publish latency.

The registry holds what the default checks produce: 3 kernels × 3 batch configs × 20
measurement names from the daily performance check, every tier's runs, evaluations, rule
thresholds, open issues, recovery and abort series, plus the telemetry and queue callbacks.
Rendering is ``MetricsSink.render()`` (``generate_latest``), which is what ``/metrics``
serves; HTTP overhead is not included.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from checks.api import TIERS, Measurement
from daemon.bus import EventBus
from daemon.clock import FakeClock
from daemon.config import load_config
from daemon.events import (
    CheckCompleted,
    CheckEvaluated,
    ConfigReloaded,
    EmergencyAborted,
    RecoveryStarted,
    RecoverySucceeded,
    RunCompleted,
    RunStarted,
    ThresholdCrossed,
)
from daemon.metrics import MetricsSink

KERNELS = ("octahedral_attention", "fisher_metric", "density_evolution")
BATCHES = ("256", "512", "1024")
MEASUREMENT_NAMES = 20
RENDERS = 300
LATENCY_EVENTS = 20_000
TARGET_RENDER_S = 10e-3
TARGET_P99_S = 1e-3


@dataclass(frozen=True)
class _Stats:
    records_written: int = 123_456
    bytes_written: int = 98_765_432
    write_errors: int = 0
    repairs: int = 1


def _measurements(seq: int = 0) -> tuple[Measurement, ...]:
    units = ("seconds", "bytes", "ratio", "radians", "score")
    return tuple(
        Measurement(
            name=f"bench_metric_{i:02d}_{units[i % len(units)]}",
            value=1.0 + i + seq * 1e-3,
            unit=units[i % len(units)],
            labels={"kernel": kernel, "batch": batch, "dtype": "float32"},
        )
        for kernel in KERNELS
        for batch in BATCHES
        for i in range(MEASUREMENT_NAMES)
    )


def realistic_sink() -> MetricsSink:
    """A sink fed the events of one of each tier's runs, with the default config's rules."""
    clock = FakeClock(datetime(2026, 11, 22, 1, 0, tzinfo=UTC))
    sink = MetricsSink(
        CollectorRegistry(), version="0.1.0", telemetry_stats=_Stats, queue_length=lambda: 1
    )
    bus = EventBus(clock, host="bench-host")
    bus.subscribe("metrics", sink)
    sink.set_rules(load_config().rules)
    sink.set_profile("profile-0001")
    bus.publish(ConfigReloaded(source="<embedded>", digest="abc"))
    for n, tier in enumerate(TIERS):
        sink.set_expected_period(tier, 86400.0 * 7**n)
        sink.set_next_run(tier, clock.now())
        run_id = f"{tier}-1"
        checks = ("performance", "runtime") if tier == "daily" else (f"{tier}_suite",)
        bus.publish(RunStarted(run_id=run_id, tier=tier, trigger="cron", checks=checks))
        for check in checks:
            measurements = _measurements() if check == "performance" else ()
            bus.publish(
                CheckCompleted(
                    run_id=run_id,
                    tier=tier,
                    check=check,
                    duration_s=12.0,
                    peak_rss_bytes=400_000_000,
                    measurements=measurements,
                )
            )
            kernel_status = dict.fromkeys(KERNELS, "ok")
            bus.publish(
                CheckEvaluated(
                    run_id=run_id, tier=tier, check=check, status="ok", kernel_status=kernel_status
                )
            )
        bus.publish(
            RunCompleted(run_id=run_id, tier=tier, status="ok", succeeded=True, duration_s=30.0)
        )
    for kernel in KERNELS:
        bus.publish(
            ThresholdCrossed(
                rule="cache_efficiency", issue="cache_miss", level="warning",
                measurement="cache_efficiency_ratio", labels={"kernel": kernel}, value=0.85,
                threshold=0.9, tier="daily", check="performance", run_id="daily-1",
            )
        )  # fmt: skip
    bus.publish(
        RecoveryStarted(
            attempt_id="a1", procedure="optimize_memory_patterns", issue="cache_miss", attempt=1,
            trigger="cache_miss",
        )
    )  # fmt: skip
    bus.publish(
        RecoverySucceeded(attempt_id="a1", procedure="optimize_memory_patterns", issue="cache_miss")
    )
    bus.publish(
        EmergencyAborted(issue="x", kernels=KERNELS[:1], checkpoint_id="c", stop_command_exit=0)
    )
    return sink


def render_times(sink: MetricsSink) -> tuple[float, float, int]:
    """Median and p99 seconds of rendering, and the size of one exposition in bytes."""
    size = len(sink.render())
    samples = []
    for _ in range(RENDERS):
        began = time.perf_counter()
        sink.render()
        samples.append(time.perf_counter() - began)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)], size


def publish_latency() -> tuple[float, float]:
    """Median and p99 seconds of ``EventBus.publish`` of a 180-measurement CheckCompleted."""
    sink = MetricsSink(CollectorRegistry(), version="0.1.0")
    bus = EventBus(FakeClock(datetime(2026, 11, 22, tzinfo=UTC)), host="bench-host")
    bus.subscribe("metrics", sink)
    event = CheckCompleted(
        run_id="daily-1",
        tier="daily",
        check="performance",
        duration_s=12.0,
        peak_rss_bytes=400_000_000,
        measurements=_measurements(),
    )
    samples = []
    for _ in range(LATENCY_EVENTS):
        began = time.perf_counter_ns()
        bus.publish(event)
        samples.append(time.perf_counter_ns() - began)
    samples.sort()
    return statistics.median(samples) / 1e9, samples[int(len(samples) * 0.99)] / 1e9


def metrics_table() -> str:
    """Run the metrics benchmarks and return them as a text table with targets."""
    sink = realistic_sink()
    median, p99, size = render_times(sink)
    series = sum(1 for line in sink.render().splitlines() if not line.startswith(b"#"))
    pub_median, pub_p99 = publish_latency()
    target = f"< {TARGET_RENDER_S * 1e3:.0f} ms"
    rows = [
        (f"/metrics render ({series:,} series, {size / 1024:.0f} KiB), median",
         f"{median * 1e3:.2f} ms", target, median < TARGET_RENDER_S),
        ("/metrics render, p99", f"{p99 * 1e3:.2f} ms", target, p99 < TARGET_RENDER_S),
        ("publish -> metrics sink (180 measurements), median",
         f"{pub_median * 1e6:.1f} us", "", True),
        ("publish -> metrics sink (180 measurements), p99", f"{pub_p99 * 1e6:.1f} us",
         f"< {TARGET_P99_S * 1e3:.0f} ms", pub_p99 < TARGET_P99_S),
    ]  # fmt: skip
    width = max(len(name) for name, *_ in rows)
    lines = [f"{'measure':<{width}}  {'value':>12}  {'target':<8}  ok"]
    for name, value, goal, ok in rows:
        lines.append(f"{name:<{width}}  {value:>12}  {goal:<8}  {'yes' if ok else 'NO'}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(metrics_table())
