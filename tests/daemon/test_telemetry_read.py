"""Tests for reading telemetry: record order, filters, durations and ``tail`` with follow."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from daemon.bus import EventBus
from daemon.clock import FakeClock
from daemon.config import TelemetrySettings
from daemon.events import ConfigRejected, DaemonStopping
from daemon.telemetry import TelemetrySink, file_name
from daemon.telemetry_read import ReadStats, iter_records, parse_duration, tail

START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
DAY = START.date()


def write_lines(directory: Path, day: date, part: int, lines: list[str]) -> None:
    directory.mkdir(exist_ok=True)
    with (directory / file_name(day, part)).open("a") as fh:
        fh.writelines(line + "\n" for line in lines)


def record(seq: int, kind: str = "DaemonStopping", at: datetime = START) -> str:
    return json.dumps({"schema": 1, "type": kind, "seq": seq, "at": at.isoformat()})


def seqs_of(text: str) -> list[int]:
    return [json.loads(line)["seq"] for line in text.splitlines()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
    ],
)
def test_parse_duration_accepts_number_and_unit(text: str, expected: timedelta) -> None:
    """Durations are a whole number followed by s, m, h, d or w."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "1.5h", "-2h", "2 hours", "2y"])
def test_parse_duration_rejects_and_names_bad_text(text: str) -> None:
    """A bad duration raises ValueError naming the text."""
    with pytest.raises(ValueError, match=repr(text).replace(".", r"\.")):
        parse_duration(text)


def test_iter_records_reads_days_and_parts_in_order(tmp_path: Path) -> None:
    """Records come file by file in (day, part) order, whatever the directory order."""
    write_lines(tmp_path, DAY, 11, [record(6)])
    write_lines(tmp_path, DAY, 2, [record(5)])
    write_lines(tmp_path, DAY, 0, [record(3), record(4)])
    write_lines(tmp_path, DAY - timedelta(days=1), 1, [record(2)])
    write_lines(tmp_path, DAY - timedelta(days=1), 0, [record(1)])
    assert [r["seq"] for r in iter_records(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_iter_records_skips_and_counts_bad_lines(tmp_path: Path) -> None:
    """Unparseable lines and non-objects are skipped and counted, not fatal."""
    write_lines(tmp_path, DAY, 0, [record(1), "not json", "[1, 2]", record(2), '{"torn'])
    stats = ReadStats()
    assert [r["seq"] for r in iter_records(tmp_path, stats=stats)] == [1, 2]
    assert stats == ReadStats(records=2, skipped=3)


def test_iter_records_filters_by_type_and_since(tmp_path: Path) -> None:
    """``types`` keeps the named types and ``since`` drops records before it, old days included."""
    write_lines(tmp_path, DAY - timedelta(days=2), 0, [record(1, at=START - timedelta(days=2))])
    write_lines(
        tmp_path,
        DAY,
        0,
        [
            record(2, at=START - timedelta(hours=2)),
            record(3, "ConfigRejected", at=START - timedelta(minutes=30)),
            record(4, at=START - timedelta(minutes=10)),
        ],
    )
    since = START - timedelta(hours=1)
    assert [r["seq"] for r in iter_records(tmp_path, since=since)] == [3, 4]
    assert [r["seq"] for r in iter_records(tmp_path, types={"DaemonStopping"})] == [1, 2, 4]
    assert [r["seq"] for r in iter_records(tmp_path, since=since, types={"X"})] == []


def test_iter_records_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    """No telemetry directory yet means no records, not an error."""
    assert list(iter_records(tmp_path / "absent")) == []


def test_tail_prints_the_last_n_across_files(tmp_path: Path) -> None:
    """``-n`` prints the last n records, reaching into older files when needed."""
    write_lines(tmp_path, DAY - timedelta(days=1), 0, [record(i) for i in range(1, 4)])
    write_lines(tmp_path, DAY, 0, [record(4), record(5)])
    out = io.StringIO()
    clock = FakeClock(START)
    assert tail(tmp_path, n=4, follow=False, types=None, since=None, out=out, clock=clock) == 0
    assert seqs_of(out.getvalue()) == [2, 3, 4, 5]
    out = io.StringIO()
    tail(tmp_path, n=0, follow=False, types=None, since=None, out=out, clock=clock)
    assert out.getvalue() == ""


def test_tail_filters_by_type_and_since_duration(tmp_path: Path) -> None:
    """``--type`` and ``--since`` (a duration back from the clock) both filter tail."""
    write_lines(
        tmp_path,
        DAY,
        0,
        [
            record(1, "ConfigRejected", at=START - timedelta(hours=3)),
            record(2, at=START - timedelta(hours=2)),
            record(3, "ConfigRejected", at=START - timedelta(minutes=20)),
            record(4, at=START - timedelta(minutes=5)),
        ],
    )
    clock = FakeClock(START)
    out = io.StringIO()
    tail(tmp_path, n=10, follow=False, types={"ConfigRejected"}, since=None, out=out, clock=clock)
    assert seqs_of(out.getvalue()) == [1, 3]
    out = io.StringIO()
    tail(tmp_path, n=10, follow=False, types=None, since=parse_duration("1h"), out=out, clock=clock)
    assert seqs_of(out.getvalue()) == [3, 4]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_tail_follow_prints_appended_records_across_rotation_and_days(tmp_path: Path) -> None:
    """With follow, new records appear as the sink writes them, through new parts and days."""
    clock = FakeClock(datetime(2026, 11, 22, 23, 59, 0, tzinfo=UTC))
    settings = TelemetrySettings(flush_every_records=1, flush_every_s=3600.0, rotate_bytes=600)
    sink = TelemetrySink(tmp_path, settings, clock)
    bus = EventBus(clock, host="h")
    bus.subscribe("telemetry", sink)
    for _ in range(3):
        bus.publish(DaemonStopping(reason="before"))
    out = io.StringIO()
    stop = threading.Event()
    follower = threading.Thread(
        target=tail,
        kwargs={
            "directory": tmp_path,
            "n": 2,
            "follow": True,
            "types": {"DaemonStopping"},
            "since": None,
            "out": out,
            "clock": clock,
            "poll_s": 0.01,
            "stop": stop,
        },
    )
    follower.start()
    try:
        wait_for(lambda: seqs_of(out.getvalue()) == [2, 3], "the last two records")
        bus.publish(ConfigRejected(source="x", error="filtered out by --type"))
        for _ in range(6):  # enough to rotate into a new part
            bus.publish(DaemonStopping(reason="after" * 10))
        clock.advance(120)  # a new UTC day, a new file
        for _ in range(2):
            bus.publish(DaemonStopping(reason="tomorrow"))
        wait_for(lambda: seqs_of(out.getvalue())[-1:] == [12], "records of the new day")
    finally:
        stop.set()
        follower.join(timeout=5)
        sink.close()
    assert not follower.is_alive()
    assert seqs_of(out.getvalue()) == [2, 3, 5, 6, 7, 8, 9, 10, 11, 12]
    assert len(list(tmp_path.glob("events-2026-11-22*.jsonl"))) > 1
    assert (tmp_path / file_name(date(2026, 11, 23), 0)).exists()


def test_tail_follow_waits_for_the_first_file(tmp_path: Path) -> None:
    """Following an empty directory prints records from the first file once it appears."""
    out = io.StringIO()
    stop = threading.Event()
    clock = FakeClock(START)
    follower = threading.Thread(
        target=tail,
        args=(tmp_path,),
        kwargs={
            "n": 5,
            "follow": True,
            "types": None,
            "since": None,
            "out": out,
            "clock": clock,
            "poll_s": 0.01,
            "stop": stop,
        },
    )
    follower.start()
    try:
        time.sleep(0.05)
        write_lines(tmp_path, DAY, 0, [record(1), record(2)])
        wait_for(lambda: seqs_of(out.getvalue()) == [1, 2], "the first records")
    finally:
        stop.set()
        follower.join(timeout=5)
    assert not follower.is_alive()
