"""The built-in ``runtime`` check: child start-up time, library import times, the fingerprint.

It needs no kernels, so the whole path (schedule → child process → result → events) runs
end to end on any host. It runs in the check's child process, where importing MLX is fine;
nothing here imports MLX at module import time.

``child_startup_seconds`` is the time from the kernel's record of this process's start to the
moment ``run`` is entered: interpreter start-up, importing the child entry point, reading the
request and loading the check. It is read from ``/proc/self/stat`` (Linux only; elsewhere it
is left out with a note), whose start time has the resolution of one clock tick (10 ms on
most kernels). ``python_import_seconds{module=...}`` is the wall time of the first import of
numpy, ``scipy.linalg`` and ``mlx.core`` in this process.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from typing import final

from checks.api import CheckContext, CheckResult, Measurement
from checks.fingerprint import collect_fingerprint

# Imported in this order: scipy.linalg after numpy, so its time excludes numpy's.
_IMPORTS: tuple[str, ...] = ("numpy", "scipy.linalg", "mlx.core")


def process_age_seconds() -> float | None:
    """Return seconds since this process started per the kernel, or None where unknown."""
    try:
        stat = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ")".
    after_comm = stat[stat.rindex(")") + 2 :].split()
    start_ticks = int(after_comm[19])  # field 22, "starttime", in clock ticks since boot
    started = start_ticks / os.sysconf("SC_CLK_TCK")
    # Linux ≥ 5.3 counts starttime on the boot-time clock, older kernels on the monotonic one
    # (they differ by time spent suspended); take whichever gives a plausible age.
    for clock in (time.CLOCK_BOOTTIME, time.CLOCK_MONOTONIC):
        age = time.clock_gettime(clock) - started
        if 0.0 <= age < 3600.0:
            return age
    return None


def _time_import(module: str) -> float | str:
    """Return the seconds a first import of ``module`` took, or a note why there is none."""
    if module in sys.modules:
        return f"{module} was already imported; its import time is not measured"
    start = time.perf_counter()
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} could not be imported: {exc}"
    return time.perf_counter() - start


@final
class RuntimeCheck:
    """Measures how long a check's child process takes to start and to import its libraries."""

    name = "runtime"
    tier = "daily"
    timeout_s = 60.0

    def run(self, context: CheckContext) -> CheckResult:
        """Measure start-up first (before imports inflate it), then imports, then fingerprint."""
        age = process_age_seconds()
        measurements: list[Measurement] = []
        notes: list[str] = []
        if age is None:
            notes.append("child_startup_seconds is not available on this platform")
        else:
            measurements.append(
                Measurement(name="child_startup_seconds", value=age, unit="seconds")
            )
        for module in _IMPORTS:
            took = _time_import(module)
            if isinstance(took, str):
                notes.append(took)
                continue
            measurements.append(
                Measurement(
                    name="python_import_seconds",
                    value=took,
                    unit="seconds",
                    labels={"module": module},
                )
            )
        fingerprint = collect_fingerprint()
        notes.append(f"fingerprint {fingerprint.digest()}")
        return CheckResult(
            check=self.name,
            measurements=tuple(measurements),
            notes=tuple(notes),
            details={"fingerprint": fingerprint.to_record(), "digest": fingerprint.digest()},
        )
