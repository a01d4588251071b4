"""The daemon catches up a run missed while it was down exactly once (fake clock, real store).

The same holds for runs a stop interrupted: queued or running when the daemon stopped (or
was killed), they run again once at the next start within the grace, or are reported missed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.config import load_config
from daemon.state_dir import StateLayout
from daemon.store import StateStore
from tests.helpers import telemetry_records, types_of, wait_until, write_config

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


# Weekly and monthly both fire on the first Sunday of a month at 00:00; weekly hangs.
SUNDAY = """
[http]
enabled = false
[daemon]
shutdown_grace_s = 0.5
[runner]
kill_grace_s = 0.5
[checks.quick]
module = 'tests.fixtures.checks:Quick'
[checks.sleep_forever]
module = 'tests.fixtures.checks:SleepForever'
timeout_s = 3600.0
[tiers.daily]
enabled = false
[tiers.weekly]
checks = ['{weekly}']
[tiers.monthly]
checks = ['quick']
[tiers.quarterly]
enabled = false
[recovery]
enabled = false
"""


def start_and_stop(tmp_path: Path, clock: FakeClock, text: str = CONFIG) -> list[str]:
    """Start a daemon at the clock's time, let its queue drain, stop it; return new run triggers."""
    config = load_config(write_config(tmp_path / "kw.toml", text))
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


def test_run_killed_mid_check_is_run_again_once(tmp_path: Path) -> None:
    """A cron run left started by kill -9 runs again once at the next start within grace."""
    clock = FakeClock(datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    start_and_stop(tmp_path, clock)
    # What kill -9 during the 01:00 run leaves behind: a started row that never completed.
    with StateStore.open(StateLayout(tmp_path / "state").database) as store:
        store.record_scheduled("daily", datetime(2026, 3, 2, 1, tzinfo=UTC), "killed", "cron")
        store.record_started("killed", datetime(2026, 3, 2, 1, tzinfo=UTC))
    clock.set(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    assert start_and_stop(tmp_path, clock) == ["cron"]
    clock.advance(300)
    assert start_and_stop(tmp_path, clock) == []
    with StateStore.open(StateLayout(tmp_path / "state").database) as store:
        assert store.incomplete_runs() == []
        last = store.last_run("daily")
        assert last is not None
        assert last.status == "ok"


def test_runs_queued_at_sigterm_are_dropped_then_run_again(tmp_path: Path) -> None:
    """Stopped while monthly waits behind a hung weekly: both end with RunDropped, no check
    starts after DaemonStopping, and the next start runs each once."""
    state = tmp_path / "state"
    clock = FakeClock(datetime(2026, 2, 28, 12, tzinfo=UTC))
    start_and_stop(tmp_path, clock, SUNDAY.format(weekly="quick"))  # first start: origins
    clock.set(datetime(2026, 3, 1, 1, tzinfo=UTC))  # one hour after both were due
    config = load_config(write_config(tmp_path / "kw.toml", SUNDAY.format(weekly="sleep_forever")))
    daemon = Daemon(config=config, config_path=None, state_dir=state, clock=clock)
    before = len(telemetry_records(state))
    daemon.start()
    try:
        wait_until(
            lambda: daemon.runner.running_pid is not None,
            timeout=60,
            what="weekly's hung check to start",
        )
        daemon.request_stop("test")
        assert daemon.shutdown() == 0
    finally:
        daemon.runner.kill_now()  # a failing test leaves no hung check behind
    records = telemetry_records(state)[before:]
    scheduled = {r["run_id"]: r["tier"] for r in records if r["type"] == "RunScheduled"}
    assert sorted(scheduled.values()) == ["monthly", "weekly"]
    stopping = types_of(records).index("DaemonStopping")
    assert "CheckStarted" not in types_of(records[stopping:])
    dropped = [r["run_id"] for r in records if r["type"] == "RunDropped"]
    assert sorted(dropped) == sorted(scheduled)
    clock.advance(600)
    text = SUNDAY.format(weekly="quick")
    assert start_and_stop(tmp_path, clock, text) == ["catch_up", "catch_up"]
    assert start_and_stop(tmp_path, clock, text) == []


def test_reload_applies_the_new_check_catalog(tmp_path: Path) -> None:
    """After a reload that registers a new check for a tier, the next run runs that check."""
    state = tmp_path / "state"
    path = write_config(tmp_path / "kw.toml", CONFIG)
    clock = FakeClock(datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    daemon = Daemon(config=load_config(path), config_path=path, state_dir=state, clock=clock)
    daemon.start()
    printer = "[checks.printer]\nmodule = 'tests.fixtures.checks:Printer'\n"
    path.write_text(CONFIG.replace("checks = ['quick']", "checks = ['quick', 'printer']") + printer)
    assert daemon.reload()
    daemon.enqueue("daily", "manual", clock.now(), None)
    assert daemon.wait_idle(timeout=60)
    daemon.request_stop("test")
    assert daemon.shutdown() == 0
    completed = [r["check"] for r in telemetry_records(state) if r["type"] == "CheckCompleted"]
    assert completed == ["quick", "printer"]


def test_check_whose_window_has_closed_is_dropped_not_timed_out(tmp_path: Path) -> None:
    """A run whose window closes before its check could start ends with RunDropped, and the
    check neither starts nor counts as failed."""
    state = tmp_path / "state"
    clock = FakeClock(datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    config = load_config(write_config(tmp_path / "kw.toml", CONFIG))
    daemon = Daemon(config=config, config_path=None, state_dir=state, clock=clock)
    daemon.start()
    run_id = daemon.enqueue("daily", "manual", clock.now(), clock.now() + timedelta(seconds=0.5))
    assert daemon.wait_idle(timeout=60)
    daemon.request_stop("test")
    assert daemon.shutdown() == 0
    names = types_of(telemetry_records(state))
    assert {"RunStarted", "RunDropped"} <= set(names)
    assert not {"CheckStarted", "CheckTimedOut", "CheckEvaluated", "RunCompleted"} & set(names)
    with StateStore.open(StateLayout(state).database) as store:
        last = store.last_run("daily")
    assert last is not None
    assert (last.run_id, last.status) == (run_id, "dropped")
