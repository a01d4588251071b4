"""Time as an injectable object: a Clock protocol, the system clock and a fake one for tests."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, final


class Clock(Protocol):
    """What every time-dependent part of the daemon asks instead of reading time ad hoc."""

    def now(self) -> datetime:
        """Return the current wall-clock time, timezone-aware in UTC."""
        ...

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes backwards (for deadlines and intervals)."""
        ...


@final
class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


@final
class FakeClock:
    """A clock that moves only when told to; wall time can jump independently of monotonic time."""

    def __init__(self, start: datetime, monotonic_start: float = 1000.0) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock start must be timezone-aware")
        self._now = start.astimezone(UTC)
        self._mono = monotonic_start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward, as real time passing would."""
        if seconds < 0:
            raise ValueError("time does not run backwards; use jump_wall() for a clock step")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Step only the wall clock (NTP step, suspend/resume), as the daemon must detect."""
        with self._lock:
            self._now += timedelta(seconds=seconds)

    def set(self, when: datetime) -> None:
        """Move wall and monotonic time forward to ``when``."""
        delta = (when.astimezone(UTC) - self.now()).total_seconds()
        self.advance(delta)


def ensure_utc(when: datetime) -> datetime:
    """Return ``when`` in UTC; refuse naive datetimes, whose meaning depends on the host."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when.isoformat()} has no timezone; use UTC")
    return when.astimezone(UTC)
