"""Keep the power study's trials, and judge them again under another host widening.

A study of the daily regression test takes an hour or more of a quiet host, so what each
trial's verdicts rest on is worth keeping: with ``KERNELWATCH_BENCH_POWER_RECORD=FILE``,
:func:`bench.checks._power_trials` appends one JSON line per trial (:func:`trial_record`):
when it ran, its round and injected slowdown, and each entry's
:class:`checks.performance.Judgement`. Trials are timed without the widening, so every
suspect was re-timed, and any :class:`checks.stats.HostWidening` replays exactly on them
(widening only removes suspects and verdicts)::

    python -m bench.power_replay FILE [--dead-zone 0.05] [--factor 1]
    python -m bench.power_replay FILE --sensitivity-from EARLIER_FILE [--prior-weight 0.05]

The second form tries a widening fitted per entry (:func:`host_sensitivity`): each entry's
factor is how much its clean trials' normalised slowdown moved with the calibration's
slowdown in an earlier study, judged on trials it was not fitted on.

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


def trial_record(
    round_: int, level: float, result: CheckResult, *, baseline: bool = False
) -> dict[str, Any]:
    """What one trial's verdicts rest on, as one JSON-ready line: per entry its kernel,
    batch, calibration kind and :class:`checks.performance.Timings` (CPU times, enough to
    judge the trial again under another rule and baseline, :mod:`bench.power_rejudge`),
    and its :class:`checks.performance.Judgement` when it was compared with a baseline.
    ``baseline`` marks one of the runs a baseline is pooled from, not a trial."""
    from checks.performance import Timings

    details = result.details
    samples = details["samples"]
    judgements = details.get("judgements", {})
    retimed_from = details.get("retimed_from", {})
    entries = {}
    for key, sample in samples.items():
        timings = Timings(
            sample["cpu_seconds"], sample["calibration_cpu_seconds"], retimed_from.get(key)
        )
        entries[key] = {
            "kernel": sample["kernel"],
            "batch": sample["batch"],
            "calibration_kind": sample.get("calibration_kind"),
            "timings": timings.to_record(),
            **judgements.get(key, {}),
        }
    return {
        "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "round": round_,
        "level": level,
        "baseline": baseline,
        "calibration": details.get("calibration"),
        "entries": entries,
    }


def judged(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Return the records of trials judged against a baseline (not the baseline's own runs)."""
    return [record for record in records if not record.get("baseline", False)]


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


def host_sensitivity(
    records: Iterable[Mapping[str, Any]], prior_weight: float = 0.05
) -> dict[str, float]:
    """Per entry, how much its normalised slowdown moves with the calibration's CPU
    slowdown, from the clean trials' first passes: the slope through the origin (a clean
    run on the baseline's host reads 0), shrunk toward 1 (the default factor) as if
    ``prior_weight`` more squared calibration slowdown had been seen on that line,
    ``(Σ c·s + w) / (Σ c² + w)``, and at least 0. With the host always as at the baseline
    (c near 0) it stays near 1; clean trials in slow states pull it toward the entry's own
    response, which differs by kernel (``bench/studies/2026-12-07/``).
    """
    if prior_weight < 0:
        raise ValueError(f"prior_weight must be at least 0, got {prior_weight}")
    sums: dict[str, list[float]] = {}
    for record in judged(records):
        if record["level"] != 0.0:
            continue
        for key, entry in record["entries"].items():
            c, s = entry["calibration_slowdowns"][0], entry["slowdowns"][0]
            total = sums.setdefault(key, [0.0, 0.0])
            total[0] += c * s
            total[1] += c * c
    return {
        # Nothing seen off the baseline's host and no prior: the default factor.
        key: max(0.0, (cs + prior_weight) / (cc + prior_weight)) if cc + prior_weight else 1.0
        for key, (cs, cc) in sums.items()
    }


def flagged_kernels(
    record: Mapping[str, Any],
    widening: HostWidening,
    factors: Mapping[str, float] | None = None,
) -> dict[str, bool]:
    """Per kernel of one trial, whether any of its entries is a regression under
    ``widening``, with its factor replaced by ``factors[entry]`` where given (a person
    reads an alert on any entry as that kernel's)."""
    flagged: dict[str, bool] = {}
    for key, entry in record["entries"].items():
        judgement = Judgement.from_record(entry)
        rule = widening
        if factors is not None and key in factors:
            rule = HostWidening(dead_zone=widening.dead_zone, factor=factors[key])
        flagged[entry["kernel"]] = flagged.get(entry["kernel"], False) or judgement.regressed(rule)
    return flagged


def replay(
    records: Iterable[Mapping[str, Any]],
    widening: HostWidening,
    factors: Mapping[str, float] | None = None,
) -> list[str]:
    """Per kernel and injected slowdown, the trials flagged under ``widening`` (its factor
    replaced per entry by ``factors`` where given)."""
    counts: dict[tuple[str, float], list[int]] = {}
    for record in judged(records):
        for kernel, flagged in flagged_kernels(record, widening, factors).items():
            tally = counts.setdefault((kernel, record["level"]), [0, 0])
            tally[0] += 1
            tally[1] += flagged
    factor = "per entry" if factors is not None else f"{widening.factor:g}"
    lines = [
        f"host widening {factor} past a {widening.dead_zone:.0%} dead zone:",
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
    parser.add_argument(
        "--sensitivity-from",
        type=Path,
        metavar="FIT_FILE",
        help="fit each entry's factor on these trials' clean runs (host_sensitivity)",
    )
    parser.add_argument("--prior-weight", type=float, default=0.05)
    args = parser.parse_args(argv)
    records = read_records(args.file)
    widening = HostWidening(dead_zone=args.dead_zone, factor=args.factor)
    factors = None
    if args.sensitivity_from is not None:
        factors = host_sensitivity(read_records(args.sensitivity_from), args.prior_weight)
        for key, factor in sorted(factors.items()):
            print(f"{key}: factor {factor:.2f}")
    print("\n".join(replay(records, widening, factors)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
