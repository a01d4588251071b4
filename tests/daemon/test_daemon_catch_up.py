"""The daemon catches up a run missed while it was down exactly once (fake clock, real store)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.config import load_config
from tests.helpers import telemetry_records, write_config

CONFIG = """
[http]
enabled = false
[checks.quick]
module = 'tests.fixtures.checks:Quick'
[tiers.daily]
checks = ['quick']
[tiers.weekly]
enabled = false
[tiers.monthly]
enabled = false
[tiers.quarterly]
enabled = false
[recovery]
enabled = false
"""


def start_and_stop(tmp_path: Path, clock: FakeClock) -> list[str]:
    """Start a daemon at the clock's time, let its queue drain, stop it; return new run triggers."""
    config = load_config(write_config(tmp_path / "kw.toml", CONFIG))
    daemon = Daemon(config=config, config_path=None, state_dir=tmp_path / "state", clock=clock)
    before = len(telemetry_records(tmp_path / "state"))
    daemon.start()
    assert daemon.wait_idle(timeout=60)
    daemon.request_stop("test")
    assert daemon.shutdown() == 0
    new = telemetry_records(tmp_path / "state")[before:]
    return [r["trigger"] for r in new if r["type"] == "RunScheduled"]


def test_missed_daily_run_is_caught_up_exactly_once(tmp_path: Path) -> None:
    """Down over 01:00, the daemon runs daily once at start; a second restart runs nothing."""
    clock = FakeClock(datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    assert start_and_stop(tmp_path, clock) == []  # first start ever: nothing was missed
    clock.set(datetime(2026, 3, 2, 3, 0, tzinfo=UTC))  # down from 00:30 to 03:00
    assert start_and_stop(tmp_path, clock) == ["catch_up"]
    clock.advance(300)
    assert start_and_stop(tmp_path, clock) == []


def test_run_missed_past_grace_is_reported_not_run(tmp_path: Path) -> None:
    """Down for longer than the catch-up grace, the daemon emits RunMissed instead of running."""
    clock = FakeClock(datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    start_and_stop(tmp_path, clock)
    clock.set(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # 8 h after 01:00; grace is 6 h
    assert start_and_stop(tmp_path, clock) == []
    missed = [r for r in telemetry_records(tmp_path / "state") if r["type"] == "RunMissed"]
    assert [r["scheduled_for"] for r in missed] == ["2026-03-02T01:00:00+00:00"]
