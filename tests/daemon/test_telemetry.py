"""Tests for the telemetry sink: buffering, fsync, rotation, retention, repair, crashes, errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from daemon import telemetry
from daemon.bus import EventBus
from daemon.clock import FakeClock, SystemClock
from daemon.config import TelemetrySettings
from daemon.events import DaemonStopping, Event
from daemon.telemetry import (
    RepairReport,
    TelemetryFile,
    TelemetrySink,
    file_name,
    last_sequence,
    list_files,
    open_append,
    repair,
)
from tests.helpers import wait_until

START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
TODAY = START.date()
WRITER = Path(__file__).with_name("telemetry_writer.py")


def settings(**overrides: object) -> TelemetrySettings:
    base: dict[str, object] = {"flush_every_records": 1000, "flush_every_s": 3600.0}
    base.update(overrides)
    return TelemetrySettings(**base)  # type: ignore[arg-type]


def wire(sink: TelemetrySink, clock: FakeClock | SystemClock, first_seq: int = 1) -> EventBus:
    bus = EventBus(clock, host="test-host", first_seq=first_seq)
    bus.subscribe("telemetry", sink)
    return bus


def publish(bus: EventBus, count: int, size: int = 10) -> list[Event]:
    return [bus.publish(DaemonStopping(reason="r" * size)) for _ in range(count)]


def all_lines(directory: Path) -> list[bytes]:
    return [
        line for entry in list_files(directory) for line in entry.path.read_bytes().splitlines()
    ]


def seqs(directory: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in all_lines(directory)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def test_directory_and_files_are_private(tmp_path: Path, clock: FakeClock) -> None:
    """The telemetry directory is created 0700 and its files 0600."""
    directory = tmp_path / "telemetry"
    sink = TelemetrySink(directory, settings(), clock)
    publish(wire(sink, clock), 1)
    sink.close()
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / file_name(TODAY, 0)).stat().st_mode & 0o777 == 0o600


def test_record_is_the_compact_json_of_to_record(tmp_path: Path, clock: FakeClock) -> None:
    """Each line is exactly the compact JSON of the event's record plus a newline."""
    sink = TelemetrySink(tmp_path, settings(), clock)
    [event] = publish(wire(sink, clock), 1)
    sink.close()
    expected = json.dumps(event.to_record(), separators=(",", ":"), allow_nan=False) + "\n"
    assert (tmp_path / file_name(TODAY, 0)).read_text() == expected


def test_flushes_when_flush_every_records_are_buffered(tmp_path: Path, clock: FakeClock) -> None:
    """Records stay in memory until flush_every_records of them are buffered."""
    sink = TelemetrySink(tmp_path, settings(flush_every_records=5), clock)
    bus = wire(sink, clock)
    publish(bus, 4)
    assert all_lines(tmp_path) == []
    publish(bus, 1)
    assert seqs(tmp_path) == [1, 2, 3, 4, 5]
    sink.close()


def test_tick_flushes_after_flush_every_s(tmp_path: Path, clock: FakeClock) -> None:
    """tick() writes buffered records once flush_every_s has passed since the last flush."""
    sink = TelemetrySink(tmp_path, settings(flush_every_s=2.0), clock)
    publish(wire(sink, clock), 3)
    clock.advance(1.0)
    sink.tick()
    assert all_lines(tmp_path) == []
    clock.advance(1.0)
    sink.tick()
    assert seqs(tmp_path) == [1, 2, 3]
    sink.close()


def test_a_late_record_flushes_on_its_own_call(tmp_path: Path, clock: FakeClock) -> None:
    """A record arriving after flush_every_s since the last flush is written at once."""
    sink = TelemetrySink(tmp_path, settings(flush_every_s=2.0), clock)
    bus = wire(sink, clock)
    publish(bus, 1)
    clock.advance(2.5)
    publish(bus, 1)
    assert seqs(tmp_path) == [1, 2]
    sink.close()


def test_fsync_always_writes_every_record_at_once(tmp_path: Path, clock: FakeClock) -> None:
    """With fsync "always" each record is on disk when publish returns."""
    sink = TelemetrySink(tmp_path, settings(fsync="always"), clock)
    bus = wire(sink, clock)
    for expected in range(1, 4):
        publish(bus, 1)
        assert seqs(tmp_path)[-1] == expected
    sink.close()


@pytest.mark.parametrize("policy", ["never", "interval", "always"])
def test_close_keeps_every_record_under_each_fsync_policy(
    tmp_path: Path, clock: FakeClock, policy: str
) -> None:
    """Whatever the fsync policy, close() leaves every published record in the file."""
    sink = TelemetrySink(tmp_path, settings(flush_every_records=7, fsync=policy), clock)
    publish(wire(sink, clock), 250)
    sink.close()
    assert seqs(tmp_path) == list(range(1, 251))
    assert sink.stats().records_written == 250
    assert sink.stats().last_seq == 250


def test_rotation_writes_parts_of_whole_lines(tmp_path: Path, clock: FakeClock) -> None:
    """Size rotation opens numbered parts that sort by name, and no line is ever split."""
    sink = TelemetrySink(tmp_path, settings(flush_every_records=9, rotate_bytes=2000), clock)
    publish(wire(sink, clock), 120, size=40)
    sink.close()
    files = list_files(tmp_path)
    assert len(files) > 3
    assert [entry.part for entry in files] == list(range(len(files)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [entry.path.name for entry in files]
    for entry in files:
        data = entry.path.read_bytes()
        assert len(data) <= 2000
        assert data.endswith(b"\n")
        for line in data.splitlines():
            json.loads(line)
    assert seqs(tmp_path) == list(range(1, 121))
    assert files[1].path.name == f"events-{TODAY.isoformat()}.part0001.jsonl"


def test_restart_appends_to_the_newest_part(tmp_path: Path, clock: FakeClock) -> None:
    """A new sink continues the newest part of the day instead of reopening the first."""
    sink = TelemetrySink(tmp_path, settings(rotate_bytes=2000), clock)
    publish(wire(sink, clock), 60, size=40)
    sink.close()
    parts_before = len(list_files(tmp_path))
    sink = TelemetrySink(tmp_path, settings(rotate_bytes=2000), clock)
    publish(wire(sink, clock, first_seq=last_sequence(tmp_path) + 1), 1)
    sink.close()
    assert len(list_files(tmp_path)) == parts_before
    assert seqs(tmp_path) == list(range(1, 62))


def touch_day(directory: Path, day: date, part: int = 0) -> Path:
    path = directory / file_name(day, part)
    path.write_text('{"seq":1}\n')
    return path


def test_retention_deletes_only_old_day_files_at_start(tmp_path: Path, clock: FakeClock) -> None:
    """At start, day files older than retention_days go; recent ones and other files stay."""
    old = [
        touch_day(tmp_path, TODAY - timedelta(days=31)),
        touch_day(tmp_path, TODAY - timedelta(days=40), 3),
    ]
    kept = [touch_day(tmp_path, TODAY - timedelta(days=30)), touch_day(tmp_path, TODAY)]
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    TelemetrySink(tmp_path, settings(retention_days=30), clock).close()
    assert not any(path.exists() for path in old)
    assert all(path.exists() for path in kept)
    assert other.exists()


def test_day_boundary_opens_a_new_file_and_sweeps(tmp_path: Path) -> None:
    """Records go to the file of their UTC day, and a new day applies retention again."""
    clock = FakeClock(datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC))
    expiring = touch_day(tmp_path, date(2026, 11, 22) - timedelta(days=2))
    sink = TelemetrySink(tmp_path, settings(flush_every_records=1, retention_days=2), clock)
    bus = wire(sink, clock)
    publish(bus, 2)
    assert expiring.exists()
    clock.advance(2)
    publish(bus, 3)
    sink.close()
    assert not expiring.exists()
    first = tmp_path / file_name(date(2026, 11, 22), 0)
    second = tmp_path / file_name(date(2026, 11, 23), 0)
    assert [json.loads(line)["seq"] for line in first.read_bytes().splitlines()] == [1, 2]
    assert [json.loads(line)["seq"] for line in second.read_bytes().splitlines()] == [3, 4, 5]


def test_torn_last_line_is_truncated_and_reported(tmp_path: Path, clock: FakeClock) -> None:
    """A partial last line is cut off at start; every other byte stays as it was."""
    good = b"".join(b'{"seq":%d,"type":"X"}\n' % i for i in range(1, 4))
    torn = b'{"seq":4,"ty'
    path = tmp_path / file_name(TODAY, 0)
    path.write_bytes(good + torn)
    older = tmp_path / file_name(TODAY - timedelta(days=1), 0)
    older_bytes = b'{"seq":0}\nnot json in the middle\n{"seq":0}\n'
    older.write_bytes(older_bytes)
    sink = TelemetrySink(tmp_path, settings(), clock)
    sink.close()
    assert path.read_bytes() == good
    assert older.read_bytes() == older_bytes
    assert sink.repairs == [RepairReport(path, len(torn))]
    assert sink.stats().repairs == 1


def test_unparseable_tail_lines_and_nuls_are_cut(tmp_path: Path) -> None:
    """Trailing garbage lines and NUL blocks after power loss are cut back to the last record."""
    good = b'{"seq":1}\n{"seq":2}\n'
    garbage = b'{"seq":3,"broken\n' + b"\0" * 100
    path = tmp_path / file_name(TODAY, 0)
    path.write_bytes(good + garbage)
    assert repair(tmp_path) == [RepairReport(path, len(garbage))]
    assert path.read_bytes() == good
    assert repair(tmp_path) == []


def test_last_sequence_is_the_highest_last_seq(tmp_path: Path, clock: FakeClock) -> None:
    """last_sequence reads the newest records, and is 0 for an empty directory."""
    assert last_sequence(tmp_path) == 0
    sink = TelemetrySink(tmp_path, settings(rotate_bytes=1500), clock)
    publish(wire(sink, clock, first_seq=41), 30, size=40)
    sink.close()
    assert last_sequence(tmp_path) == 70


@pytest.mark.parametrize("policy", ["never", "interval"])
def test_kill_9_during_heavy_writing_then_restart(tmp_path: Path, policy: str) -> None:
    """After SIGKILL mid-write and a restart, every line parses and sequence numbers continue."""
    directory = tmp_path / "telemetry"
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(directory), policy],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        # Kill once the child is past its first rotation (256 KiB parts): mid-write, with
        # several files and plenty of records behind it.
        wait_until(
            lambda: sum(f.stat().st_size for f in directory.glob("*.jsonl")) > 600 * 1024,
            timeout=120,
            what="the writer to fill more than two telemetry parts",
        )
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    clock = SystemClock()
    sink = TelemetrySink(directory, settings(fsync=policy), clock)
    before = last_sequence(directory)
    assert before > 1000, "the child wrote more than two 256 KiB parts before the kill"
    publish(wire(sink, clock, first_seq=before + 1), 50)
    sink.close()
    numbers = seqs(directory)  # json.loads of every line: a torn one would raise here
    assert all(a < b for a, b in itertools.pairwise(numbers))
    assert numbers[-51:] == [before, *range(before + 1, before + 51)]


class FlakyFile:
    """A real append-only file whose writes can fail, optionally after writing part of the data."""

    def __init__(self, path: Path, control: dict[str, int]) -> None:
        self._file = open_append(path)
        self._control = control

    def write(self, data: bytes, /) -> int | None:
        if self._control["fail"]:
            partial = self._control["partial"]
            if partial:
                self._control["partial"] = 0
                return self._file.write(data[:partial])
            raise OSError(28, "No space left on device")
        return self._file.write(data)

    def truncate(self, size: int, /) -> int:
        return self._file.truncate(size)

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


@pytest.mark.parametrize("partial", [0, 25])
def test_write_error_is_counted_and_records_written_later(
    tmp_path: Path, clock: FakeClock, partial: int
) -> None:
    """A failing write is counted, never raised, and its records are written once it clears."""
    control = {"fail": 1, "partial": partial}

    def opener(path: Path) -> TelemetryFile:
        return FlakyFile(path, control)

    sink = TelemetrySink(tmp_path, settings(flush_every_records=5), clock, opener=opener)
    bus = wire(sink, clock)
    publish(bus, 10)
    assert bus.failures == {}
    assert sink.stats().write_errors >= 1
    assert all_lines(tmp_path) == []  # a partial line was cut back
    control["fail"] = 0
    clock.advance(3600)
    sink.tick()
    sink.close()
    assert seqs(tmp_path) == list(range(1, 11))
    assert sink.stats().records_written == 10


def test_buffer_is_bounded_while_writes_fail(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the buffer bound the oldest records are dropped and counted."""
    monkeypatch.setattr(telemetry, "MAX_BUFFERED_RECORDS", 5)
    control = {"fail": 1, "partial": 0}

    def opener(path: Path) -> TelemetryFile:
        return FlakyFile(path, control)

    sink = TelemetrySink(tmp_path, settings(flush_every_records=1), clock, opener=opener)
    publish(wire(sink, clock), 8)
    control["fail"] = 0
    sink.close()
    assert seqs(tmp_path) == [4, 5, 6, 7, 8]
    assert sink.stats().records_dropped == 3
