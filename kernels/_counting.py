"""Hit and miss counting shared by the kernels' caches (they feed "cache efficiency")."""

from __future__ import annotations

import threading

__all__ = ["CountingCache"]


class CountingCache:
    """Base of a thread-safe cache that counts its hits and misses under one lock."""

    def __init__(self) -> None:
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    def stats(self) -> tuple[int, int]:
        """Return (hits, misses) since creation or the last reset."""
        with self._lock:
            return self._hits, self._misses

    def reset_stats(self) -> None:
        """Zero the hit and miss counters (cached entries are kept)."""
        with self._lock:
            self._hits = 0
            self._misses = 0
