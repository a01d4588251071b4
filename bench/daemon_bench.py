"""Daemon benchmarks: publish → all sinks latency, and the idle daemon's RSS and CPU.

The latency is measured through a real EventBus with the real telemetry (fsync never),
metrics and log sinks subscribed, as the daemon wires them. Idle figures come from a real
`kernelwatch run` process with the default config, read from /proc after it settles.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.telemetry import check_completed
from daemon.bus import EventBus
from daemon.clock import SystemClock
from daemon.config import TelemetrySettings
from daemon.logs import LogSink, configure_logging
from daemon.metrics import MetricsSink
from daemon.telemetry import TelemetrySink

EVENTS = 20_000
IDLE_SETTLE_S = 5.0
IDLE_WINDOW_S = 10.0
ROOT = Path(__file__).resolve().parents[1]


def publish_latency() -> tuple[float, float]:
    """Median and p99 seconds to publish one CheckCompleted to telemetry, metrics and logs."""
    configure_logging("info", "json", stream=io.StringIO())  # render, but keep the terminal clean
    with tempfile.TemporaryDirectory() as folder:
        clock = SystemClock()
        telemetry = TelemetrySink(Path(folder), TelemetrySettings(fsync="never"), clock)
        bus = EventBus(clock)
        bus.subscribe("telemetry", telemetry)
        bus.subscribe("metrics", MetricsSink(CollectorRegistry(), version="bench"))
        bus.subscribe("log", LogSink())
        events = [check_completed(i) for i in range(EVENTS)]
        samples = []
        for event in events:
            start = time.perf_counter()
            bus.publish(event)
            samples.append(time.perf_counter() - start)
        telemetry.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def idle_footprint() -> tuple[int, float]:
    """RSS bytes and CPU share of a real idle daemon with the default config."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "kw.toml"
        config.write_text(f"[http]\nport = {_free_port()}\n")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "run",
                "--config",
                str(config),
                "--state-dir",
                str(Path(folder) / "state"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(IDLE_SETTLE_S)
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            rss = _rss_bytes(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return rss, cpu


def daemon_table() -> str:
    median, p99 = publish_latency()
    rss, cpu = idle_footprint()
    rows = [
        ("publish → all sinks, median", f"{median * 1e6:.1f} µs", ""),
        ("publish → all sinks, p99", f"{p99 * 1e6:.1f} µs", "< 1000 µs"),
        ("idle daemon RSS", f"{rss / 2**20:.1f} MiB", "< 70 MiB"),
        ("idle daemon CPU", f"{cpu * 100:.2f} %", ""),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measure'.ljust(width)}  {'value':>12}  target"]
    lines += [f"{a.ljust(width)}  {b:>12}  {c}" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(daemon_table())
