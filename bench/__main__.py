"""Run every benchmark table in one process and print them (``make bench``).

Each area's table is measured side by side within one run, so ratios are comparable; the
machine is shared and noisy, so figures are medians and tails, never single timings.
Set ``KERNELWATCH_BENCH`` to a comma-separated subset (e.g. ``daemon,kernels``) to run fewer.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable

TABLES: tuple[tuple[str, str, str], ...] = (
    ("daemon", "bench.daemon_bench", "daemon_table"),
    ("telemetry", "bench.telemetry", "telemetry_table"),
    ("metrics", "bench.metrics", "metrics_table"),
    ("kernels", "bench.kernels", "kernel_table"),
    ("checks", "bench.checks", "checks_table"),
    ("recovery", "bench.recovery", "recovery_table"),
)


def main() -> int:
    wanted = {w.strip() for w in os.environ.get("KERNELWATCH_BENCH", "").split(",") if w.strip()}
    failed = 0
    for name, module, function in TABLES:
        if wanted and name not in wanted:
            continue
        print(f"\n== {name} ==", flush=True)
        started = time.perf_counter()
        try:
            table: Callable[[], str] = getattr(importlib.import_module(module), function)
            print(table(), flush=True)
        except Exception as exc:  # noqa: BLE001 - one broken table must not hide the others
            failed += 1
            print(f"{name}: FAILED: {exc!r}", flush=True)
        print(f"({name}: {time.perf_counter() - started:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
