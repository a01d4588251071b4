"""Fault-injection knobs of a profile's ``drill`` mapping, applied by every kernel entry point."""

from __future__ import annotations

import os
import threading

from kernels.profile import Profile

__all__ = ["batch_scale", "cache_thrash", "enter_drill", "repetitions"]


def enter_drill(profile: Profile) -> None:
    """Honour the ``crash`` and ``hang`` knobs before a kernel starts computing.

    ``crash`` aborts the process (``os.abort()``); ``hang`` blocks forever on an
    event nobody sets. Both exist so the daemon's deadline and crash handling can
    be drilled with a real kernel process.
    """
    if profile.drill.get("crash", False):
        os.abort()
    if profile.drill.get("hang", False):
        threading.Event().wait()


def repetitions(profile: Profile) -> int:
    """Return how many times the kernel repeats its work: ``slow_factor`` (a whole number ≥ 1).

    >>> from kernels.profile import canonical_profile
    >>> repetitions(canonical_profile().replace(drill={"slow_factor": 3.0}))
    3
    """
    return int(profile.drill.get("slow_factor", 1.0))


def cache_thrash(profile: Profile) -> bool:
    """Return True when every call must miss the kernel's caches."""
    return bool(profile.drill.get("cache_thrash", False))


def batch_scale(profile: Profile) -> int:
    """Return the memory-bloat multiplier of the octahedron's rows (1 when unset)."""
    return int(profile.drill.get("batch_scale", 1))
