"""A child process for the kill -9 test: publishes events into a TelemetrySink in a tight loop."""

from __future__ import annotations

import sys
from pathlib import Path

from daemon.bus import EventBus
from daemon.clock import SystemClock
from daemon.config import TelemetrySettings
from daemon.events import DaemonStopping
from daemon.telemetry import TelemetrySink, last_sequence


def main(directory: Path, fsync: str) -> None:
    """Write until killed; small flushes and small files so a kill lands mid-everything."""
    clock = SystemClock()
    settings = TelemetrySettings(
        flush_every_records=7,
        flush_every_s=0.01,
        fsync="interval" if fsync == "interval" else "never",
        fsync_interval_s=0.05,
        rotate_bytes=256 * 1024,
    )
    sink = TelemetrySink(directory, settings, clock)
    bus = EventBus(clock, host="child", first_seq=last_sequence(directory) + 1)
    bus.subscribe("telemetry", sink)
    print("ready", flush=True)
    count = 0
    while True:
        bus.publish(DaemonStopping(reason="x" * (count % 300)))
        count += 1


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
