"""Keep the power study's trials, and judge them again under another host widening.

A study of the daily regression test takes an hour or more of a quiet host, so what each
trial's verdicts rest on is worth keeping: with ``KERNELWATCH_BENCH_POWER_RECORD=FILE``,
:func:`bench.checks._power_trials` appends one JSON line per trial (:func:`trial_record`):
when it ran, its round and injected slowdown, and each entry's
:class:`checks.performance.Judgement`. Trials are timed without the widening, so every
suspect was re-timed, and any :class:`checks.stats.HostWidening` replays exactly on them
(widening only removes suspects and verdicts)::

    python -m bench.power_replay FILE [--dead-zone 0.05] [--factor 1]

One caveat: the study's rolling baseline admits the clean trials that the default rule
flagged nothing in, so the baselines a replay's trials were judged against are the default
rule's, not the replayed one's.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from checks.api import CheckResult
from checks.performance import Judgement
from checks.stats import HostWidening


def rate(flagged: int, trials: int) -> str:
    """``flagged/trials`` with the share and its exact (Clopper–Pearson) 95 % interval."""
    from scipy.stats import binomtest

    if trials == 0:
        return "0/0"
    low, high = binomtest(flagged, trials).proportion_ci(confidence_level=0.95, method="exact")
    return f"{flagged}/{trials} = {flagged / trials:.1%} (95 %: {low * 100:.1f}–{high * 100:.1f} %)"


def trial_record(round_: int, level: float, result: CheckResult) -> dict[str, Any]:
    """What one trial's verdicts rest on, as one JSON-ready line."""
    samples = result.details["samples"]
    return {
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "round": round_,
        "level": level,
        "entries": {
            key: {"kernel": samples[key]["kernel"], "batch": samples[key]["batch"], **record}
            for key, record in result.details["judgements"].items()
        },
    }


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read a study's trial records (gzipped when the name ends in ``.gz``, as the studies
    kept under ``bench/studies/`` are); a torn last line (a study cut off mid-write) is
    skipped with a warning, any other bad line is an error naming it."""
    if path.suffix == ".gz":
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                print(f"{path}:{number}: torn last line skipped", file=sys.stderr)
                break
            raise ValueError(f"{path}:{number}: not a trial record: {exc}") from exc
    return records


def flagged_kernels(record: Mapping[str, Any], widening: HostWidening) -> dict[str, bool]:
    """Per kernel of one trial, whether any of its entries is a regression under
    ``widening`` (a person reads an alert on any entry as that kernel's)."""
    flagged: dict[str, bool] = {}
    for entry in record["entries"].values():
        judgement = Judgement.from_record(entry)
        flagged[entry["kernel"]] = flagged.get(entry["kernel"], False) or judgement.regressed(
            widening
        )
    return flagged


def replay(records: Iterable[Mapping[str, Any]], widening: HostWidening) -> list[str]:
    """Per kernel and injected slowdown, the trials flagged under ``widening``."""
    counts: dict[tuple[str, float], list[int]] = {}
    for record in records:
        for kernel, flagged in flagged_kernels(record, widening).items():
            tally = counts.setdefault((kernel, record["level"]), [0, 0])
            tally[0] += 1
            tally[1] += flagged
    lines = [
        f"host widening {widening.factor:g} past a {widening.dead_zone:.0%} dead zone:",
        "  kernel             injected  flagged",
    ]
    for kernel, level in sorted(counts):
        trials, hits = counts[(kernel, level)]
        lines.append(f"  {kernel:<18} {level * 100:6.0f} %  {rate(hits, trials)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.power_replay", description=__doc__)
    parser.add_argument("file", type=Path, help="trial records (KERNELWATCH_BENCH_POWER_RECORD)")
    default = HostWidening()
    parser.add_argument("--dead-zone", type=float, default=default.dead_zone)
    parser.add_argument("--factor", type=float, default=default.factor)
    args = parser.parse_args(argv)
    records = read_records(args.file)
    widening = HostWidening(dead_zone=args.dead_zone, factor=args.factor)
    print("\n".join(replay(records, widening)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
