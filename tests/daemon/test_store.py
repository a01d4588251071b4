"""Tests for daemon.store: real SQLite files, set-aside of corrupt state, catch-up exactly once."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.clock import FakeClock
from daemon.config import TierSettings
from daemon.errors import StateError
from daemon.schedule import CatchUp, Missed, Occurrence, plan_catch_up
from daemon.store import SCHEMA_VERSION, RunRow, StateStore

DAILY = TierSettings(cron="0 1 * * *", window_s=3600.0, catch_up_grace_s=6 * 3600.0)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A store path in a state directory that does not exist yet."""
    return tmp_path / "state" / "kernelwatch.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[StateStore]:
    """An open store, closed after the test."""
    opened = StateStore.open(db_path)
    yield opened
    opened.close()


# --- files ------------------------------------------------------------------------------


def test_open_creates_private_dir_and_file(db_path: Path, store: StateStore) -> None:
    """The state directory is 0700 and the database file 0600."""
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert store.set_aside == []


def test_wal_mode_and_schema_version(db_path: Path, store: StateStore) -> None:
    """The database is in WAL mode and records the current schema version."""
    store.put_json("ns", "k", 1)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_values_survive_close_and_reopen(db_path: Path) -> None:
    """Key/values and run bookkeeping are durable across a restart."""
    with StateStore.open(db_path) as first:
        first.put_json("evaluator", "latency:daily", {"breaches": 2, "open": True})
        first.record_scheduled("daily", utc(2026, 1, 1, 1), "r1", "cron")
    with StateStore.open(db_path) as second:
        assert second.get_json("evaluator", "latency:daily") == {"breaches": 2, "open": True}
        assert second.last_scheduled("daily") == utc(2026, 1, 1, 1)
        assert second.set_aside == []


def test_random_bytes_are_set_aside(db_path: Path) -> None:
    """A file that is not SQLite is renamed (never deleted), reported, and replaced."""
    db_path.parent.mkdir(mode=0o700)
    garbage = os.urandom(8192)
    db_path.write_bytes(garbage)
    clock = FakeClock(utc(2026, 11, 22, 3, 4, 5))
    with StateStore.open(db_path, clock=clock) as store:
        assert len(store.set_aside) == 1
        path, moved_to, reason = store.set_aside[0]
        assert path == str(db_path)
        assert moved_to == str(db_path.with_name("kernelwatch.db.corrupt-20261122T030405Z"))
        assert reason
        assert Path(moved_to).read_bytes() == garbage
        store.put_json("ns", "k", "works")
        assert store.get_json("ns", "k") == "works"


def test_truncated_database_is_set_aside(db_path: Path) -> None:
    """A database cut short (power loss, full disk) is set aside and a fresh one works."""
    with StateStore.open(db_path) as store, store.transaction():
        for i in range(2000):
            store.put_json("bulk", f"key-{i:05d}", {"i": i, "pad": "x" * 100})
    size = db_path.stat().st_size
    with db_path.open("r+b") as fh:
        fh.truncate(size // 2)
    with StateStore.open(db_path) as store:
        assert len(store.set_aside) == 1
        assert Path(store.set_aside[0][1]).exists()
        assert store.items("bulk") == {}
        store.put_json("ns", "k", [1, 2])
        assert store.get_json("ns", "k") == [1, 2]


def test_foreign_sqlite_database_is_set_aside(db_path: Path) -> None:
    """A valid SQLite file with someone else's tables is not adopted."""
    db_path.parent.mkdir(mode=0o700)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with StateStore.open(db_path) as store:
        assert "not a kernelwatch store" in store.set_aside[0][2]


def test_newer_schema_is_refused_not_set_aside(db_path: Path) -> None:
    """A store written by a newer daemon raises StateError and stays where it is."""
    StateStore.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="newer"):
        StateStore.open(db_path)
    assert db_path.exists()
    assert list(db_path.parent.glob("*.corrupt-*")) == []


# --- key/value --------------------------------------------------------------------------


def test_kv_put_get_delete_items(store: StateStore) -> None:
    """Namespaces keep keys apart; delete removes one key; items lists a namespace."""
    store.put_json("a", "x", 1)
    store.put_json("a", "y", {"z": [1.5, None]})
    store.put_json("b", "x", "other")
    store.put_json("a", "x", 2)
    assert store.items("a") == {"x": 2, "y": {"z": [1.5, None]}}
    store.delete("a", "x")
    store.delete("a", "missing")
    assert store.get_json("a", "x") is None
    assert store.items("b") == {"x": "other"}


def test_kv_refuses_non_json_values(store: StateStore) -> None:
    """Values must be JSON: objects and NaN are refused, never pickled."""
    with pytest.raises(StateError, match="not JSON"):
        store.put_json("a", "x", object())
    with pytest.raises(StateError, match="not JSON"):
        store.put_json("a", "x", float("nan"))


def test_transaction_is_atomic(store: StateStore) -> None:
    """An error inside transaction() leaves none of its writes behind."""
    store.put_json("issues", "open", ["a"])

    def update_then_fail() -> None:
        with store.transaction():
            store.put_json("issues", "open", ["a", "b"])
            store.put_json("recovery", "attempts", 3)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        update_then_fail()
    assert store.get_json("issues", "open") == ["a"]
    assert store.get_json("recovery", "attempts") is None


def test_store_is_usable_from_several_threads(store: StateStore) -> None:
    """Concurrent writers from different threads all land."""

    def writer(n: int) -> None:
        for i in range(50):
            store.put_json(f"t{n}", str(i), i)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(store.items(f"t{n}")) == 50 for n in range(4))


# --- run bookkeeping --------------------------------------------------------------------


def test_run_lifecycle_is_bookkept(store: StateStore) -> None:
    """Scheduled, started and completed times and outcome are recorded per run."""
    store.record_scheduled("daily", utc(2026, 1, 1, 1), "r1", "cron")
    store.record_started("r1", utc(2026, 1, 1, 1, 0, 2))
    store.record_completed("r1", utc(2026, 1, 1, 1, 5), "ok", succeeded=True)
    store.record_scheduled("daily", utc(2026, 1, 2, 1), "r2", "cron")
    store.record_started("r2", utc(2026, 1, 2, 1, 0, 1))
    store.record_completed("r2", utc(2026, 1, 2, 1, 30), "unknown", succeeded=False)
    assert store.last_started("daily") == utc(2026, 1, 2, 1, 0, 1)
    assert store.last_success("daily") == utc(2026, 1, 1, 1, 5)
    assert store.last_run("daily") == RunRow(
        run_id="r2",
        tier="daily",
        trigger="cron",
        scheduled_for=utc(2026, 1, 2, 1),
        started=utc(2026, 1, 2, 1, 0, 1),
        completed=utc(2026, 1, 2, 1, 30),
        status="unknown",
        succeeded=False,
    )
    assert store.last_run("weekly") is None
    assert store.incomplete_runs() == []


def test_incomplete_runs_after_a_kill(db_path: Path) -> None:
    """Runs queued or started but never completed are listed after a restart."""
    with StateStore.open(db_path) as store:
        store.record_scheduled("daily", utc(2026, 1, 1, 1), "queued", "cron")
        store.record_scheduled("weekly", utc(2026, 1, 4), "started", "cron")
        store.record_started("started", utc(2026, 1, 4, 0, 0, 1))
    with StateStore.open(db_path) as store:
        assert [r.run_id for r in store.incomplete_runs()] == ["queued", "started"]


def test_interrupted_run_stays_incomplete_until_closed(db_path: Path) -> None:
    """A run a stop interrupted is marked so, stays incomplete across a restart, then closes."""
    with StateStore.open(db_path) as store:
        store.record_scheduled("monthly", utc(2026, 1, 4), "waiting", "cron")
        store.record_interrupted("waiting")
    with StateStore.open(db_path) as store:
        [row] = store.incomplete_runs()
        assert (row.run_id, row.status, row.completed) == ("waiting", "interrupted", None)
        store.record_completed("waiting", utc(2026, 1, 4, 0, 5), "interrupted", False)
        assert store.incomplete_runs() == []
        assert store.last_scheduled("monthly") == utc(2026, 1, 4)  # still a handled occurrence


def test_unknown_run_id_is_an_error(store: StateStore) -> None:
    """Starting a run that was never scheduled is a bookkeeping bug, reported loudly."""
    with pytest.raises(StateError, match="nope"):
        store.record_started("nope", utc(2026, 1, 1))


def test_last_scheduled_ignores_manual_runs(store: StateStore) -> None:
    """Only cron, catch-up and missed rows stand for a cron occurrence."""
    store.record_scheduled("daily", utc(2026, 1, 1, 1), "r1", "cron")
    store.record_scheduled("daily", utc(2026, 1, 3, 9), "r2", "manual")
    assert store.last_scheduled("daily") == utc(2026, 1, 1, 1)
    assert store.last_scheduled("daily", triggers=("manual",)) == utc(2026, 1, 3, 9)


def test_catch_up_baseline_records_first_start(store: StateStore) -> None:
    """On first start there is no baseline; later, the first start time is the baseline."""
    assert store.catch_up_baseline("weekly", utc(2026, 11, 18)) is None
    assert store.catch_up_baseline("weekly", utc(2026, 11, 23)) == utc(2026, 11, 18)
    store.record_scheduled("weekly", utc(2026, 11, 22), "r1", "catch_up")
    assert store.catch_up_baseline("weekly", utc(2026, 11, 23)) == utc(2026, 11, 22)


# --- catch-up with stored bookkeeping ---------------------------------------------------


def _start_daemon(path: Path, clock: FakeClock) -> tuple[StateStore, list[CatchUp | Missed]]:
    """What the daemon does at start: open state, plan catch-up, bookkeep what it queues."""
    store = StateStore.open(path, clock=clock)
    now = clock.now()
    last = {"daily": store.catch_up_baseline("daily", now)}
    plan = plan_catch_up({"daily": DAILY}, last, now)
    for i, item in enumerate(plan):
        if isinstance(item, CatchUp):
            occ = item.occurrence
            run_id = f"catch-{now.isoformat()}-{i}"
            store.record_scheduled(occ.tier, occ.scheduled_for, run_id, "catch_up")
    return store, plan


def test_missed_daily_run_is_caught_up_exactly_once_after_restart(db_path: Path) -> None:
    """Down over 01:00: the first restart catches up once; a second restart does nothing."""
    clock = FakeClock(utc(2026, 11, 21, 1))
    store = StateStore.open(db_path, clock=clock)
    store.record_scheduled("daily", clock.now(), "r-21", "cron")  # the last run before going down
    store.close()

    clock.set(utc(2026, 11, 22, 2, 30))  # back 90 minutes after the missed 01:00
    store, plan = _start_daemon(db_path, clock)
    store.close()
    assert plan == [
        CatchUp(
            Occurrence(
                "daily", utc(2026, 11, 22, 1), clock.now() + timedelta(seconds=DAILY.window_s)
            )
        )
    ]

    clock.advance(60)  # crash and restart a minute later
    store, plan = _start_daemon(db_path, clock)
    store.close()
    assert plan == []


def test_run_missed_beyond_grace_yields_missed(db_path: Path) -> None:
    """Back after the 6 h grace: the 01:00 run is reported Missed, not run."""
    clock = FakeClock(utc(2026, 11, 21, 1))
    with StateStore.open(db_path, clock=clock) as store:
        store.record_scheduled("daily", clock.now(), "r-21", "cron")
    clock.set(utc(2026, 11, 22, 9))
    store, plan = _start_daemon(db_path, clock)
    store.close()
    assert plan == [Missed("daily", utc(2026, 11, 22, 1), "past catch-up grace")]


def test_first_start_then_missed_occurrence_is_caught_up(db_path: Path) -> None:
    """A tier that never ran, first started before 01:00 and down over it, is caught up."""
    clock = FakeClock(utc(2026, 11, 21, 20))
    store, plan = _start_daemon(db_path, clock)
    store.close()
    assert plan == []
    clock.set(utc(2026, 11, 22, 3))
    store, plan = _start_daemon(db_path, clock)
    store.close()
    assert [type(p) for p in plan] == [CatchUp]


def test_missed_runs_count_as_handled_but_not_incomplete(store: StateStore) -> None:
    """A bookkept RunMissed moves the catch-up baseline and is never an incomplete run."""
    store.record_scheduled("daily", utc(2026, 1, 1, 1), "r1", "cron")
    store.record_completed("r1", utc(2026, 1, 1, 1, 5), "ok", succeeded=True)
    store.record_scheduled("daily", utc(2026, 1, 2, 1), "m1", "missed")
    assert store.last_scheduled("daily") == utc(2026, 1, 2, 1)
    assert store.incomplete_runs() == []


def test_missed_beyond_grace_is_reported_once_across_restarts(db_path: Path) -> None:
    """Once a Missed is bookkept, the next restart does not report it again."""
    clock = FakeClock(utc(2026, 11, 21, 1))
    with StateStore.open(db_path, clock=clock) as store:
        store.record_scheduled("daily", clock.now(), "r-21", "cron")
    clock.set(utc(2026, 11, 22, 9))
    with StateStore.open(db_path, clock=clock) as store:
        now = clock.now()
        plan = plan_catch_up(
            {"daily": DAILY}, {"daily": store.catch_up_baseline("daily", now)}, now
        )
        assert [type(p) for p in plan] == [Missed]
        missed = plan[0]
        assert isinstance(missed, Missed)
        store.record_scheduled("daily", missed.scheduled_for, "m-22", "missed")
    clock.advance(60)
    with StateStore.open(db_path, clock=clock) as store:
        now = clock.now()
        last = {"daily": store.catch_up_baseline("daily", now)}
        assert plan_catch_up({"daily": DAILY}, last, now) == []
