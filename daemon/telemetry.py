"""The telemetry sink: every event as one JSON line in daily, size-rotated, retained files.

Files live in one directory (mode 0700) and are created 0600::

    events-YYYY-MM-DD.jsonl            first part of a UTC day (the day of each event's ``at``)
    events-YYYY-MM-DD.part0001.jsonl   the next part, opened when ``rotate_bytes`` would be exceeded
    events-YYYY-MM-DD.part0002.jsonl   ...

Plain byte order of the names is chronological order: after ``events-YYYY-MM-DD.`` the first
part continues with ``j`` and later parts with ``p``, and part numbers are zero-padded (four
digits; readers parse the number, so a 10,000th part still sorts right in ``list_files``).
Files are only ever appended to and never renamed, so a log shipper or ``telemetry tail
--follow`` can read them while the sink writes. Retention keeps the files of the newest day
and of the ``retention_days`` days before it; older day files are deleted at start and when a
new day's file is opened.

Records are buffered and written as whole lines; a write that fails part-way is cut back to
the last whole line, so no record is ever split. On start, ``repair`` truncates a torn last
line left by a crash and touches nothing else.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any, Final, Protocol, final

import structlog

from daemon.clock import Clock
from daemon.config import TelemetrySettings
from daemon.events import Event

log = structlog.get_logger("kernelwatch.telemetry")

MAX_BUFFERED_RECORDS: Final = 100_000
"""Records kept in memory while writes fail; beyond this the oldest are dropped and counted."""

_NAME: Final = re.compile(r"^events-(\d{4}-\d{2}-\d{2})(?:\.part(\d{1,9}))?\.jsonl$")
_CHUNK: Final = 64 * 1024


# --- files ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class LogFile:
    """One telemetry file; instances sort by (day, part), which is chronological order."""

    day: date
    part: int
    path: Path = field(compare=False)


def file_name(day: date, part: int) -> str:
    """Return the file name of ``part`` (0 for the first) of ``day``."""
    if part == 0:
        return f"events-{day.isoformat()}.jsonl"
    return f"events-{day.isoformat()}.part{part:04d}.jsonl"


def list_files(directory: Path) -> list[LogFile]:
    """Return the telemetry files in ``directory`` sorted by (day, part); none if it is missing."""
    try:
        names = [path.name for path in directory.iterdir()]
    except FileNotFoundError:
        return []
    files = []
    for name in names:
        match = _NAME.match(name)
        if match is None:
            continue
        try:
            day = date.fromisoformat(match.group(1))
        except ValueError:
            continue
        files.append(LogFile(day, int(match.group(2) or 0), directory / name))
    files.sort()
    return files


# --- repair and restart -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepairReport:
    """A file whose torn tail was cut off on start."""

    file: Path
    bytes_truncated: int


def _rfind_newline(fh: IO[bytes], before: int) -> int:
    """Return the offset of the last ``\\n`` before offset ``before``, or -1."""
    pos = before
    while pos > 0:
        start = max(0, pos - _CHUNK)
        fh.seek(start)
        found = fh.read(pos - start).rfind(b"\n")
        if found >= 0:
            return start + found
        pos = start
    return -1


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def _last_good_line(fh: IO[bytes], size: int) -> tuple[int, dict[str, Any] | None]:
    """Return the end offset of the last newline-terminated, parseable line, and its record."""
    limit = size
    while True:
        newline = _rfind_newline(fh, limit)
        if newline < 0:
            return 0, None
        start = _rfind_newline(fh, newline) + 1
        fh.seek(start)
        record = _parse_line(fh.read(newline + 1 - start))
        if record is not None:
            return newline + 1, record
        limit = start


def repair(directory: Path) -> list[RepairReport]:
    """Cut every telemetry file back to the end of its last whole, parseable line.

    A crash can leave only the tail of the file being written torn (a partial line, or a
    block of NULs after power loss); every file is checked because a wall-clock step can
    make an older day's file the one that was being written. Other lines are never touched.
    """
    reports = []
    for entry in list_files(directory):
        with entry.path.open("r+b") as fh:
            size = os.fstat(fh.fileno()).st_size
            good, _ = _last_good_line(fh, size)
            if good == size:
                continue
            fh.truncate(good)
            os.fsync(fh.fileno())
        reports.append(RepairReport(entry.path, size - good))
        log.warning("telemetry_repaired", file=str(entry.path), bytes_truncated=size - good)
    return reports


def last_sequence(directory: Path) -> int:
    """Return the highest ``seq`` among the last records of the telemetry files, 0 if none.

    The daemon starts its bus at this value + 1 so sequence numbers continue after a restart.
    """
    highest = 0
    for entry in list_files(directory):
        with entry.path.open("rb") as fh:
            _, record = _last_good_line(fh, os.fstat(fh.fileno()).st_size)
        seq = record.get("seq") if record is not None else None
        if isinstance(seq, int) and seq > highest:
            highest = seq
    return highest


# --- the sink ---------------------------------------------------------------------------


class TelemetryFile(Protocol):
    """What the sink needs of an open file; the seam through which tests inject write errors."""

    def write(self, data: bytes, /) -> int | None: ...

    def truncate(self, size: int, /) -> int: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...


Opener = Callable[[Path], TelemetryFile]


def open_append(path: Path) -> TelemetryFile:
    """Open ``path`` unbuffered for appending, creating it 0600 (the default opener)."""
    return io.FileIO(path, "a", opener=lambda name, flags: os.open(name, flags, 0o600))


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryStats:
    """Counters the metrics module reads at scrape time; ``last_seq`` is the last seq written."""

    records_written: int
    bytes_written: int
    write_errors: int
    repairs: int
    last_seq: int
    records_dropped: int = 0


@final
class TelemetrySink:
    """The bus subscriber that appends every event to the JSONL telemetry files."""

    def __init__(
        self,
        directory: Path,
        settings: TelemetrySettings,
        clock: Clock,
        *,
        opener: Opener = open_append,
    ) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by umask and ignored if it exists
        self._dir: Final = directory
        self._settings: Final = settings
        self._clock: Final = clock
        self._opener: Final = opener
        self._flush_every: Final = 1 if settings.fsync == "always" else settings.flush_every_records
        self.repairs: Final = repair(directory)
        # The bus delivers under its own lock, but tick() and close() come from other threads.
        self._lock = threading.Lock()
        self._buffer: deque[tuple[str, bytes, int]] = deque()  # (UTC day, line, seq)
        self._file: TelemetryFile | None = None
        self._file_day = ""
        self._file_part = 0
        self._size = 0
        self._needs_truncate = False  # a failed write left a partial line past self._size
        self._unsynced = False
        self._failing = False
        self._last_flush = clock.monotonic()
        self._last_fsync = self._last_flush
        self._records_written = 0
        self._bytes_written = 0
        self._write_errors = 0
        self._records_dropped = 0
        self._last_seq = 0
        self._swept_day = clock.now().date()
        self._sweep(self._swept_day)

    def __call__(self, event: Event) -> None:
        """Buffer ``event`` as one JSON line; flush when enough records or time have passed."""
        line = event.to_json(newline=True)
        # The stamp is the first "at" of the line (after schema, type and seq), in UTC: its
        # first ten characters are the day whose file the line belongs to.
        at = line.index(b'"at":"') + 6
        day = line[at : at + 10].decode()
        with self._lock:
            buffer = self._buffer
            buffer.append((day, line, event.seq))
            if len(buffer) > MAX_BUFFERED_RECORDS:
                buffer.popleft()
                self._records_dropped += 1
                if self._records_dropped % 10_000 == 1:
                    log.error("telemetry_records_dropped", dropped=self._records_dropped)
            # While writes fail, retry on time only, not on every call.
            if (not self._failing and len(buffer) >= self._flush_every) or (
                self._clock.monotonic() - self._last_flush >= self._settings.flush_every_s
            ):
                self._flush_locked()

    def tick(self) -> None:
        """Flush and fsync what is due; the daemon's main loop calls this every second."""
        with self._lock:
            now = self._clock.monotonic()
            if self._buffer and now - self._last_flush >= self._settings.flush_every_s:
                self._flush_locked()
            elif self._unsynced and self._fsync_due(now):
                self._fsync_locked(now)

    def flush(self) -> None:
        """Write every buffered record now (fsync per policy); write errors are only counted."""
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        """Flush, fsync and close the current file; a later event reopens it."""
        with self._lock:
            self._flush_locked()
            self._close_file(sync=True)
            if self._buffer:
                log.error("telemetry_unwritten_on_close", records=len(self._buffer))

    def stats(self) -> TelemetryStats:
        with self._lock:
            return TelemetryStats(
                records_written=self._records_written,
                bytes_written=self._bytes_written,
                write_errors=self._write_errors,
                repairs=len(self.repairs),
                last_seq=self._last_seq,
                records_dropped=self._records_dropped,
            )

    # --- internals, called with the lock held -----------------------------------------

    def _fsync_due(self, now: float) -> bool:
        policy = self._settings.fsync
        return policy == "always" or (
            policy == "interval" and now - self._last_fsync >= self._settings.fsync_interval_s
        )

    def _flush_locked(self) -> None:
        now = self._clock.monotonic()
        self._last_flush = now
        try:
            while self._buffer:
                self._write_some()
        except OSError as exc:
            self._write_errors += 1
            self._failing = True
            log.error(
                "telemetry_write_failed",
                directory=str(self._dir),
                error=repr(exc),
                buffered=len(self._buffer),
            )
            return
        self._failing = False
        if self._unsynced and self._fsync_due(now):
            self._fsync_locked(now)

    def _fsync_locked(self, now: float) -> None:
        if self._file is None:
            return
        self._last_fsync = now
        try:
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._write_errors += 1
            log.error("telemetry_fsync_failed", directory=str(self._dir), error=repr(exc))
            return
        self._unsynced = False

    def _write_some(self) -> None:
        """Write the longest run of buffered lines of one day that fits the current file."""
        day = self._buffer[0][0]
        self._open_for(day)
        limit = self._settings.rotate_bytes
        size = self._size
        lines: list[bytes] = []
        for line_day, line, _ in self._buffer:
            # A line is bytes, so its length is its size on disk.
            if line_day != day or (size + len(line) > limit and size > 0):
                break
            lines.append(line)
            size += len(line)
        if not lines:  # the current file is full and non-empty
            self._open_part(day, self._file_part + 1)
            return
        self._write_lines(lines)

    def _write_lines(self, lines: list[bytes]) -> None:
        assert self._file is not None
        data = b"".join(lines)
        written = 0
        try:
            if self._needs_truncate:
                self._file.truncate(self._size)
                self._needs_truncate = False
            while written < len(data):
                count = self._file.write(data[written:])
                if not count:
                    raise OSError(f"short write to {self._file_day} part {self._file_part}")
                written += count
        except OSError:
            self._keep_whole_lines(lines, written)
            raise
        self._consume(len(lines), len(data))

    def _keep_whole_lines(self, lines: list[bytes], written: int) -> None:
        """After a failed write, count the whole lines that made it and cut off a partial one."""
        whole = 0
        whole_bytes = 0
        for line in lines:
            if whole_bytes + len(line) > written:
                break
            whole += 1
            whole_bytes += len(line)
        self._consume(whole, whole_bytes)
        if written > whole_bytes:
            self._needs_truncate = True
            assert self._file is not None
            try:
                self._file.truncate(self._size)
                self._needs_truncate = False
            except OSError as exc:  # retried before the next write
                log.error("telemetry_truncate_failed", error=repr(exc))

    def _consume(self, records: int, nbytes: int) -> None:
        if records == 0:
            return
        self._last_seq = self._buffer[records - 1][2]
        for _ in range(records):
            self._buffer.popleft()
        self._size += nbytes
        self._records_written += records
        self._bytes_written += nbytes
        self._unsynced = True

    def _open_for(self, day: str) -> None:
        """Make the newest part of ``day`` the current file (a new day sweeps retention)."""
        if self._file is not None and self._file_day == day:
            return
        parsed = date.fromisoformat(day)
        parts = [entry.part for entry in list_files(self._dir) if entry.day == parsed]
        self._open_part(day, max(parts, default=0))
        if parsed > self._swept_day:
            self._swept_day = parsed
            self._sweep(parsed)

    def _open_part(self, day: str, part: int) -> None:
        self._close_file(sync=self._settings.fsync != "never")
        path = self._dir / file_name(date.fromisoformat(day), part)
        handle = self._opener(path)
        self._file, self._file_day, self._file_part = handle, day, part
        self._size = os.fstat(handle.fileno()).st_size
        self._needs_truncate = False

    def _close_file(self, *, sync: bool) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        try:
            if self._needs_truncate:  # never leave a partial line behind in a finished file
                handle.truncate(self._size)
                self._needs_truncate = False
            if sync and self._unsynced:
                os.fsync(handle.fileno())
                self._unsynced = False
        except OSError as exc:
            self._write_errors += 1
            log.error("telemetry_fsync_failed", directory=str(self._dir), error=repr(exc))
        finally:
            handle.close()

    def _sweep(self, today: date) -> None:
        """Delete the files of days more than ``retention_days`` before ``today``."""
        oldest_kept = today - timedelta(days=self._settings.retention_days)
        for entry in list_files(self._dir):
            if entry.day >= oldest_kept:
                break
            try:
                entry.path.unlink()
            except OSError as exc:
                log.warning("telemetry_retention_failed", file=str(entry.path), error=repr(exc))
            else:
                log.info("telemetry_file_expired", file=str(entry.path))
