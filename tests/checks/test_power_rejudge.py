"""Judging a recorded power study again: rolling baselines per rule, host response, gaps.

Records are built from synthetic CPU times: each call of a kernel takes its level times
its calibration call, and a calibration call takes the host state's time, with 1 % of
jitter each, so that the check's own judging code (:func:`checks.performance.judge`) sees
what it would in a run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.power_rejudge import rejudge, rule_of
from bench.power_replay import trial_record
from checks.performance import PerformanceCheck, Rule, Timings, judge
from daemon.baselines import pool_samples
from tests.checks.helpers import run_in_process

#: kernel -> β: "steady" slows as its calibration does, "follows" twice as much.
KERNELS = {"steady": 0.0, "follows": 1.0}
BATCHES = ("small", "large")
CALLS = 40
#: Options of the rule without host adjustment, and of the one widening the bars instead.
PLAIN: dict[str, Any] = {"host_response": False, "host_widening": 0.0}
WIDENED: dict[str, Any] = {"host_response": False, "host_widening": 1.0}


def timings(kernel: str, host: float, slowdown: float, seed: int, passes: int) -> Timings:
    """One entry's CPU times: ``passes`` passes on a host whose calibration call takes
    ``host`` ms, the kernel slowed by ``slowdown``."""
    rng = np.random.default_rng(seed)
    n = CALLS * passes
    calibration = 1e-3 * host * (1 + 0.01 * rng.random(n))
    level = 2.0 * host ** KERNELS[kernel] * (1 + slowdown)
    kernel_cpu = level * calibration * (1 + 0.01 * rng.random(n))
    return Timings(list(kernel_cpu), list(calibration), CALLS if passes == 2 else None)


def record(
    level: float,
    host: float,
    seed: int,
    *,
    slowed: tuple[str, ...] = (),
    passes: int = 1,
    baseline: bool = False,
    drift: float = 0.0,
) -> dict[str, Any]:
    """A trial record (or a baseline run's) of every kernel × batch; the ``slowed`` kernels
    ``level`` slower, and the "steady" kernel ``drift`` slower (negative: faster) whatever
    the level says."""
    entries = {}
    for index, (kernel, batch) in enumerate((k, b) for k in KERNELS for b in BATCHES):
        entries[f"{kernel}/{batch}/vectorized"] = {
            "kernel": kernel,
            "batch": batch,
            "calibration_kind": "dispatch",
            "timings": timings(
                kernel,
                host,
                (level if kernel in slowed else 0.0) + (drift if kernel == "steady" else 0.0),
                seed * 10 + index,
                passes,
            ).to_record(),
        }
    return {"round": seed, "level": level, "baseline": baseline, "entries": entries}


def baseline_runs(hosts: tuple[float, ...] = (1.0, 1.02, 1.04, 1.06, 1.08)) -> list[Any]:
    """Five baseline runs, in host states up to 8 % apart."""
    return [record(0.0, host, i, baseline=True) for i, host in enumerate(hosts)]


def flagged(rule: Rule, records: list[Any]) -> dict[tuple[str, float], list[int]]:
    return rejudge(records, rule).trials


def test_a_slowdown_in_both_passes_is_flagged_and_clean_trials_roll_into_the_baseline() -> None:
    """Under the check's default rule: a 30 % slowdown of one kernel, present in its
    re-timing too, is flagged on that kernel only, clean trials are not, and each clean
    trial joins the baseline (so a later trial is judged against the last five)."""
    records = [
        *baseline_runs(),
        record(0.0, 1.04, 10),
        record(0.3, 1.04, 11, slowed=("steady",), passes=2),
        record(0.0, 1.04, 12),
    ]
    tally = rejudge(records, rule_of({}))
    assert tally.trials[("steady", 0.3)] == [1, 1]
    assert tally.trials[("follows", 0.3)] == [1, 0]
    assert tally.trials[("steady", 0.0)] == [2, 0]
    assert tally.trials[("follows", 0.0)] == [2, 0]
    assert tally.missing_retimes == 0


def test_a_wanted_retiming_the_record_lacks_is_counted_and_not_flagged() -> None:
    """A slowdown whose run the study did not re-time cannot be confirmed: the first pass
    alone is judged, which flags nothing, and the gap is counted per entry."""
    records = [*baseline_runs(), record(0.3, 1.04, 11, slowed=("steady",), passes=1)]
    tally = rejudge(records, rule_of({}))
    assert tally.trials[("steady", 0.3)] == [1, 0]
    assert tally.missing_retimes == len(BATCHES)


def test_the_host_response_takes_a_slow_host_state_out_of_a_kernel_that_follows_it() -> None:
    """A clean run in a state 30 % slower than the baseline's: the kernel that slows twice
    as much as its calibration reads about +30 % and is flagged without widening; the
    widening of 1, or levels adjusted by the learned host response (the default), clear it."""
    records = [*baseline_runs(), record(0.0, 1.35, 10, passes=2)]
    assert flagged(rule_of(PLAIN), records)[("follows", 0.0)] == [1, 1]
    assert flagged(rule_of(WIDENED), records)[("follows", 0.0)] == [1, 0]
    adjusted = rule_of({})  # the check's default
    assert flagged(adjusted, records)[("follows", 0.0)] == [1, 0]
    assert flagged(adjusted, records)[("steady", 0.0)] == [1, 0]


def test_a_learned_response_keeps_a_steady_kernels_power_in_a_slow_state() -> None:
    """A 30 % slowdown of the kernel that slows as its calibration does, in a state 30 %
    slower: the widening raises its bar by 30 % and misses it; a response learned from
    baseline runs whose host states differ (weight small) stays near 0 for that kernel
    and catches it, while the other kernel's clean entries stay unflagged."""
    records = [
        *baseline_runs((1.0, 1.05, 1.1, 1.15, 1.2)),
        record(0.3, 1.3, 10, slowed=("steady",), passes=2),
    ]
    assert flagged(rule_of(WIDENED), records)[("steady", 0.3)] == [1, 0]
    learned = rule_of({"host_response_weight": 0.001})
    tally = rejudge(records, learned)
    assert tally.trials[("steady", 0.3)] == [1, 1]
    assert tally.trials[("follows", 0.3)] == [1, 0]


def test_a_one_sided_response_never_reads_a_faster_host_as_a_slower_kernel() -> None:
    """A baseline in one host state teaches nothing, so β stays at its prior, 1, also for
    the kernel that slows as its calibration does. Then, on a host 25 % faster, that
    kernel 3 % slower (significant, but well inside its threshold) reads about 30 % slower
    adjusted both ways, and is flagged; the one-sided response (the default) leaves a
    faster host's run as it is."""
    records = [*baseline_runs((1.0,) * 5), record(0.03, 0.8, 10, slowed=("steady",), passes=2)]
    one_sided = rule_of({})
    assert one_sided.response is not None
    assert one_sided.response.one_sided
    both_ways = dataclasses.replace(
        one_sided, response=dataclasses.replace(one_sided.response, one_sided=False)
    )
    assert flagged(both_ways, records)[("steady", 0.03)] == [1, 1]
    assert flagged(one_sided, records)[("steady", 0.03)] == [1, 0]
    assert flagged(rule_of(PLAIN), records)[("steady", 0.03)] == [1, 0]


def test_a_clean_trial_far_faster_than_its_baseline_stays_out_of_it() -> None:
    """A clean trial whose kernel ran 30 % fast (a passing state) is not pooled, as the
    daemon pools: the next trial's threshold stays as it was; pooled, that one run would
    have widened it."""
    records = [
        *baseline_runs(),
        record(0.0, 1.04, 10, drift=-0.3),
        record(0.0, 1.04, 11),
    ]
    refused = rejudge(records, rule_of({})).thresholds["steady"]
    pooled = rejudge(records, rule_of({}), refuse_faster=False).thresholds["steady"]
    # Two entries per trial: the far faster trial's, then the next trial's.
    assert refused[2:] == pytest.approx(refused[:2], abs=0.005)
    assert min(pooled[2:]) > max(refused[2:]) + 0.05


def test_a_trial_before_any_baseline_run_is_an_error() -> None:
    with pytest.raises(ValueError, match="before any baseline"):
        rejudge([record(0.0, 1.0, 1)], rule_of({}))


@pytest.mark.parametrize("response", [False, True])
def test_a_recorded_run_judged_again_gets_the_checks_own_judgement(
    tmp_path: Path, response: bool
) -> None:
    """What makes a rejudged study worth reading: the timings a trial record keeps, judged
    against the same baseline under the same options, give exactly the judgement the check
    reported (thresholds, slowdowns, host response), levels adjusted or not."""
    options: dict[str, Any] = {
        "kernels": ["fisher", "quantum"],
        "batches": ["small", "medium"],
        "repetitions": 15,
        "warmup": 2,
        "extra_timing_s": 0,
        "confirm_after_s": 0,
        "host_response": response,
    }
    runs = [
        run_in_process(PerformanceCheck(), tmp_path, tier="daily", seed=7, options=options)
        for _ in range(3)
    ]
    entries = pool_samples([r.details["samples"] for r in runs])
    baseline = {"calibration": runs[0].details["calibration"], "entries": entries}
    result = run_in_process(
        PerformanceCheck(),
        tmp_path,
        tier="daily",
        seed=7,
        options={**options, "baseline": baseline},
    )
    recorded = trial_record(1, 0.0, result)["entries"]
    rule = Rule.from_options(options, judge_first_pass_alone=True)
    assert len(result.details["judgements"]) == 4
    for key, live in result.details["judgements"].items():
        entry = recorded[key]
        again = judge(
            entries,
            key,
            entry["kernel"],
            entry["calibration_kind"],
            Timings.from_record(entry["timings"]),
            rule,
        )
        assert again is not None
        mine = again.judgement.to_record()
        # The record keeps seven significant digits of each CPU time.
        for name in ("slowdowns", "calibration_slowdowns"):
            assert mine[name] == pytest.approx(live[name], abs=1e-6)
        for name in ("threshold", "host_response"):
            assert mine[name] == pytest.approx(live[name], abs=1e-6)
        assert (mine["significant"], mine["retime_threshold"]) == (live["significant"], None)
        assert (again.judgement.host_response > 0) == response
