"""Probe the host's short states: every built-in kernel entry against all three calibrations.

The daily check divides each kernel's time by one calibration workload's, which cancels a
host that slows every workload alike. This probe shows what it does not cancel. Each run is
one fresh process (as the daemon's checks are) that builds the daily tier's entries of the
built-in kernels and the ``dispatch``, ``memory`` and ``compute`` workloads of
:class:`checks.timing.Calibration`, warms them up, then times them round-robin, one call of
each per round, and prints one JSON line: per workload, the mean CPU time of its fastest
quarter of calls (``levels``, seconds, as the check's levels are made), and the minor page
faults per call. Run it in a loop between other work, on an otherwise quiet host::

    python -m bench.host_probe [--repetitions 40] >> probes.jsonl
    python -m bench.host_probe --summary probes.jsonl[.gz]

``--summary`` prints one row per probe: each entry's level over each calibration's, and the
raw levels in ms. On the 2-core reference VM on 2026-12-08 (``bench/studies/2026-12-08``)
it found octahedron/large about 30 % faster for seconds to a minute at a time while its
``dispatch`` calibration ran about 7 % faster: spells that the kernel ÷ calibration ratio
does not cancel.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CALIBRATIONS = ("dispatch", "memory", "compute")


def _workloads() -> dict[str, Callable[[], object]]:
    """Return every built-in kernel entry of the daily tier, then the three calibrations."""
    from checks.common import batch_profile
    from checks.performance import timing_inputs
    from checks.timing import Calibration
    from kernels.profile import canonical_profile
    from kernels.registry import builtin_kernels

    profile = canonical_profile()
    out: dict[str, Callable[[], object]] = {}
    for kernel in builtin_kernels().values():
        for batch in kernel.batch_configs:
            prof = batch_profile(profile, batch)
            inputs = timing_inputs(kernel, batch.rows, prof, input_seed=0)  # the check's

            def call(k: Any = kernel, i: Any = inputs, p: Any = prof) -> object:
                return k.run_mlx(i, p)

            out[f"{kernel.name}/{batch.name}"] = call
    calibration = Calibration()
    for kind in CALIBRATIONS:
        out[kind] = calibration.build(kind)
    return out


def probe(repetitions: int, warmup: int = 3) -> dict[str, Any]:
    """Time every workload ``repetitions`` times round-robin; return the probe's record."""
    from checks.stats import DEFAULT_FAST_SHARE, fastest_share_mean

    started = time.time()
    workloads = _workloads()
    for _ in range(warmup):
        for fn in workloads.values():
            fn()
    cpu: dict[str, list[float]] = {name: [] for name in workloads}
    faults = dict.fromkeys(workloads, 0)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repetitions):
            for name, fn in workloads.items():
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                c0 = time.process_time()
                fn()
                cpu[name].append(time.process_time() - c0)
                faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    finally:
        if was_enabled:
            gc.enable()
    return {
        "t": started,
        "repetitions": repetitions,
        "levels": {name: fastest_share_mean(v, DEFAULT_FAST_SHARE) for name, v in cpu.items()},
        "minflt_per_call": {name: n / repetitions for name, n in faults.items()},
    }


def summary_lines(records: Sequence[dict[str, Any]], entry: str = "octahedron/large") -> list[str]:
    """One row per probe: ``entry``'s level over each calibration's, then raw levels (ms)."""
    others = [n for n in records[0]["levels"] if n not in CALIBRATIONS] if records else []
    head = "UTC     " + "  ".join(f"{'÷' + c:>9}" for c in CALIBRATIONS)
    head += "  " + "  ".join(f"{n:>18}" for n in [*others, *CALIBRATIONS]) + "  (ms)"
    lines = [f"{entry} level over each calibration's; every level in ms", head]
    for record in records:
        levels = record["levels"]
        when = time.strftime("%H:%M:%S", time.gmtime(record["t"]))
        ratios = "  ".join(f"{levels[entry] / levels[c]:9.3f}" for c in CALIBRATIONS)
        raw = "  ".join(f"{levels[n] * 1e3:18.2f}" for n in [*others, *CALIBRATIONS])
        lines.append(f"{when}  {ratios}  {raw}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.host_probe", description=__doc__)
    parser.add_argument("--repetitions", type=int, default=40, help="timed rounds (40)")
    parser.add_argument("--summary", type=Path, help="print a table of a file of probes")
    args = parser.parse_args(argv)
    if args.summary is not None:
        data = args.summary.read_bytes()
        if args.summary.suffix == ".gz":  # the studies kept under bench/studies/ are
            data = gzip.decompress(data)
        records = [json.loads(line) for line in data.decode("utf-8").splitlines() if line]
        print("\n".join(summary_lines(records)))
        return 0
    if args.repetitions < 1:
        parser.error(f"--repetitions must be >= 1, got {args.repetitions}")
    print(json.dumps(probe(args.repetitions)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
