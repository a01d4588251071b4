"""The daily ``performance`` check: latency, throughput, memory and cache per kernel and batch.

For each kernel × batch config (small 256, medium 512, large 1024 rows) it runs warm-up
calls, then ``repetitions`` timed calls, each followed by a fixed calibration workload of
the kernel's character (compute-, memory- or dispatch-bound, :class:`checks.timing.Calibration`) in
the same process, and compares with the baseline the daemon passes in
``options["baseline"]`` (learned samples) and ``options["baselines"]`` (configured figures,
which override learned ones field by field).

The timed calls are spread over the whole run: ``rounds`` passes over every kernel × batch,
each timing its share of the repetitions, so that a burst of load from a neighbour shifts
every entry a little rather than one entry a lot (measured on the 2-core reference host:
the run-to-run spread of an entry's median kernel ÷ calibration ratio fell from 2.7–7.7 %
timed in one block to 1.7–5.9 % spread over 8 rounds). Then, as benchmark harnesses run
until a result is stable, further rounds of ``extra_share`` calls time the entries whose
latency interval is still wider than ``ci_target`` (3 % of the median) until it is narrow
enough or ``extra_timing_s`` seconds of extra timing are spent: on a quiet host the run
ends after the minimum, on a noisy one it buys precision within a bounded time. (The
interval of the median narrows as 1/√n; here the spread of single calls within one run is
5–15 %, which 40 calls leave at a half-width of 1–7 %.)

A slowdown is not believed at once. An entry whose first pass (its ``repetitions`` calls,
before any extra rounds) is suspect, slower than the baseline by more than ``confirm_z``
(2) run-to-run spreads (``retime_threshold_ratio``, about 9 % over a five-run baseline),
waits ``confirm_after_s`` seconds (30), warms up again and is timed a second time, with
the same repetitions and rounds. The other entries' extra rounds fill the pause (the
suspects sit them out), so a run that re-times is longer than one that does not by the
re-timing and whatever part of the pause the extra rounds did not fill. It is a regression
only when the re-timing is over that bar on its own too, and both passes together (the
geometric mean of their levels) are over the regression threshold, which is the one for a
mean of two passes: narrower than a single pass's, since their noise partly averages out
(:func:`checks.stats.effect_threshold`; at least the 10 % minimum effect). On a shared
host the slow states last about a minute and move every kernel at once, so they rarely
cover both passes, while a kernel that really got slower is slow in both. A note gives
each pass's figure. Clean runs rarely pause (on the reference host, 0 of 78 and 3 of 45
clean trials in two power studies, and 7 % of runs resampled from 125 quiet ones).

Some host states last longer and slow every instruction, not just the share of the CPU
this process gets: then the kernels do not slow alike, and dividing by the calibration
cancels the state only in part (on the 2-core reference VM, for over 20 minutes, the
calibrations' CPU times read 11–24 % over the baseline's and the octahedron kernel's
normalised slowdown +17 to +26 %, raising false warnings in 7 of 20 clean daily runs).
The calibration's own CPU time shows such a state, and each kernel's level moves with it
by the kernel's own amount. So levels are adjusted for the host (``host_response``, on by
default): how a kernel's level moves with its calibration's CPU time (β, near 0 for a
kernel that slows as its calibration does, near 1 for one that slows twice as much) is
learned from the baseline's runs, pooled over the kernel's batch configs and shrunk toward
``host_response_prior`` (1) by ``host_response_weight`` (0.05), and every level, the
baseline runs' and this run's passes', is divided by its calibration level to the power
β (:class:`checks.stats.HostResponse`), so that the baseline's spread narrows as well. A
pass whose calibration ran faster than the baseline runs' (geometric mean) is divided by
that mean instead: a β misjudged on a quiet baseline then costs power in a slow state,
never a false alarm in a fast one. A baseline recorded before runs kept their calibration
level is not adjusted.

The bars can also be widened by how much slower the calibration ran than in the baseline
(:class:`checks.stats.HostWidening`: ``host_widening`` × (c − ``host_dead_zone``) when
positive; 0 by default, 1 until 2026-12-07): the re-timing bar of each pass by that pass's
calibration, the regression threshold by both passes' together; a note says by how much.
One factor for every kernel cost the kernels whose level does not move with the host
their power in such states (:data:`checks.stats.DEFAULT_HOST_WIDENING`).
``host_slowdown_ratio`` reports the host either way.

Baseline entries are keyed by what determines a kernel's speed (:func:`entry_key`): the
kernel, the batch config, the execution mode the batch ran in and, when conservative, its
``chunk_rows``. A run whose key has no baseline yet (the first run, or the first run after
recovery switched the mode) records one and says so; timings are never compared across
modes. Peak memory is the exception: it is compared with the entry recorded in the batch
config's own mode, since a more conservative mode is how recovery brings memory back down.

Measurements (labels ``kernel``, ``batch``, ``profile_id``, ``seed``):

``latency_per_batch_seconds``, ``latency_ci_low_seconds``, ``latency_ci_high_seconds``
    Median latency of one batch and its 95 % order-statistic confidence interval.
``latency_ci_half_width_ratio``
    Half the interval's width over the median.
``calibration_seconds``
    Median time of the kernel's calibration workload in this run.
``throughput_per_second``
    Rows per second at the median latency.
``peak_memory_bytes``, ``memory_limit_bytes``
    MLX's peak memory counter over one call (above what MLX held when it started); the
    batch config's memory limit.
``cache_efficiency_ratio``
    hits / (hits + misses) of the kernel's caches over the timed calls (after warm-up);
    left out for a kernel whose caches were not used.
``latency_baseline_seconds``, ``host_slowdown_ratio``
    The baseline's median latency, and this run's median over it, minus 1 (a host that got
    slower moves this one).
``normalized_slowdown_ratio``, ``regression_pvalue``, ``regression_threshold_ratio``,
``retime_threshold_ratio``, ``performance_regression_ratio``
    This run's level over the baseline's, minus 1. The level is the mean CPU time of the
    kernel's fastest ``fast_share`` of calls over that of its calibration's
    (:func:`checks.stats.fastest_share_ratio`: interference only adds time, so the fastest
    calls are the steadiest), of both passes when re-timed, adjusted for the host (above);
    the baseline's is the geometric mean of its runs' levels, adjusted alike. Then the
    one-sided Mann–Whitney p-value of the per-call ratios kernel ÷ calibration against the
    baseline's; the smallest slowdown that counts (``min_effect``, widened by ``spread_z``
    times the run-to-run spread of the baseline's levels, pooled over the kernel's batch
    configs: :func:`checks.stats.effect_threshold`, then for the host when
    ``host_widening`` is set); the slowdown of the first pass that is timed again (absent
    when ``confirm_after_s`` is 0; widened alike); and the normalised slowdown when
    p < ``alpha`` and the passes pass the rules above, else 0 (a kernel that got slower).
``calibration_slowdown_ratio``
    The mean CPU time of the calibration's fastest ``fast_share`` of calls over the
    baseline's, minus 1 (of both passes together when re-timed), for every compared entry
    whose baseline holds calibration CPU times: a host whose every instruction got slower
    (not just busier) moves it, and with ``host_widening`` it widens the bars above.
``host_response_ratio``
    With ``host_response``: the β the levels were adjusted by (above), 0 when the baseline
    holds no calibration levels.
``memory_overhead_ratio``
    Peak memory over the baseline's, minus 1.

Plus ``peak_rss_bytes`` (labels ``profile_id``, ``seed``): the child process's peak RSS.
Baseline-relative measurements are present only with a baseline; without one, a note says
so and ``details["samples"]`` (always present) lets the daemon record one. Each entry of
``samples`` carries its raw samples, ``run_ratio_medians``, ``run_levels`` and
``run_calibration_levels`` (this run's median ratio, level and calibration level, one value
each, so that pooled entries hold one per run), ``pass_levels`` and
``pass_calibration_levels`` (per pass: the first, and the re-timing if any), the
``profile_id``, whether this run found a ``regressed`` kernel, and whether it was
``faster_than_baseline`` by more than the threshold (the daemon pools only runs of the same
profile that were neither into a baseline). ``details`` also carries the
``fingerprint`` record and its ``digest``, and per compared entry the :class:`Judgement`
its verdict rests on (``judgements``), which replays it under another widening, and per
re-timed entry the index of its first re-timed sample (``retimed_from``).

The inputs come from ``options["input_seed"]`` (0), not the run's seed: latency depends on
the data, and a run must time the same inputs as its baseline. The ``seed`` label says which.

Options: ``repetitions`` (40, the minimum per entry), ``rounds`` (8), ``ci_target`` (0.03),
``extra_share`` (5), ``extra_timing_s`` (25), ``warmup`` (3), ``alpha`` (0.002),
``min_effect`` (0.10), ``spread_floor`` (0.04), ``spread_z`` (2.5), ``fast_share`` (0.25),
``confirm_after_s`` (30; 0 judges the first pass alone, against a one-pass threshold),
``confirm_z`` (2), ``host_dead_zone`` (0), ``host_widening`` (0: off),
``host_response`` (true), ``host_response_prior`` (1, at most 2), ``host_response_weight``
(0.05),
``calibration_size`` (1024 columns), ``calibration_rounds`` (2), ``calibration_memory_mb``
(32), ``baseline``, ``baseline_state``, ``baselines``, and those of :mod:`checks.common`.
A numeric option out of range (``alpha`` and ``fast_share`` in (0, 1], the others at least
0, the two durations at most the check's 300 s timeout), NaN or infinite, or a
``host_response`` that is not a boolean, is an error naming it.

Configured baselines, in config::

    [checks.performance.options.baselines.octahedron.small]
    latency_seconds = 0.005          # median latency of one batch
    peak_memory_bytes = 100_000_000  # MLX peak memory of one batch

Each field overrides the learned one for that kernel and batch, for runs in the batch
config's own mode (a run in another mode is not compared with them, and a note says so);
ratios (and so the normalised regression test) only come from learned samples.
"""

from __future__ import annotations

import math
import resource
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, final

from checks.api import CheckContext, CheckResult, Measurement
from checks.common import (
    batch_profile,
    labels,
    load_active_profile,
    option_bool,
    option_float,
    option_int,
    select_batches,
    select_kernels,
)
from checks.fingerprint import collect_fingerprint

if TYPE_CHECKING:
    from checks.stats import HostResponse, HostWidening, Verdict
    from kernels.profile import Profile
    from kernels.registry import BatchConfig, Kernel

__all__ = [
    "DEFAULT_CONFIRM_AFTER_S",
    "Bars",
    "Judgement",
    "PerformanceCheck",
    "Rejudged",
    "Rule",
    "Timings",
    "bars",
    "entry_key",
    "judge",
    "peak_rss_bytes",
    "timing_inputs",
]

#: Seconds a slowdown over its threshold waits before it is timed again (0: judge the first
#: pass alone). The host's slow states last about a minute; see the module docstring.
DEFAULT_CONFIRM_AFTER_S = 30.0


def entry_key(kernel: str, batch: str, mode: str, chunk_rows: int | None = None) -> str:
    """Return the key of one kernel × batch config × execution mode in samples and baselines.

    ``chunk_rows`` is part of the key in conservative mode only (the other modes ignore it).

    >>> entry_key("octahedron", "small", "aggressive", 128)
    'octahedron/small/aggressive'
    >>> entry_key("octahedron", "large", "conservative", 128)
    'octahedron/large/conservative:128'
    """
    key = f"{kernel}/{batch}/{mode}"
    return f"{key}:{chunk_rows}" if mode == "conservative" and chunk_rows is not None else key


def timing_inputs(kernel: Kernel, rows: int, profile: Profile, input_seed: int) -> Any:
    """Return the inputs the daily check times ``kernel`` on at ``rows`` rows.

    Latency depends on the data (the projection's Newton steps), so they come from a fixed
    seed and the kernel's name: runs stay comparable with their baseline, and replayable.
    """
    import numpy as np

    rng = np.random.default_rng([input_seed, zlib.crc32(kernel.name.encode())])
    return kernel.make_inputs(rng, rows, profile)


def peak_rss_bytes() -> int:
    """Return this process's peak resident set size in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _configured(options: Mapping[str, Any], kernel: str, batch: str) -> Mapping[str, Any]:
    """Return the configured baseline fields of one kernel and batch (empty when none)."""
    table = options.get("baselines") or {}
    entry = table.get(kernel, {}).get(batch, {}) if isinstance(table, Mapping) else {}
    return entry if isinstance(entry, Mapping) else {}


def _entries(options: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the learned baseline's entries (empty when none)."""
    record = options.get("baseline")
    entries = record.get("entries", {}) if isinstance(record, Mapping) else {}
    return entries if isinstance(entries, Mapping) else {}


def _memory_entry(
    entries: Mapping[str, Any], kernel: str, batch: BatchConfig, profile: Profile
) -> Mapping[str, Any]:
    """Return the entry whose peak memory this batch is compared with (empty when none).

    That is the entry of the batch config's own mode; failing that, any entry of the same
    kernel and batch (the first run may already have been in another mode).
    """
    native = entries.get(entry_key(kernel, batch.name, batch.vectorization, profile.chunk_rows))
    if isinstance(native, Mapping):
        return native
    for entry in entries.values():
        if isinstance(entry, Mapping) and (entry.get("kernel"), entry.get("batch")) == (
            kernel,
            batch.name,
        ):
            return entry
    return {}


@dataclass(slots=True)
class Timings:
    """One entry's CPU times in one run, kernel and calibration per repetition, and where
    its re-timing (if any) starts: what its levels and verdict are computed from, kept in
    the power study's records so that a study can be judged again under another rule
    (:mod:`bench.power_rejudge`)."""

    kernel_cpu: list[float] = field(default_factory=list)
    calibration_cpu: list[float] = field(default_factory=list)
    #: Index of the first re-timed sample, when the case was re-timed to confirm a slowdown.
    retimed_from: int | None = None

    def pass_samples(self, samples: list[float]) -> list[list[float]]:
        """Split ``samples`` (one per repetition) by timing pass: the first, and the
        re-timing if any."""
        cut = self.retimed_from
        return [samples] if cut is None else [samples[:cut], samples[cut:]]

    def first_pass(self) -> Timings:
        """Return the first pass alone (these timings when not re-timed)."""
        cut = self.retimed_from
        if cut is None:
            return self
        return Timings(self.kernel_cpu[:cut], self.calibration_cpu[:cut])

    def pass_levels(self, share: float) -> list[float]:
        """Return the level of each timing pass: the first, and the re-timing if any
        (:func:`checks.stats.fastest_share_ratio`)."""
        from checks.stats import fastest_share_ratio

        return [
            fastest_share_ratio(kernel, calibration, share)
            for kernel, calibration in zip(
                self.pass_samples(self.kernel_cpu),
                self.pass_samples(self.calibration_cpu),
                strict=True,
            )
        ]

    def pass_calibration_levels(self, share: float) -> list[float]:
        """Return the mean CPU time of the calibration's fastest ``share`` of calls, per pass."""
        from checks.stats import fastest_share_mean

        return [fastest_share_mean(part, share) for part in self.pass_samples(self.calibration_cpu)]

    def level(self, share: float) -> float:
        """Return the run's level: the geometric mean of its passes' levels."""
        return _geometric_mean(self.pass_levels(share))

    def calibration_level(self, share: float) -> float:
        """Return the run's calibration level: the geometric mean of its passes'."""
        return _geometric_mean(self.pass_calibration_levels(share))

    @property
    def ratios(self) -> list[float]:
        """Kernel ÷ calibration CPU time per repetition."""
        return [
            k / c if c > 0 else float("inf")
            for k, c in zip(self.kernel_cpu, self.calibration_cpu, strict=True)
        ]

    def baseline_fields(self, share: float) -> dict[str, Any]:
        """Return what a baseline pools of this run (see :mod:`daemon.baselines`)."""
        import numpy as np

        ratios = self.ratios
        return {
            "cpu_seconds": list(self.kernel_cpu),
            "calibration_cpu_seconds": list(self.calibration_cpu),
            "ratio": ratios,
            "run_ratio_medians": [float(np.median(ratios))],
            "run_levels": [self.level(share)],
            "run_calibration_levels": [self.calibration_level(share)],
        }

    def to_record(self) -> dict[str, Any]:
        """Return these timings as JSON-ready fields (seven significant digits)."""
        return {
            "kernel_cpu": [float(f"{v:.7g}") for v in self.kernel_cpu],
            "calibration_cpu": [float(f"{v:.7g}") for v in self.calibration_cpu],
            "retimed_from": self.retimed_from,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Timings:
        """Return the timings :meth:`to_record` wrote."""
        cut = record.get("retimed_from")
        return cls(
            [float(v) for v in record["kernel_cpu"]],
            [float(v) for v in record["calibration_cpu"]],
            None if cut is None else int(cut),
        )


def _geometric_mean(values: Sequence[float]) -> float:
    """Return the geometric mean of positive ``values`` (the value itself for one)."""
    if len(values) == 1:
        return values[0]
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class _Case:
    """One kernel × batch config being timed: its call, and the samples gathered so far."""

    kernel: Kernel
    batch: BatchConfig
    profile: Profile
    call: Callable[[], Any]
    workload: Callable[[], None]
    key: str
    kernel_wall: list[float] = field(default_factory=list)
    calibration_wall: list[float] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """How an entry's timings are judged against its baseline: the check's options
    ``alpha``, ``fast_share`` (``share``), ``min_effect``, ``spread_floor``, ``spread_z``,
    ``confirm_z`` (None when the first pass alone is judged), the host widening and, when
    levels are adjusted for the host's speed, the :class:`checks.stats.HostResponse`."""

    alpha: float
    share: float
    min_effect: float
    spread_floor: float
    spread_z: float
    confirm_z: float | None
    widening: HostWidening
    response: HostResponse | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, judge_first_pass_alone: bool) -> Rule:
        """Return the rule the check's ``options`` set (defaults for those absent);
        ``confirm_z`` is None when ``judge_first_pass_alone`` (``confirm_after_s`` 0)."""
        from checks.stats import (
            DEFAULT_ALPHA,
            DEFAULT_CONFIRM_Z,
            DEFAULT_FAST_SHARE,
            DEFAULT_HOST_DEAD_ZONE,
            DEFAULT_HOST_RESPONSE,
            DEFAULT_HOST_RESPONSE_PRIOR,
            DEFAULT_HOST_RESPONSE_WEIGHT,
            DEFAULT_HOST_WIDENING,
            DEFAULT_MIN_EFFECT,
            DEFAULT_SPREAD_FLOOR,
            DEFAULT_SPREAD_Z,
            HostResponse,
            HostWidening,
        )

        confirm_z = option_float(options, "confirm_z", DEFAULT_CONFIRM_Z)
        response = HostResponse(
            prior=option_float(options, "host_response_prior", DEFAULT_HOST_RESPONSE_PRIOR, high=2),
            weight=option_float(options, "host_response_weight", DEFAULT_HOST_RESPONSE_WEIGHT),
        )
        return cls(
            alpha=option_float(options, "alpha", DEFAULT_ALPHA, high=1.0, low_open=True),
            share=option_float(options, "fast_share", DEFAULT_FAST_SHARE, high=1.0, low_open=True),
            min_effect=option_float(options, "min_effect", DEFAULT_MIN_EFFECT),
            spread_floor=option_float(options, "spread_floor", DEFAULT_SPREAD_FLOOR),
            spread_z=option_float(options, "spread_z", DEFAULT_SPREAD_Z),
            confirm_z=None if judge_first_pass_alone else confirm_z,
            widening=HostWidening(
                dead_zone=option_float(options, "host_dead_zone", DEFAULT_HOST_DEAD_ZONE),
                factor=option_float(options, "host_widening", DEFAULT_HOST_WIDENING),
            ),
            response=response
            if option_bool(options, "host_response", DEFAULT_HOST_RESPONSE)
            else None,
        )


def _run_levels(entry: Mapping[str, Any], share: float) -> list[float]:
    """Return a baseline entry's per-run levels (:func:`checks.stats.fastest_share_ratio`).

    An entry recorded before levels were stored gets one level from its pooled CPU times;
    an entry without those either has none (empty list).
    """
    from checks.stats import fastest_share_ratio

    levels = entry.get("run_levels")
    if isinstance(levels, list):
        return [float(v) for v in levels if isinstance(v, int | float) and v > 0]
    kernel, calibration = entry.get("cpu_seconds"), entry.get("calibration_cpu_seconds")
    if kernel and calibration:
        return [fastest_share_ratio(kernel, calibration, share)]
    return []


def _run_calibration_levels(entry: Mapping[str, Any], runs: int) -> list[float]:
    """Return a baseline entry's per-run calibration levels (calibration CPU seconds), or
    none when it holds no such level for each of its ``runs`` runs (recorded before they
    were kept)."""
    levels = entry.get("run_calibration_levels")
    if not isinstance(levels, list) or len(levels) != runs:
        return []
    values = [float(v) for v in levels if isinstance(v, int | float) and v > 0]
    return values if len(values) == runs else []


def _kernel_entries(
    entries: Mapping[str, Any], kernel: str, kind: str, key: str
) -> list[Mapping[str, Any]]:
    """Return the kernel's other baseline entries divided by the same calibration kind:
    their runs move alike with entry ``key``'s, so their spread and host response are
    pooled with its own."""
    return [
        entry
        for other, entry in entries.items()
        if other != key
        and isinstance(entry, Mapping)
        and entry.get("kernel") == kernel
        and entry.get("calibration_kind") == kind
    ]


def _geometric_slowdown(slowdowns: Sequence[float]) -> float:
    """Return the slowdown of the geometric mean of levels that are ``1 + s`` each."""
    return math.exp(sum(math.log1p(v) for v in slowdowns) / len(slowdowns)) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    """What the verdict on one entry rests on, kept in ``details["judgements"]`` so that it
    can be replayed under another :class:`checks.stats.HostWidening`.

    ``slowdowns`` and ``calibration_slowdowns`` hold, per timing pass (the first, and the
    re-timing if any), the normalised slowdown and the calibration's CPU slowdown against
    the baseline's (0 when the baseline holds no calibration CPU times);
    ``retime_threshold`` and ``threshold`` are the bars before widening (``retime_threshold``
    is None when the first pass alone is judged); ``significant`` is the Mann–Whitney test's
    outcome over all the entry's calls. ``host_response`` is the β the levels were adjusted
    by (:class:`checks.stats.HostResponse`; 0 when they were not), so that ``slowdowns``
    and the bars are of adjusted levels.
    """

    slowdowns: tuple[float, ...]
    calibration_slowdowns: tuple[float, ...]
    retime_threshold: float | None
    threshold: float
    significant: bool
    host_response: float = 0.0

    @property
    def slowdown(self) -> float:
        """The slowdown of all passes together (their levels' geometric mean)."""
        return _geometric_slowdown(self.slowdowns)

    @property
    def calibration_slowdown(self) -> float:
        """The calibration's CPU slowdown over all passes together."""
        return _geometric_slowdown(self.calibration_slowdowns)

    def threshold_for(self, widening: HostWidening) -> float:
        """The bar all passes together must clear, widened for this run's host."""
        return self.threshold + widening.slack(self.calibration_slowdown)

    def retime_threshold_for(self, widening: HostWidening, index: int = 0) -> float | None:
        """The bar pass ``index`` must clear on its own, widened for its host (None when
        the first pass alone is judged)."""
        if self.retime_threshold is None:
            return None
        return self.retime_threshold + widening.slack(self.calibration_slowdowns[index])

    def suspect(self, widening: HostWidening) -> bool:
        """Whether the first pass is slow enough to be timed again."""
        bar = self.retime_threshold_for(widening)
        return bar is not None and self.significant and self.slowdowns[0] > bar

    def regressed(self, widening: HostWidening) -> bool:
        """Whether this is a regression: significant, all passes together over the threshold
        and, when suspects are timed again, re-timed with each pass over its own bar (the
        mean of a slow first pass and a clean re-timing can exceed the threshold alone)."""
        if not self.significant or self.slowdown <= self.threshold_for(widening):
            return False
        retime = self.retime_threshold
        if retime is None:
            return True
        return len(self.slowdowns) >= 2 and all(
            s > retime + widening.slack(c)
            for s, c in zip(self.slowdowns, self.calibration_slowdowns, strict=True)
        )

    @property
    def faster_than_baseline(self) -> bool:
        """Whether all passes together are faster than the baseline by more than the
        regression threshold: as unlikely in a clean run as a regression, and a run not to
        learn a baseline from (measured: one clean run of the octahedron kernel's large
        batch read 26 % fast, between runs 4–6 % slow, and its spread, pooled into a
        rolling baseline, doubled the kernel's threshold for the next five rounds)."""
        return self.slowdown < -self.threshold

    def to_record(self) -> dict[str, Any]:
        """Return this judgement as JSON-ready fields."""
        return {
            "slowdowns": list(self.slowdowns),
            "calibration_slowdowns": list(self.calibration_slowdowns),
            "retime_threshold": self.retime_threshold,
            "threshold": self.threshold,
            "significant": self.significant,
            "host_response": self.host_response,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Judgement:
        """Return the judgement :meth:`to_record` wrote."""
        retime = record["retime_threshold"]
        return cls(
            slowdowns=tuple(float(v) for v in record["slowdowns"]),
            calibration_slowdowns=tuple(float(v) for v in record["calibration_slowdowns"]),
            retime_threshold=None if retime is None else float(retime),
            threshold=float(record["threshold"]),
            significant=bool(record["significant"]),
            host_response=float(record.get("host_response", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class _Reference:
    """What one entry's timings are judged against: its baseline's per-call ratios, the
    geometric mean of its baseline runs' levels (adjusted for the host by
    ``host_response``, 0 when not), the smallest slowdown that counts, and, when suspect
    slowdowns are timed again, the slowdown of one pass that makes it suspect
    (``retime_threshold``; None when the first pass alone is judged), the mean of the
    fastest share of the baseline's calibration CPU times (``calibration``; None when it
    holds none), and the rule."""

    ratios: list[float]
    level: float
    threshold: float
    retime_threshold: float | None
    calibration: float | None
    host_response: float
    rule: Rule
    #: The geometric mean of the baseline runs' calibration levels, below which a run's is
    #: not adjusted when the response is one-sided (0 when it is not).
    response_floor: float = 0.0

    def judgement(self, timings: Timings) -> tuple[Judgement, Verdict]:
        """Return what ``timings`` (all their passes) are judged on, and the Mann–Whitney
        test of their ratios whose ``slowdown`` is that of all passes together (not yet
        judged)."""
        from checks.stats import HostResponse, compare

        share = self.rule.share
        calibration_levels = timings.pass_calibration_levels(share)
        slowdowns = tuple(
            HostResponse.adjust(v, max(c, self.response_floor), self.host_response) / self.level - 1
            for v, c in zip(timings.pass_levels(share), calibration_levels, strict=True)
        )
        base = self.calibration
        calibration_slowdowns = tuple(
            0.0 if base is None else c / base - 1 for c in calibration_levels
        )
        verdict = compare(
            timings.ratios,
            self.ratios,
            alpha=self.rule.alpha,
            min_effect=self.threshold,
            slowdown=_geometric_slowdown(slowdowns),
        )
        judgement = Judgement(
            slowdowns=slowdowns,
            calibration_slowdowns=calibration_slowdowns,
            retime_threshold=self.retime_threshold,
            threshold=self.threshold,
            significant=verdict.significant,
            host_response=self.host_response,
        )
        return judgement, verdict

    def suspect(self, timings: Timings) -> bool:
        """Whether the first pass of ``timings`` is slow enough to be timed again:
        significant and over ``retime_threshold``, widened for the host."""
        judgement, _ = self.judgement(timings.first_pass())
        return judgement.suspect(self.rule.widening)

    def verdict(self, timings: Timings) -> tuple[Judgement, Verdict]:
        """Judge ``timings`` (all their passes) against this reference."""
        judgement, verdict = self.judgement(timings)
        regression = verdict.slowdown if judgement.regressed(self.rule.widening) else 0.0
        return judgement, replace(verdict, regression=regression)


def _reference(
    entries: Mapping[str, Any], key: str, kernel: str, character: str, rule: Rule
) -> tuple[_Reference | None, str | None]:
    """Return what entry ``key`` (of ``kernel``, whose calibration is of ``character``) is
    judged against, and a note when its learned baseline entry cannot be used: it was
    divided by another calibration kind, or lacks ratios or levels. No reference and no
    note when there is no learned entry."""
    from checks.stats import HostResponse, effect_threshold, fastest_share_mean

    learned = entries.get(key)
    if not isinstance(learned, Mapping) or not learned:
        return None, None
    ratios = learned.get("ratio")
    kind = learned.get("calibration_kind", character)
    levels = _run_levels(learned, rule.share)
    if ratios and kind != character:
        return None, f"{key}: baseline divided by the {kind} calibration: not compared"
    if not (ratios and levels):
        return None, f"{key}: no learned ratio samples in the baseline"
    if len(ratios) < 2:
        return None, None
    others = _kernel_entries(entries, kernel, kind, key)
    groups = [(levels, _run_calibration_levels(learned, len(levels)))] + [
        (run_levels, _run_calibration_levels(entry, len(run_levels)))
        for entry in others
        if (run_levels := _run_levels(entry, rule.share))
    ]
    beta = 0.0
    calibrations = groups[0][1]
    if rule.response is not None and calibrations:
        # Adjust every run that has its calibration level; the others (recorded before
        # those were kept) cannot be, and stay out of the pooled spread.
        beta = rule.response.fit(groups)
        groups = [(lv, cal) for lv, cal in groups if cal]
    adjusted = [
        [HostResponse.adjust(v, c, beta) for v, c in zip(lv, cal, strict=True)] if beta else lv
        for lv, cal in groups
    ]
    levels, companions = adjusted[0], adjusted[1:]

    def threshold(z: float, least: float, passes: int) -> float:
        return effect_threshold(
            levels,
            min_effect=least,
            spread_floor=rule.spread_floor,
            spread_z=z,
            companions=companions,
            passes=passes,
        )

    confirm_z = rule.confirm_z
    retime = None if confirm_z is None else threshold(confirm_z, 0.0, 1)
    judged = threshold(rule.spread_z, rule.min_effect, 1 if confirm_z is None else 2)
    calibration_cpu = learned.get("calibration_cpu_seconds")
    calibration = fastest_share_mean(calibration_cpu, rule.share) if calibration_cpu else None
    return (
        _Reference(
            ratios=[float(r) for r in ratios],
            level=_geometric_mean(levels),
            threshold=judged,
            retime_threshold=retime,
            calibration=calibration if calibration and calibration > 0 else None,
            host_response=beta,
            rule=rule,
            response_floor=(
                _geometric_mean(calibrations)
                if beta and rule.response is not None and rule.response.one_sided
                else 0.0
            ),
        ),
        None,
    )


@dataclass(frozen=True, slots=True)
class Rejudged:
    """One recorded run judged again (:func:`judge`): the judgement, the timings it rests
    on (both passes, or the first alone), and whether the rule wanted a re-timing the
    record does not hold (then the first pass alone is judged, as a run that re-timed
    nothing would be)."""

    judgement: Judgement
    timings: Timings
    missing_retime: bool


def judge(
    entries: Mapping[str, Any],
    key: str,
    kernel: str,
    character: str,
    timings: Timings,
    rule: Rule,
) -> Rejudged | None:
    """Judge a run's ``timings`` of entry ``key`` against the baseline ``entries`` under
    ``rule`` as the check does, for a study judged again (:mod:`bench.power_rejudge`);
    None when the baseline cannot be compared with. A re-timing the rule would not have
    asked for is left out."""
    reference, _ = _reference(entries, key, kernel, character, rule)
    if reference is None:
        return None
    retime = rule.confirm_z is not None and reference.suspect(timings)
    judged = timings if retime and timings.retimed_from is not None else timings.first_pass()
    return Rejudged(
        judgement=reference.verdict(judged)[0],
        timings=judged,
        missing_retime=retime and timings.retimed_from is None,
    )


@dataclass(frozen=True, slots=True)
class Bars:
    """What a baseline entry's runs are judged by under the check's options (for
    ``kernelwatch baseline show``): the learned host response β (0 when levels are not
    adjusted), the slowdown both passes together must exceed, and the one that has a
    first pass timed again (None when the first pass is judged alone)."""

    host_response: float
    threshold: float
    retime_threshold: float | None


def bars(entries: Mapping[str, Any], key: str, options: Mapping[str, Any]) -> Bars | None:
    """Return the :class:`Bars` of baseline entry ``key`` under the check's ``options``, as
    a run is judged against ``entries``; None when the entry cannot be compared with (no
    ratios or levels, or a single sample)."""
    entry = entries.get(key)
    if not isinstance(entry, Mapping):
        return None
    confirm_after_s = option_float(
        options, "confirm_after_s", DEFAULT_CONFIRM_AFTER_S, high=PerformanceCheck.timeout_s
    )
    rule = Rule.from_options(options, judge_first_pass_alone=confirm_after_s == 0)
    kernel = str(entry.get("kernel", key.split("/", 1)[0]))
    character = str(entry.get("calibration_kind", ""))
    reference, _ = _reference(entries, key, kernel, character, rule)
    if reference is None:
        return None
    return Bars(
        host_response=reference.host_response,
        threshold=reference.threshold,
        retime_threshold=reference.retime_threshold,
    )


def _time_case(case: _Case, repetitions: int) -> None:
    """Time ``repetitions`` interleaved calls of ``case`` and add them to its samples.

    Cache counts are taken around the case's own calls (the counters are per kernel, not
    per batch config).
    """
    from checks.timing import time_interleaved

    hits0, misses0 = case.kernel.cache_stats()
    timed = time_interleaved(case.call, case.workload, repetitions=repetitions, warmup=0)
    hits1, misses1 = case.kernel.cache_stats()
    case.hits += hits1 - hits0
    case.misses += misses1 - misses0
    case.kernel_wall += timed.kernel
    case.calibration_wall += timed.calibration
    case.timings.kernel_cpu += timed.kernel_cpu
    case.timings.calibration_cpu += timed.calibration_cpu


def _shares(total: int, parts: int) -> list[int]:
    """Split ``total`` repetitions into ``parts`` near-equal positive shares.

    >>> _shares(40, 8), _shares(10, 4), _shares(3, 8)
    ([5, 5, 5, 5, 5, 5, 5, 5], [3, 3, 2, 2], [1, 1, 1])
    """
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@final
class PerformanceCheck:
    """Times every kernel × batch config against a calibration workload (see the module)."""

    name = "performance"
    tier = "daily"
    timeout_s = 300.0

    def run(self, context: CheckContext) -> CheckResult:
        """Measure every selected kernel and batch config; see the module docstring."""
        import numpy as np

        from checks.stats import median_ci
        from checks.timing import Calibration, peak_mlx_memory

        options = context.options
        repetitions = option_int(options, "repetitions", 40, minimum=2)
        rounds = option_int(options, "rounds", 8)
        ci_target = option_float(options, "ci_target", 0.03)
        extra_share = option_int(options, "extra_share", 5, minimum=0)
        extra_timing_s = option_float(options, "extra_timing_s", 25.0, high=self.timeout_s)
        warmup = option_int(options, "warmup", 3)
        # Latency depends on the data (the projection's Newton steps), so timing inputs come
        # from a fixed seed: runs stay comparable with their baseline, and still replayable.
        input_seed = option_int(options, "input_seed", 0, minimum=0)
        confirm_after_s = option_float(
            options, "confirm_after_s", DEFAULT_CONFIRM_AFTER_S, high=self.timeout_s
        )
        rule = Rule.from_options(options, judge_first_pass_alone=confirm_after_s == 0)
        fast_share, widening = rule.share, rule.widening
        calibration = Calibration(
            size=option_int(options, "calibration_size", 1024),
            rounds=option_int(options, "calibration_rounds", 2),
            memory_mb=option_int(options, "calibration_memory_mb", 32),
        )
        profile = load_active_profile(context)
        kernels, notes = select_kernels(context)
        workloads: dict[str, Callable[[], None]] = {}
        fingerprint = collect_fingerprint()
        has_learned = isinstance(options.get("baseline"), Mapping)
        entries = _entries(options)
        same_calibration = (
            has_learned
            and options["baseline"].get("calibration", calibration.spec) == calibration.spec
        )
        if not has_learned:
            state = options.get("baseline_state", "missing")
            if state == "stale":
                notes.append("baseline stale (fingerprint changed): this run records a new one")
            else:
                notes.append("no baseline yet: this run records one")
        elif not same_calibration:
            notes.append("baseline calibration differs from this run's: no normalised test")

        # Step 1: build every case and warm it up (absorbs compilation and first touches).
        cases: list[_Case] = []
        for kernel in kernels.values():
            for batch in select_batches(kernel, options):
                prof = batch_profile(profile, batch)
                inputs = timing_inputs(kernel, batch.rows, prof, input_seed)

                def call(k: Any = kernel, i: Any = inputs, p: Any = prof) -> Any:
                    return k.run_mlx(i, p)

                chunk = prof.chunk_rows if prof.vectorization == "conservative" else None
                key = entry_key(kernel.name, batch.name, prof.vectorization, chunk)
                if kernel.character not in workloads:
                    workloads[kernel.character] = calibration.build(kernel.character)
                workload = workloads[kernel.character]
                cases.append(
                    _Case(
                        kernel=kernel,
                        batch=batch,
                        profile=prof,
                        call=call,
                        workload=workload,
                        key=key,
                    )
                )
                for _ in range(warmup):
                    call()
                    workload()

        # Step 2: time every case in rounds spread over the whole run.
        for share in _shares(repetitions, rounds):
            for case in cases:
                _time_case(case, share)

        # Step 3: find the suspects: first passes slow enough to be timed again after a
        # pause. The host's slow states last about a minute and move every kernel at once
        # (see checks.stats.DEFAULT_SPREAD_FLOOR); a real regression survives the pause.
        references: dict[str, _Reference] = {}
        # A baseline of another calibration spec has its own note (above) and nothing
        # in it is compared.
        for case in cases if same_calibration else []:
            reference, note = _reference(
                entries, case.key, case.kernel.name, case.kernel.character, rule
            )
            if note is not None:
                notes.append(note)
            if reference is not None:
                references[case.key] = reference
        crossed = [
            case
            for case in cases
            if case.key in references and references[case.key].suspect(case.timings)
        ]
        suspects = {case.key for case in crossed}
        retime_at = time.monotonic() + confirm_after_s

        # Step 4: extra rounds of the other cases whose latency interval is still too wide,
        # within a time bound. They fill the suspects' pause, so that a run that re-times
        # takes little longer than one that does not; the suspects sit out, so that their
        # re-timing starts a whole pause after their first pass ended (it adds its own
        # samples to their latency).
        extra_until = time.monotonic() + extra_timing_s
        while extra_share > 0 and time.monotonic() < extra_until:
            wide = [
                c
                for c in cases
                if c.key not in suspects and median_ci(c.kernel_wall).half_width_ratio > ci_target
            ]
            if not wide:
                break
            for case in wide:
                _time_case(case, extra_share)

        # Step 5: the suspects are timed again, once the rest of their pause is over.
        if crossed:
            time.sleep(max(0.0, retime_at - time.monotonic()))
            for case in crossed:  # warm up again: the pause leaves caches and clocks cold
                for _ in range(warmup):
                    case.call()
                    case.workload()
                case.timings.retimed_from = len(case.timings.kernel_cpu)
            for share in _shares(repetitions, rounds):
                for case in crossed:
                    _time_case(case, share)

        # Step 6: per case, peak memory, the measurements, and the baseline comparisons.
        measurements: list[Measurement] = []
        samples: dict[str, dict[str, Any]] = {}
        judgements: dict[str, dict[str, Any]] = {}
        for case in cases:
            kernel, batch, prof, key = case.kernel, case.batch, case.profile, case.key
            peak = peak_mlx_memory(case.call)
            lab = labels(kernel.name, profile, input_seed, batch=batch.name)
            lat = median_ci(case.kernel_wall)
            timings = case.timings

            def add(name: str, value: float, unit: str, lab: dict[str, str] = lab) -> None:
                measurements.append(Measurement(name=name, value=value, unit=unit, labels=lab))

            add("latency_per_batch_seconds", lat.median, "seconds")
            add("latency_ci_low_seconds", lat.low, "seconds")
            add("latency_ci_high_seconds", lat.high, "seconds")
            add("latency_ci_half_width_ratio", lat.half_width_ratio, "ratio")
            add("calibration_seconds", float(np.median(case.calibration_wall)), "seconds")
            add("throughput_per_second", batch.rows / lat.median, "per_second")
            add("peak_memory_bytes", float(peak), "bytes")
            add("memory_limit_bytes", float(batch.memory_limit_bytes), "bytes")
            if case.hits + case.misses > 0:
                add("cache_efficiency_ratio", case.hits / (case.hits + case.misses), "ratio")

            native_mode = prof.vectorization == batch.vectorization
            configured = _configured(options, kernel.name, batch.name) if native_mode else {}
            if not native_mode and _configured(options, kernel.name, batch.name):
                notes.append(
                    f"{key}: configured baselines are for mode {batch.vectorization}: not compared"
                )
            learned = entries.get(key)
            learned = learned if isinstance(learned, Mapping) else {}
            if has_learned and not learned:
                notes.append(
                    f"{key}: no baseline yet for this execution mode: this run records one"
                )
            base_latency = configured.get("latency_seconds")
            if base_latency is None and learned.get("latency_seconds"):
                base_latency = float(np.median(learned["latency_seconds"]))
            if base_latency:
                add("latency_baseline_seconds", float(base_latency), "seconds")
                add("host_slowdown_ratio", lat.median / float(base_latency) - 1, "ratio")
            memory_entry = _memory_entry(entries, kernel.name, batch, profile)
            base_peak = configured.get("peak_memory_bytes", memory_entry.get("peak_memory_bytes"))
            if base_peak:
                add("memory_overhead_ratio", peak / float(base_peak) - 1, "ratio")
            reference = references.get(key)
            regressed = faster = False
            if reference is not None:
                judgement, verdict = reference.verdict(timings)
                judgements[key] = judgement.to_record()
                regressed = verdict.regression > 0
                faster = judgement.faster_than_baseline
                if faster:
                    notes.append(
                        f"{key}: {-verdict.slowdown:.1%} faster than the baseline, more than "
                        f"its threshold ({judgement.threshold:.1%}): not a run to learn from"
                    )
                add("normalized_slowdown_ratio", verdict.slowdown, "ratio")
                if reference.calibration is not None:
                    add("calibration_slowdown_ratio", judgement.calibration_slowdown, "ratio")
                if rule.response is not None:
                    add("host_response_ratio", judgement.host_response, "ratio")
                add("regression_pvalue", verdict.pvalue, "pvalue")
                threshold = judgement.threshold_for(widening)
                add("regression_threshold_ratio", threshold, "ratio")
                retime_bar = judgement.retime_threshold_for(widening)
                if retime_bar is not None:
                    add("retime_threshold_ratio", retime_bar, "ratio")
                add("performance_regression_ratio", verdict.regression, "ratio")
                if threshold > reference.threshold:
                    notes.append(
                        f"{key}: calibration {judgement.calibration_slowdown:.1%} slower than "
                        f"the baseline's: threshold widened from {reference.threshold:.1%} "
                        f"to {threshold:.1%}"
                    )
                if timings.retimed_from is not None:
                    first, again = judgement.slowdowns
                    notes.append(
                        f"{key}: normalised slowdown {first:.1%} over {retime_bar:.1%}; "
                        f"re-timed after {confirm_after_s:g} s: {again:.1%}; judged on both: "
                        f"{verdict.slowdown:.1%} against {threshold:.1%}, "
                        + ("a regression" if regressed else "not a regression")
                    )
            samples[key] = {
                "kernel": kernel.name,
                "batch": batch.name,
                "rows": batch.rows,
                "vectorization": prof.vectorization,
                "chunk_rows": prof.chunk_rows,
                "profile_id": profile.profile_id,
                "regressed": regressed,
                "faster_than_baseline": faster,
                "calibration_kind": kernel.character,
                "latency_seconds": list(case.kernel_wall),
                "calibration_seconds": list(case.calibration_wall),
                **timings.baseline_fields(fast_share),
                "pass_levels": timings.pass_levels(fast_share),
                "pass_calibration_levels": timings.pass_calibration_levels(fast_share),
                "peak_memory_bytes": peak,
            }
        measurements.append(
            Measurement(
                name="peak_rss_bytes",
                value=float(peak_rss_bytes()),
                unit="bytes",
                labels={"profile_id": profile.profile_id, "seed": str(input_seed)},
            )
        )
        return CheckResult(
            check=self.name,
            measurements=tuple(measurements),
            notes=tuple(notes),
            details={
                "samples": samples,
                "judgements": judgements,
                "retimed_from": {
                    case.key: case.timings.retimed_from
                    for case in cases
                    if case.timings.retimed_from is not None
                },
                "calibration": calibration.spec,
                "fingerprint": fingerprint.to_record(),
                "digest": fingerprint.digest(),
                "profile_id": profile.profile_id,
                "seed": input_seed,
                "repetitions": repetitions,
            },
        )
