"""Reading the telemetry log: records across files in order, filters, ``tail`` and ``--since``.

Files are read in (day, part) order, which is the order the sink wrote them. A line that does
not parse as a JSON object is skipped and counted in ``ReadStats`` rather than ending the read;
a last line without its newline is still being written, so ``tail --follow`` waits for it.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, TextIO

from daemon.clock import Clock, ensure_utc
from daemon.telemetry import LogFile, list_files

_DURATION: Final = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(slots=True)
class ReadStats:
    """Counts kept while reading; ``skipped`` lines did not parse as JSON objects."""

    records: int = 0
    skipped: int = 0


def parse_duration(text: str) -> timedelta:
    """Parse a ``--since`` value such as ``90s``, ``15m``, ``2h``, ``7d`` or ``1w``."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: expected a whole number and a unit s, m, h, d or w "
            "(e.g. 90s, 15m, 2h, 7d)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True, slots=True)
class _Filter:
    since: datetime | None
    types: frozenset[str] | None

    def accepts(self, record: dict[str, Any], stats: ReadStats) -> bool:
        if self.types is not None and record.get("type") not in self.types:
            return False
        if self.since is None:
            return True
        try:
            at = datetime.fromisoformat(record["at"])
        except (KeyError, TypeError, ValueError):
            stats.skipped += 1  # a record without a readable time cannot match --since
            return False
        return at.tzinfo is not None and at >= self.since

    def skips_file(self, entry: LogFile) -> bool:
        """A whole day before ``since`` holds no matching record."""
        return self.since is not None and entry.day < self.since.date()


def _make_filter(since: datetime | None, types: Collection[str] | None) -> _Filter:
    return _Filter(
        since=ensure_utc(since) if since is not None else None,
        types=frozenset(types) if types is not None else None,
    )


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def _read_from(path: Path, offset: int, *, whole_only: bool) -> tuple[list[bytes], int]:
    """Return the lines of ``path`` from ``offset`` and the offset after the last one read.

    With ``whole_only`` a last line without its newline is left for a later read.
    """
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    if whole_only:
        end = data.rfind(b"\n") + 1
        data = data[:end]
    lines = data.splitlines()  # only "\n" ends a line; ASCII JSON holds no other breaks raw
    return [line for line in lines if line], offset + len(data)


def iter_records(
    directory: Path,
    *,
    since: datetime | None = None,
    types: Collection[str] | None = None,
    stats: ReadStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield every matching record in write order; unparseable lines are skipped and counted."""
    counts = stats if stats is not None else ReadStats()
    wanted = _make_filter(since, types)
    for entry in list_files(directory):
        if wanted.skips_file(entry):
            continue
        try:
            fh = entry.path.open("rb")
        except FileNotFoundError:  # deleted by retention meanwhile
            continue
        with fh:
            for line in fh:
                record = _parse(line)
                if record is None:
                    counts.skipped += 1
                    continue
                if wanted.accepts(record, counts):
                    counts.records += 1
                    yield record


def _matching_lines(lines: list[bytes], wanted: _Filter, stats: ReadStats) -> Iterator[bytes]:
    for line in lines:
        record = _parse(line)
        if record is None:
            stats.skipped += 1
        elif wanted.accepts(record, stats):
            stats.records += 1
            yield line


def tail(
    directory: Path,
    *,
    n: int,
    follow: bool,
    types: Collection[str] | None,
    since: datetime | timedelta | None,
    out: TextIO,
    clock: Clock,
    poll_s: float = 0.5,
    stop: threading.Event | None = None,
    stats: ReadStats | None = None,
) -> int:
    """Print the last ``n`` matching records as JSON lines; with ``follow``, keep printing.

    ``since`` is a time or a duration back from ``clock.now()``. Following goes on across
    rotation and day changes until ``stop`` is set or KeyboardInterrupt; returns exit code 0.
    """
    if n < 0:
        raise ValueError(f"tail: n must be >= 0, got {n}")
    counts = stats if stats is not None else ReadStats()
    if isinstance(since, timedelta):
        since = clock.now() - since
    wanted = _make_filter(since, types)
    # Newest files first until n lines are found; remember where the newest one ended.
    files = list_files(directory)
    last: deque[bytes] = deque(maxlen=n)
    current: LogFile | None = None
    offset = 0
    collected: list[list[bytes]] = []
    found = 0
    for entry in reversed(files):
        if wanted.skips_file(entry):
            break
        lines, end = _read_from(entry.path, 0, whole_only=True)
        if current is None:
            current, offset = entry, end
        matched = list(_matching_lines(lines, wanted, counts))
        collected.append(matched)
        found += len(matched)
        if found >= n:
            break
    for matched in reversed(collected):
        last.extend(matched)
    _emit(out, last)
    if not follow:
        return 0
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a person stops following
        _follow(directory, current, offset, wanted, counts, out, poll_s, stop)
    return 0


def _emit(out: TextIO, lines: Collection[bytes]) -> None:
    if not lines:
        return
    out.write("".join(line.decode("utf-8", "replace") + "\n" for line in lines))
    out.flush()


def _follow(
    directory: Path,
    current: LogFile | None,
    offset: int,
    wanted: _Filter,
    stats: ReadStats,
    out: TextIO,
    poll_s: float,
    stop: threading.Event | None,
) -> None:
    """Print lines appended to ``current`` and to every newer file, polling every ``poll_s``."""
    while stop is None or not stop.is_set():
        if current is not None:
            lines, offset = _read_from(current.path, offset, whole_only=True)
            _emit(out, list(_matching_lines(lines, wanted, stats)))
        newer = [f for f in list_files(directory) if current is None or f > current]
        if newer:
            if current is not None:
                # The sink never returns to an older file once it opened a newer one, so one
                # more read drains what was written before the switch.
                lines, offset = _read_from(current.path, offset, whole_only=False)
                _emit(out, list(_matching_lines(lines, wanted, stats)))
            current, offset = newer[0], 0
            continue
        if stop is not None:
            stop.wait(poll_s)
        else:
            time.sleep(poll_s)
