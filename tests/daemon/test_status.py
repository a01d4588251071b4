"""`kernelwatch status` over a real state directory: what became of each tier's latest run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from daemon.config import load_config
from daemon.state_dir import StateLayout
from daemon.status import collect_status
from daemon.store import MISSED_TRIGGER, StateStore
from tests.helpers import write_config

# No HTTP endpoint: status then knows no daemon is running anything.
CONFIG = "[http]\nenabled = false\n"


def at(hour: int) -> datetime:
    return datetime(2026, 3, 2, hour, tzinfo=UTC)


def tier_rows(tmp_path: Path) -> dict[str, dict[str, str]]:
    config = load_config(write_config(tmp_path / "kw.toml", CONFIG))
    payload = collect_status(config, tmp_path / "state")
    return {row["tier"]: row for row in payload["tiers"]}


def open_store(tmp_path: Path) -> StateStore:
    layout = StateLayout(tmp_path / "state")
    layout.create()
    return StateStore.open(layout.database)


def test_missed_run_is_shown_as_missed(tmp_path: Path) -> None:
    """A tier whose latest occurrence was reported missed shows "missed", not "running"."""
    with open_store(tmp_path) as store:
        store.record_scheduled("weekly", at(0), "m1", MISSED_TRIGGER)
    assert tier_rows(tmp_path)["weekly"]["last_status"] == "missed"


def test_killed_run_is_shown_as_interrupted(tmp_path: Path) -> None:
    """A run started but never completed, with no daemon running it, shows "interrupted"."""
    with open_store(tmp_path) as store:
        store.record_scheduled("daily", at(1), "k1", "cron")
        store.record_started("k1", at(1))
    row = tier_rows(tmp_path)["daily"]
    assert row["last_status"] == "interrupted"
    assert row["last_started"] == at(1).isoformat()


def test_last_started_survives_a_later_missed_occurrence(tmp_path: Path) -> None:
    """The last start time is the tier's latest start, even when a later occurrence was missed."""
    with open_store(tmp_path) as store:
        store.record_scheduled("daily", at(1), "r1", "cron")
        store.record_started("r1", at(1))
        store.record_completed("r1", at(2), "ok", True)
        store.record_scheduled("daily", at(3), "m1", MISSED_TRIGGER)
    row = tier_rows(tmp_path)["daily"]
    assert row["last_status"] == "missed"
    assert row["last_started"] == at(1).isoformat()
    assert row["last_success"] == at(2).isoformat()
