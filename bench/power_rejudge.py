"""Judge a recorded power study again under another rule, its rolling baselines included.

:mod:`bench.power_replay` replays each trial's kept verdict under another host widening;
that is exact only for rules that differ in the widening alone, since the bars, the
baseline and the re-timing decision stay those of the run. Records written since the
study kept each entry's CPU times (:class:`checks.performance.Timings`) and the runs of the
first baseline hold everything a rule needs, so this module runs the study's bookkeeping
again offline: the baseline of each trial is pooled from the last five clean trials the
*rule being judged* flagged nothing in and that were not far faster than their baseline
(as :func:`bench.checks._power_trials` does), and each entry is judged by
:func:`checks.performance.judge`, the check's own code::

    python -m bench.power_rejudge FILE [FILE ...] [--keep-faster]

prints, for a few rules side by side, each kernel's clean and slowed trials flagged. A
rule may want a re-timing the study did not make (it re-timed what its own run's rule
found suspect, every significantly slower first pass with
``KERNELWATCH_BENCH_POWER_RETIME_ALL=1``); then the first pass alone is judged, which can
only miss a slowdown, and the table counts such entries.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.power_replay import rate, read_records
from checks.performance import Rule, Timings, judge
from daemon.baselines import pool_samples


def rules() -> dict[str, Rule]:
    """The rules the command line compares: the check's defaults, then variations of them."""
    from checks.stats import (
        DEFAULT_HOST_RESPONSE_PRIOR,
        DEFAULT_HOST_RESPONSE_WEIGHT,
        HostResponse,
    )

    # Every rule names both options, so that its label holds whatever the defaults are.
    response = {"host_response": True, "host_widening": 0.0}
    plain = {"host_response": False, "host_widening": 0.0}
    both_ways = HostResponse(
        DEFAULT_HOST_RESPONSE_PRIOR, DEFAULT_HOST_RESPONSE_WEIGHT, one_sided=False
    )
    return {
        "widening 1 (the default until 2026-12-07)": rule_of(
            {"host_response": False, "host_widening": 1.0}
        ),
        "no widening, no host response": rule_of(plain),
        "host response (prior 1), no widening (the default)": rule_of(response),
        "host response (prior 1), two-sided, no widening": dataclasses.replace(
            rule_of(response), response=both_ways
        ),
        "host response (prior 0.5), no widening": rule_of({**response, "host_response_prior": 0.5}),
        "host response (prior 1, weight 0.01), no widening": rule_of(
            {**response, "host_response_weight": 0.01}
        ),
        "host response (prior 1), widening 1": rule_of({**response, "host_widening": 1.0}),
    }


@dataclass
class Tally:
    """What one rule made of a study: per (kernel, level) trials and kernels flagged, the
    regression thresholds and host responses of the clean trials' entries, and the entries
    whose wanted re-timing the record lacks."""

    trials: dict[tuple[str, float], list[int]] = field(default_factory=dict)
    thresholds: dict[str, list[float]] = field(default_factory=dict)
    responses: dict[str, list[float]] = field(default_factory=dict)
    missing_retimes: int = 0
    uncompared: int = 0

    def lines(self, name: str) -> list[str]:
        """Return this tally as table lines under the heading ``name``."""
        out = [f"{name}: (missing re-timings {self.missing_retimes})"]
        for kernel, level in sorted(self.trials):
            n, hits = self.trials[(kernel, level)]
            extra = ""
            if level == 0.0:
                bars = self.thresholds.get(kernel) or [math.nan]
                betas = self.responses.get(kernel) or [0.0]
                extra = (
                    f"  threshold {min(bars):.1%}–{max(bars):.1%}"
                    f"  β {min(betas):.2f}–{max(betas):.2f}"
                )
            out.append(f"  {kernel:<18} {level * 100:4.0f} %  {rate(hits, n)}{extra}")
        return out


def _as_samples(record: Mapping[str, Any], used: Mapping[str, Timings], share: float) -> Any:
    """Return the samples a trial adds to a baseline: per entry, what the rule judged."""
    return {
        key: {
            "kernel": entry["kernel"],
            "calibration_kind": entry["calibration_kind"],
            **used[key].baseline_fields(share),
        }
        for key, entry in record["entries"].items()
        if key in used
    }


def rejudge(
    records: Iterable[Mapping[str, Any]],
    rule: Rule,
    runs: int = 5,
    *,
    refuse_faster: bool = True,
) -> Tally:
    """Run the study's rolling-baseline bookkeeping again under ``rule`` (see the module).

    The first ``runs`` baseline records make the first baseline; a later block of
    baseline records (a study with recorded baselines) replaces it. A clean trial joins
    the baseline when the rule flagged nothing in it and, with ``refuse_faster`` (as the
    daemon pools), no entry was faster than its baseline by more than its threshold."""
    tally = Tally()
    window: list[Any] = []
    previous_was_baseline = False
    for record in records:
        entries = record["entries"]
        if record.get("baseline", False):
            if not previous_was_baseline:
                window = []
            whole = {key: Timings.from_record(e["timings"]) for key, e in entries.items()}
            window = [*window, _as_samples(record, whole, rule.share)][-runs:]
            previous_was_baseline = True
            continue
        previous_was_baseline = False
        if not window:
            raise ValueError("a trial record comes before any baseline run's record")
        baseline = pool_samples(window)  # as the daemon pools a baseline's runs
        flagged: dict[str, bool] = {}
        used: dict[str, Timings] = {}
        faster = False
        for key, entry in entries.items():
            kernel = entry["kernel"]
            result = judge(
                baseline,
                key,
                kernel,
                entry["calibration_kind"],
                Timings.from_record(entry["timings"]),
                rule,
            )
            if result is None:
                tally.uncompared += 1
                continue
            used[key] = result.timings
            tally.missing_retimes += result.missing_retime
            hit = result.judgement.regressed(rule.widening)
            flagged[kernel] = flagged.get(kernel, False) or hit
            faster = faster or (refuse_faster and result.judgement.faster_than_baseline)
            if record["level"] == 0.0:
                threshold = result.judgement.threshold_for(rule.widening)
                tally.thresholds.setdefault(kernel, []).append(threshold)
                tally.responses.setdefault(kernel, []).append(result.judgement.host_response)
        for kernel, hit in flagged.items():
            counts = tally.trials.setdefault((kernel, float(record["level"])), [0, 0])
            counts[0] += 1
            counts[1] += hit
        if record["level"] == 0.0 and not any(flagged.values()) and not faster:
            window = [*window[1:], _as_samples(record, used, rule.share)]
    return tally


def rule_of(options: Mapping[str, Any]) -> Rule:
    """Return the check's rule for ``options`` (its defaults for those absent)."""
    return Rule.from_options(options, judge_first_pass_alone=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.power_rejudge", description=__doc__)
    parser.add_argument("files", type=Path, nargs="+", help="trial records, each a study")
    parser.add_argument(
        "--keep-faster",
        action="store_true",
        help="also judge each rule with clean trials faster than the baseline by more than "
        "the threshold pooled into it (as before 2026-12-07)",
    )
    args = parser.parse_args(argv)
    for path in args.files:
        records = read_records(path)
        print(f"{path}: {sum(not r.get('baseline', False) for r in records)} trials")
        for name, rule in rules().items():
            print("\n".join(rejudge(records, rule).lines(name)))
            if args.keep_faster:
                tally = rejudge(records, rule, refuse_faster=False)
                print("\n".join(tally.lines(f"{name}, pooling far faster runs too")))
    return 0


__all__ = ["Tally", "rejudge", "rule_of", "rules"]

if __name__ == "__main__":
    sys.exit(main())
