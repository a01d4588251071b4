"""Check-tier benchmarks: tier wall times through the real runner, the daily CI, regression power.

``checks_table()`` measures, on this machine and with the default config:

1. the wall time of each tier run by ``daemon.oneshot.run_once`` (child start-up, imports,
   MLX compilation and the check itself), against the budgets of issue 4, and of a daily
   performance check that re-times a suspect slowdown (:func:`_retimed_daily`);
2. the daily tier's latency confidence-interval half-width as a share of the median, per
   kernel × batch config (budget: ≤ 3 %);
3. the power of the daily regression test: user kernels wrapping every built-in kernel
   (:func:`slowed_octahedron`, :func:`slowed_fisher`, :func:`slowed_quantum`) spin for
   ``slowdown`` × their own CPU time after each call; a baseline is pooled from five clean
   runs (as ``baseline record``), then clean trials and trials slowed by 5, 10, 20
   and 30 % run round-robin, and after every ``ROUNDS_PER_BASELINE`` rounds a new baseline
   is recorded, for ``power_s`` seconds in all: a rate measured against one baseline only
   says how lucky that baseline was. Every run, baseline runs included, is a
   fresh process (:mod:`bench.perf_child`), as the daemon's daily runs are: trials in one
   process would miss the drift between processes, and would drift away from a baseline
   recorded at the process's start (measured: clean trials 2–8 % faster than it after a few
   minutes). A trial is flagged when ``performance_regression_ratio`` > 0: p < 0.002, the
   first pass over ``retime_threshold_ratio`` and so timed again ``confirm_after_s`` later,
   the re-timing over it too, and both passes together over ``regression_threshold_ratio``
   (the 10 % minimum effect widened by the baseline's run-to-run spread, see
   :func:`checks.stats.effect_threshold`). The table also shows the share of trials
   re-timed and the rate of p < 0.002 with a reported slowdown over a plain 5 %, from the
   same trials.

Set ``KERNELWATCH_BENCH_POWER_S`` to change the power study's duration (default 600 s: about
five trials per level, each a daily run of the three slowed kernels with its extra rounds,
and a 30 s pause before the re-timing of a suspect slowdown).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from checks.api import CheckResult

#: Mutable knob of :func:`slowed_octahedron`: the share of extra time each call spins.
INJECTED: dict[str, float] = {"slowdown": 0.0}
LEVELS: tuple[float, ...] = (0.0, 0.05, 0.10, 0.20, 0.30)
BUDGETS_S: dict[str, float] = {"daily": 60, "weekly": 120, "monthly": 180, "quarterly": 900}
SLOWED_SPECS = (
    "bench.checks:slowed_octahedron",
    "bench.checks:slowed_fisher",
    "bench.checks:slowed_quantum",
)
SLOWED = ("octahedron_slowed", "fisher_slowed", "quantum_slowed")
#: Rounds of levels timed against one baseline before the power study records a new one.
ROUNDS_PER_BASELINE = 6


def _spin(seconds: float) -> None:
    """Busy-wait ``seconds`` of this process's CPU time (work, as the kernel's own)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _slowed(kernel: str) -> Any:
    """Return the user kernel ``<kernel>_slowed``: ``kernel``, slowed by ``INJECTED``."""
    from kernels.registry import builtin_kernels

    base = builtin_kernels()[kernel]

    def run_mlx(inputs: Any, profile: Any) -> Any:
        start = time.process_time()
        out = base.run_mlx(inputs, profile)
        slowdown = INJECTED["slowdown"]
        if slowdown > 0:
            _spin((time.process_time() - start) * slowdown)
        return out

    return dataclasses.replace(base, name=f"{kernel}_slowed", run_mlx=run_mlx)


def slowed_octahedron() -> Any:
    """Return ``octahedron_slowed`` (dispatch-bound: the noisiest ratio on a busy host)."""
    return _slowed("octahedron")


def slowed_fisher() -> Any:
    """Return ``fisher_slowed`` (distances and cached QFI: light, call-overhead-bound)."""
    return _slowed("fisher")


def slowed_quantum() -> Any:
    """Return ``quantum_slowed`` (compute-bound: the steadiest ratio)."""
    return _slowed("quantum")


def _tier_times() -> tuple[list[str], list[dict[str, Any]]]:
    """Run each tier once through the real runner; return table lines and the payloads."""
    from daemon.config import load_config
    from daemon.oneshot import run_once

    config = load_config()
    lines = ["tier       status    wall_s  budget_s  within"]
    payloads = []
    with tempfile.TemporaryDirectory() as tmp:
        for tier, budget in BUDGETS_S.items():
            start = time.perf_counter()
            _, payload = run_once(config, Path(tmp), tier)
            took = time.perf_counter() - start
            payloads.append(payload)
            ok = "yes" if took <= budget else "NO"
            lines.append(f"{tier:<10} {payload['status']:<8} {took:7.1f} {budget:9.0f}  {ok}")
    return lines, payloads


def _retimed_daily() -> list[str]:
    """Time a daily performance run that re-times a suspect, in a fresh process: the
    octahedron and quantum kernels and the Fisher kernel's slowed wrapper, 30 % slower
    than a baseline of two clean runs, so that its entries pause and are timed again while
    the others' extra rounds fill the pause. Return table lines."""
    from bench.perf_child import run_in_fresh_process
    from daemon.baselines import pool_samples

    options: dict[str, Any] = {
        "kernels": ["octahedron", "quantum", "fisher_slowed"],
        "extra_kernels": ["bench.checks:slowed_fisher"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = [run_in_fresh_process(folder, options) for _ in range(2)]
        baseline = {
            "calibration": runs[0].details["calibration"],
            "entries": pool_samples([r.details["samples"] for r in runs]),
        }
        start = time.perf_counter()
        result = run_in_fresh_process(folder, {**options, "baseline": baseline}, slowdown=0.3)
        took = time.perf_counter() - start
    retimed = sum("re-timed" in note for note in result.notes)
    budget = BUDGETS_S["daily"]
    ok = "yes" if took <= budget else "NO"
    return [
        f"daily performance check re-timing {retimed} entries (one kernel 30 % slower): "
        f"{took:.1f} s, budget {budget:.0f} s, within: {ok}"
    ]


def _ci_lines(daily: dict[str, Any]) -> list[str]:
    """Return the daily CI half-widths (% of the median) per kernel × batch."""
    widths = []
    for check in daily["checks"]:
        for m in check["measurements"]:
            if m["name"] == "latency_ci_half_width_ratio":
                widths.append((m["labels"]["kernel"], m["labels"]["batch"], float(m["value"])))
    lines = ["daily latency CI half-width (95 %, order statistics), % of median:"]
    for kernel, batch, w in widths:
        mark = "" if w <= 0.03 else "  (> 3 %)"
        lines.append(f"  {kernel:<12} {batch:<7} {w * 100:5.2f} %{mark}")
    if widths:
        values = [w for *_, w in widths]
        within = sum(v <= 0.03 for v in values)
        lines.append(
            f"  median {statistics.median(values) * 100:.2f} %, max {max(values) * 100:.2f} %, "
            f"{within}/{len(values)} within 3 %"
        )
    return lines


def _power(power_s: float) -> list[str]:
    """Run the regression power study for about ``power_s`` seconds; return table lines."""
    from bench.perf_child import run_in_fresh_process

    options: dict[str, Any] = {
        "kernels": list(SLOWED),
        "extra_kernels": list(SLOWED_SPECS),
        "batches": ["small"],
    }
    with tempfile.TemporaryDirectory() as folder:

        def trial(slowdown: float, extra: dict[str, Any], seed: int) -> CheckResult:
            return run_in_fresh_process(
                Path(folder), {**options, **extra}, slowdown=slowdown, seed=seed
            )

        return _power_trials(power_s, trial)


def _power_trials(
    power_s: float,
    trial: Callable[[float, dict[str, Any], int], CheckResult],
    rounds_per_baseline: int = ROUNDS_PER_BASELINE,
) -> list[str]:
    """Run the study's trials through ``trial(slowdown, extra options, seed)``; table lines.

    A new baseline is recorded every ``rounds_per_baseline`` rounds of levels, so that the
    rates are averaged over baselines rather than conditioned on one baseline's luck.
    """
    from daemon.baselines import BASELINE_RUNS, pool_samples

    # per kernel and level: trials, flagged (default), flagged (5 %), re-timed
    counts = {(k, lv): [0, 0, 0, 0] for k in SLOWED for lv in LEVELS}
    measured: dict[tuple[str, float], list[float]] = {key: [] for key in counts}
    thresholds: dict[str, list[float]] = {k: [] for k in SLOWED}
    deadline = time.perf_counter() + power_s
    seed = 100
    rounds = baselines = 0
    baseline: dict[str, Any] = {}
    while rounds == 0 or time.perf_counter() < deadline:  # at least one round of levels
        if rounds % rounds_per_baseline == 0:
            runs = [trial(0.0, {}, i).details for i in range(BASELINE_RUNS)]
            baseline = {
                "calibration": runs[0]["calibration"],
                "entries": pool_samples([r["samples"] for r in runs]),
            }
            baselines += 1
        rounds += 1
        for level in LEVELS:
            seed += 1
            result = trial(level, {"baseline": baseline}, seed)
            by_kernel: dict[str, dict[str, float]] = {}
            for m in result.measurements:
                by_kernel.setdefault(m.labels.get("kernel", ""), {})[m.name] = m.value
            retimed = {
                sample["kernel"]: len(sample["pass_levels"]) > 1
                for sample in result.details["samples"].values()
            }
            for kernel in SLOWED:
                values = by_kernel[kernel]
                slowdown = values["normalized_slowdown_ratio"]
                key = (kernel, level)
                counts[key][0] += 1
                counts[key][1] += values["performance_regression_ratio"] > 0
                counts[key][2] += values["regression_pvalue"] < 0.002 and slowdown > 0.05
                counts[key][3] += retimed[kernel]
                measured[key].append(slowdown)
                if level == 0.0:
                    thresholds[kernel].append(values["regression_threshold_ratio"])
    lines = [
        f"regression power (batch small, default options, {power_s:.0f} s, levels round-robin;"
        f" {baselines} baselines, each pooled from {BASELINE_RUNS} clean runs, a new one every"
        f" {rounds_per_baseline} rounds):",
        "  kernel             injected  trials  median measured  re-timed  flagged (default)"
        "  (plain 5 % min effect)",
    ]
    for kernel in SLOWED:
        spread = thresholds[kernel]
        lines.append(
            f"  {kernel}: regression threshold {min(spread) * 100:.1f}–{max(spread) * 100:.1f} %"
            " (both passes together; from the baselines)"
        )
        for level in LEVELS:
            n, f10, f5, again = counts[(kernel, level)]
            med = statistics.median(measured[(kernel, level)]) * 100
            lines.append(
                f"  {kernel:<18} {level * 100:6.0f} %  {n:6d}  {med:13.1f} %"
                f"  {again / n * 100:6.1f} %  {f10 / n * 100:15.1f} %  {f5 / n * 100:20.1f} %"
            )
        for label, column in (("default", 1), ("5 %", 2)):
            powered = [
                lv
                for lv in LEVELS[1:]
                if counts[(kernel, lv)][column] / counts[(kernel, lv)][0] >= 0.95
            ]
            smallest = f"{min(powered) * 100:.0f} %" if powered else "none"
            lines.append(
                f"  {kernel}: smallest slowdown flagged in >= 95 % (min effect {label}): {smallest}"
            )
    return lines


def checks_table(power_s: float | None = None) -> str:
    """Return the check-tier benchmark table (see the module docstring)."""
    if power_s is None:
        power_s = float(os.environ.get("KERNELWATCH_BENCH_POWER_S", "600"))
    tier_lines, payloads = _tier_times()
    lines = [*tier_lines, *_retimed_daily(), "", *_ci_lines(payloads[0]), "", *_power(power_s)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(checks_table())
