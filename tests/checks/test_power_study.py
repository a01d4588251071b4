"""The regression power study's bookkeeping: which runs make each baseline, what counts.

The study itself takes an hour of real timing (``make bench``); these tests drive its loop
with a stand-in for the fresh-process check run, so that what it pools and tallies is
checked on every commit.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.checks import SLOWED, _power_trials
from bench.power_rejudge import rejudge
from bench.power_replay import flagged_kernels, host_sensitivity, read_records, replay
from checks.api import CheckResult, Measurement
from checks.performance import Judgement, Rule
from checks.stats import HostWidening

BATCHES = ("small", "large")


@dataclass
class FakeRuns:
    """Stands in for a fresh-process daily run of the slowed kernels.

    Each run gets a number, stored as its samples' ``ratio`` so that a pooled baseline
    shows which runs it holds. A slowdown of 20 % or more is flagged on every entry; the
    runs numbered in ``flag_clean`` flag one entry of the first kernel although clean. The
    runs numbered in ``slow_host`` time every entry on a host 30 % slower than at the
    baseline (their calibration's CPU slowdown), which the default widening clears.
    """

    flag_clean: set[int] = field(default_factory=set)
    slow_host: set[int] = field(default_factory=set)
    #: CPU times kept per entry: with more than one, each call's level is the slowdown's
    #: (give or take 0.6 %), so that the run can be judged again (bench.power_rejudge).
    cpu_calls: int = 1
    made: int = 0
    #: (slowdown, the run numbers pooled in the baseline it was given; None without one)
    calls: list[tuple[float, list[int] | None]] = field(default_factory=list)

    def __call__(self, slowdown: float, extra: dict[str, Any], seed: int) -> CheckResult:
        del seed
        number = self.made
        self.made += 1
        baseline = extra.get("baseline")
        pooled = None
        if baseline is not None:
            entry = baseline["entries"][f"{SLOWED[0]}/small/vectorized"]
            pooled = [int(v) for v in entry["ratio"]]
        self.calls.append((slowdown, pooled))
        measurements: list[Measurement] = []
        samples: dict[str, Any] = {}
        judgements: dict[str, Any] = {}
        host = 0.3 if number in self.slow_host else 0.0
        for kernel in SLOWED:
            for batch in BATCHES:
                flagged = slowdown >= 0.2 or (
                    number in self.flag_clean and kernel == SLOWED[0] and batch == "large"
                )
                labels = {"kernel": kernel, "batch": batch, "profile_id": "p", "seed": "0"}
                for name, value in (
                    ("normalized_slowdown_ratio", slowdown),
                    ("regression_pvalue", 1e-6 if flagged else 0.5),
                    ("regression_threshold_ratio", 0.1),
                    ("performance_regression_ratio", max(slowdown, 0.11) if flagged else 0.0),
                ):
                    unit = name.rsplit("_", 1)[1]
                    measurements.append(
                        Measurement(name=name, value=value, unit=unit, labels=labels)
                    )
                passes = 2 if flagged else 1
                judgements[f"{kernel}/{batch}/vectorized"] = Judgement(
                    slowdowns=(max(slowdown, 0.2) if flagged else slowdown,) * passes,
                    calibration_slowdowns=(host,) * passes,
                    retime_threshold=0.09,
                    threshold=0.1,
                    significant=flagged,
                ).to_record()
                samples[f"{kernel}/{batch}/vectorized"] = {
                    "kernel": kernel,
                    "batch": batch,
                    "calibration_kind": "dispatch",
                    "cpu_seconds": [float(number + 1)]
                    if self.cpu_calls == 1
                    else [
                        (1 + slowdown) * (1 + 0.003 * ((number * 7 + j) % 5 - 2))
                        for j in range(self.cpu_calls)
                    ],
                    "calibration_cpu_seconds": [1.0] * self.cpu_calls,
                    "ratio": [float(number)],
                    "pass_levels": [1.0, 1.0] if flagged else [1.0],
                    "peak_memory_bytes": 1,
                }
        return CheckResult(
            check="performance",
            measurements=tuple(measurements),
            details={"calibration": "spec", "samples": samples, "judgements": judgements},
        )


def baselines_given(runs: FakeRuns) -> list[list[int] | None]:
    """Return the baseline each clean trial was judged against, in order."""
    return [pooled for slowdown, pooled in runs.calls if slowdown == 0.0 and pooled is not None]


def test_a_rolling_baseline_is_the_last_five_clean_trials_that_flagged_nothing() -> None:
    """Runs 0–4 make the first baseline; each unflagged clean trial then replaces the
    oldest run, and a clean trial that flagged an entry is left out, as the daemon pools
    only runs that found no regression."""
    # Round 1 runs 5 (clean) and 6 (20 %); round 2's clean trial is run 7, round 3's run 9.
    runs = FakeRuns(flag_clean={7})
    _power_trials(1e9, runs, levels=(0.0, 0.2), max_rounds=4)
    assert baselines_given(runs) == [
        [0, 1, 2, 3, 4],
        [1, 2, 3, 4, 5],
        [1, 2, 3, 4, 5],  # run 7 flagged: not pooled
        [2, 3, 4, 5, 9],
    ]


def test_a_recorded_baseline_is_five_runs_in_a_row_renewed_every_few_rounds() -> None:
    """As ``kernelwatch baseline record``: five runs in a row, a new five every
    ``rounds_per_baseline`` rounds; trials never join it."""
    runs = FakeRuns()
    _power_trials(
        1e9, runs, protocol="record", rounds_per_baseline=2, levels=(0.0, 0.2), max_rounds=3
    )
    # Round 1: runs 0-4 then 5, 6; round 2: 7, 8; round 3: a new baseline 9-13, then 14, 15.
    assert baselines_given(runs) == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [9, 10, 11, 12, 13]]
    assert runs.made == 16


def test_a_kernel_is_flagged_when_any_of_its_entries_is() -> None:
    """One flagged entry of three kernels × two batches counts its kernel as flagged, and
    the table reports each kernel's rates and the smallest slowdown flagged in 95 %."""
    runs = FakeRuns(flag_clean={5})  # round 1's clean trial flags SLOWED[0]/large
    lines = _power_trials(1e9, runs, levels=(0.0, 0.1, 0.2), max_rounds=2)
    rows = {
        (line.split()[0], line.split()[1]): line.split()
        for line in lines
        if line.split() and line.split()[0] in SLOWED and line.split()[1] != "%"
    }
    first, other = SLOWED[0], SLOWED[1]
    # columns: kernel, injected, "%", trials, median, "%", re-timed, "%", flagged, "%", ...
    assert rows[(first, "0")][3] == "2"
    assert rows[(first, "0")][8] == "50.0"
    assert rows[(other, "0")][8] == "0.0"
    assert rows[(first, "20")][8] == "100.0"
    assert rows[(first, "10")][8] == "0.0"
    assert f"  {first}: smallest slowdown flagged in >= 95 % (min effect default): 20 %" in lines


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "daily"}, "protocol must be"),
        ({"levels": (0.2, 0.0)}, "levels must start with 0"),
    ],
)
def test_the_study_refuses_a_protocol_or_levels_it_does_not_know(
    kwargs: dict[str, Any], message: str
) -> None:
    """A mistyped protocol or levels without the clean trials first is an error, not a
    table that silently measures something else."""
    with pytest.raises(ValueError, match=message):
        _power_trials(1e9, FakeRuns(), max_rounds=1, **kwargs)


def rows_of(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    """Return the table's rows by (kernel, injected %), split into words."""
    return {
        (line.split()[0], line.split()[1]): line.split()
        for line in lines
        if line.split() and line.split()[0] in SLOWED and line.split()[1] != "%"
    }


def test_trials_on_a_slower_host_are_flagged_only_without_widening() -> None:
    """The default rule (no widening) and a widening of 1 are both judged on each trial's
    judgements: a 20 % trial timed while the calibration ran 30 % slower than at the
    baseline is flagged by the default, not with the widening, and the table gives both
    columns. A clean trial there that the default flags stays out of the rolling baseline."""
    # Round 1 runs 5 (clean) and 6 (20 %), round 2 runs 7 and 8: all on the slow host.
    runs = FakeRuns(slow_host={5, 6, 7, 8}, flag_clean={5})
    lines = _power_trials(1e9, runs, levels=(0.0, 0.2), max_rounds=3)
    rows = rows_of(lines)
    first = SLOWED[0]
    # columns: kernel, injected, "%", trials, median, "%", re-timed, "%", flagged, "%",
    # flagged with widening 1, "%", plain 5 %, "%"
    assert rows[(first, "20")][3] == "3"
    assert rows[(first, "20")][8] == "100.0"
    assert rows[(first, "20")][10] == "33.3"  # round 3 only
    assert rows[(first, "0")][8] == "33.3"
    assert rows[(first, "0")][10] == "0.0"
    assert baselines_given(runs)[1] == [0, 1, 2, 3, 4]  # run 5 flagged: not pooled
    assert f"  {first}: smallest slowdown flagged in >= 95 % (min effect default): 20 %" in lines
    assert (
        f"  {first}: smallest slowdown flagged in >= 95 % (min effect default, widening 1): none"
        in lines
    )


def test_each_trial_is_recorded_and_replays_to_the_tables_verdicts(tmp_path: Path) -> None:
    """With a record file, each trial appends one line holding its entries' judgements;
    replaying them without widening (the default) and with it gives the table's columns,
    a torn last line (a study cut off mid-write) is skipped, and a gzipped copy (as the
    studies kept in ``bench/studies/``) reads the same."""
    runs = FakeRuns(slow_host={5, 6}, flag_clean={7})
    path = tmp_path / "trials.jsonl"
    with path.open("w", encoding="utf-8") as record:
        lines = _power_trials(1e9, runs, levels=(0.0, 0.2), max_rounds=3, record=record)
    with path.open("a", encoding="utf-8") as record:
        record.write('{"round": 4, "lev')
    records = read_records(path)
    packed = tmp_path / "trials.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert read_records(packed) == records
    # The first baseline's five runs (no judgements), then the rounds' trials.
    assert [(r["round"], r["level"], r["baseline"]) for r in records[:5]] == [(0, 0.0, True)] * 5
    assert records[0]["entries"][f"{SLOWED[0]}/small/vectorized"]["timings"] == {
        "kernel_cpu": [1.0],
        "calibration_cpu": [1.0],
        "retimed_from": None,
    }
    records = records[5:]
    assert not any(r["baseline"] for r in records)
    assert [(r["round"], r["level"]) for r in records] == [
        (1, 0.0),
        (1, 0.2),
        (2, 0.0),
        (2, 0.2),
        (3, 0.0),
        (3, 0.2),
    ]
    assert len(records[0]["entries"]) == len(SLOWED) * len(BATCHES)
    first = SLOWED[0]
    default = {  # the check's default: no widening
        line.split()[1]: line
        for line in replay(records, HostWidening(factor=0.0))[2:]
        if line.split()[0] == first
    }
    widened = {
        line.split()[1]: line
        for line in replay(records, HostWidening())[2:]
        if line.split()[0] == first
    }
    rows = rows_of(lines)
    assert rows[(first, "0")][8] == "33.3"
    assert "1/3 = 33.3%" in default["0"]
    assert rows[(first, "20")][8] == "100.0"
    assert "3/3 = 100.0%" in default["20"]
    assert "(95 %: 29.2–100.0 %)" in default["20"]
    assert rows[(first, "20")][10] == "66.7"
    assert "2/3 = 66.7%" in widened["20"]
    assert f"  {first}: clean trials flagged (default): 1/3 = 33.3% (95 %: 0.8–90.6 %)" in lines


def test_trials_timed_under_a_laxer_bar_are_judged_again_under_the_rule_given(
    tmp_path: Path,
) -> None:
    """With ``judge_again``, the table ends with the named rule's figures on the very
    trials it recorded, as ``python -m bench.power_rejudge`` gives them from the file."""
    rule = Rule.from_options({}, judge_first_pass_alone=True)
    path = tmp_path / "trials.jsonl"
    with path.open("w", encoding="utf-8") as record:
        lines = _power_trials(
            1e9,
            FakeRuns(cpu_calls=8),
            levels=(0.0, 0.2),
            max_rounds=3,
            record=record,
            judge_again=("the first pass alone", rule),
        )
    expected = rejudge(read_records(path), rule).lines(
        "the first pass alone, judged again on these trials"
    )
    assert lines[-len(expected) :] == expected
    rows = [line.split() for line in expected[1:]]
    assert [row[3] for row in rows if row[1] == "0"] == ["0/3"] * len(SLOWED)
    assert [row[3] for row in rows if row[1] == "20"] == ["3/3"] * len(SLOWED)
    with pytest.raises(ValueError, match="rolling baselines only"):
        _power_trials(1e9, FakeRuns(), protocol="record", judge_again=("x", rule))


def test_a_bad_line_inside_a_record_file_names_its_line(tmp_path: Path) -> None:
    """Only the last line may be torn; a bad line before it is an error naming it."""
    path = tmp_path / "trials.jsonl"
    path.write_text('{"torn\n{"round": 1, "level": 0.0, "entries": {}}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"trials.jsonl:1: not a trial record"):
        read_records(path)


def clean_record(pairs: dict[str, tuple[float, float]], level: float = 0.0) -> dict[str, Any]:
    """A trial record whose entries each had one pass: (calibration slowdown, slowdown)."""
    return {
        "round": 1,
        "level": level,
        "entries": {
            key: {
                "kernel": key.split("/")[0],
                "batch": key.split("/")[1],
                **Judgement(
                    slowdowns=(s,),
                    calibration_slowdowns=(c,),
                    retime_threshold=None,
                    threshold=0.1,
                    significant=True,
                ).to_record(),
            }
            for key, (c, s) in pairs.items()
        },
    }


def test_host_sensitivity_is_each_entrys_clean_slope_shrunk_toward_one() -> None:
    """An entry whose clean slowdown follows 0.8 × the calibration's gets a factor near
    0.8, one that does not move gets one near 0, one never seen off the baseline's host
    keeps 1, a falling one is held at 0, and trials with a slowdown injected are not used."""
    states = (0.0, 0.1, 0.2, 0.3)
    records = [
        clean_record(
            {
                "follows/small/m": (c, 0.8 * c),
                "steady/small/m": (c, 0.0),
                "unseen/small/m": (0.0, 0.01),
                "falls/small/m": (c, -0.5 * c),
            }
        )
        for c in states
    ]
    records.append(clean_record({"follows/small/m": (0.3, 0.9)}, level=0.2))
    factors = host_sensitivity(records, prior_weight=0.05)
    seen = sum(c * c for c in states)  # 0.14
    assert factors["follows/small/m"] == pytest.approx((0.8 * seen + 0.05) / (seen + 0.05))
    assert factors["steady/small/m"] == pytest.approx(0.05 / (seen + 0.05))
    assert factors["unseen/small/m"] == pytest.approx(1.0)
    assert factors["falls/small/m"] == 0.0
    unshrunk = host_sensitivity(records, prior_weight=0.0)
    assert unshrunk["follows/small/m"] == pytest.approx(0.8)
    assert unshrunk["unseen/small/m"] == 1.0
    with pytest.raises(ValueError, match="prior_weight"):
        host_sensitivity(records, prior_weight=-1.0)

    # A 20 % slowdown on a host 30 % slower: over its bar of 10 % widened by 0.3 × factor
    # only where the factor is small.
    trial = clean_record({"follows/small/m": (0.3, 0.2), "steady/small/m": (0.3, 0.2)}, 0.2)
    assert flagged_kernels(trial, HostWidening()) == {"follows": False, "steady": False}
    assert flagged_kernels(trial, HostWidening(), factors) == {"follows": False, "steady": True}
    assert "host widening per entry" in replay([trial], HostWidening(), factors)[0]
