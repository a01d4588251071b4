"""Performance baselines: stored per environment fingerprint, offered to the check, learned, shown.

The daily ``performance`` check is pure: it receives its baseline in its options and
returns raw samples in ``details["samples"]``. This module is the daemon's side:

* :meth:`BaselineKeeper.options_for` is an options provider: for ``performance`` it returns
  ``{"baseline": record}`` when a baseline exists for the current fingerprint, otherwise
  ``{"baseline": None, "baseline_state": "missing" | "stale"}`` ("stale": baselines exist,
  but only for other fingerprints).
* :meth:`BaselineKeeper.observe` is a bus subscriber: on a ``CheckCompleted`` of
  ``performance`` whose fingerprint differs from the last one seen it publishes
  ``FingerprintChanged`` and marks the other fingerprints' baselines stale (kept, never
  deleted); when the current fingerprint has no baseline yet it stores the run's samples and
  publishes ``BaselineRecorded(reason="first run")`` (or ``"fingerprint changed"``).
  An entry the baseline lacks (a kernel × batch × execution mode seen for the first time,
  e.g. after recovery switched to conservative mode) is added (``"new entries"``). The
  first runs make the baseline: an entry holding fewer than :data:`BASELINE_RUNS` runs pools
  the next run's samples of the same profile in (``"pooled run"``), unless that run found
  the kernel regressed or, against two or more runs, faster than the baseline by more than
  its threshold (``faster_than_baseline``: pooled, such a run would lower the baseline's
  level and widen its spread). A baseline pooled from several runs has a steadier median
  and shows its run-to-run spread, which the check's regression threshold is widened by.
* :func:`record_command` and :func:`show_command` back ``kernelwatch baseline record`` and
  ``kernelwatch baseline show``.

Store layout, namespace ``baselines``: key ``current`` holds ``{"digest", "fingerprint"}`` of
the last fingerprint seen; key ``fp:<digest>`` holds one baseline record::

    {"digest": str, "fingerprint": {...}, "calibration": str, "recorded_at": ISO-8601,
     "runs": int, "reason": str, "stale": bool,
     "entries": {"<kernel>/<batch>/<mode>[:<chunk_rows>]": {
         "latency_seconds": [...], "ratio": [...], "cpu_seconds": [...],
         "calibration_seconds": [...], "calibration_cpu_seconds": [...],
         "run_ratio_medians": [one per run], "run_levels": [one per run],
         "run_calibration_levels": [one per run], "profile_id": str,
         "peak_memory_bytes": int, ...}}}

Configured baselines (``[checks.performance.options.baselines.<kernel>.<batch>]`` with
``latency_seconds`` and ``peak_memory_bytes``) reach the check through its config options
and override the learned figures field by field there; ``baseline show`` lists them too.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, final

from checks.fingerprint import Fingerprint, collect_fingerprint
from daemon.clock import Clock, SystemClock
from daemon.config import Config
from daemon.events import BaselineRecorded, CheckCompleted, Event, FingerprintChanged
from daemon.store import StateStore

if TYPE_CHECKING:
    from checks.performance import Bars

__all__ = [
    "BASELINE_RUNS",
    "NAMESPACE",
    "BaselineKeeper",
    "pool_samples",
    "record_command",
    "show_command",
]

NAMESPACE: Final = "baselines"
#: Runs the daemon pools into a learned baseline entry before it stops learning it: five
#: days of daily runs see more of a host's states than three, and a five-run level is
#: steadier (see :data:`checks.stats.DEFAULT_SPREAD_Z`).
BASELINE_RUNS: Final = 5
CHECK: Final = "performance"
_CURRENT: Final = "current"
_PREFIX: Final = "fp:"

Publish = Callable[[Event], object]


def pool_samples(runs: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pool several runs' ``details["samples"]``: lists concatenated, peak memory the median.

    The median is over the runs' peaks (``run_peak_memory_bytes`` of an already pooled
    entry, else its ``peak_memory_bytes``), so pooling one more run into a pooled entry
    gives the same figure as pooling all the runs at once.

    >>> pooled = pool_samples([{"a/small": {"latency_seconds": [1.0], "ratio": [2.0],
    ...     "calibration_seconds": [0.5], "peak_memory_bytes": 10}}] * 2)
    >>> pooled["a/small"]["latency_seconds"], pooled["a/small"]["peak_memory_bytes"]
    ([1.0, 1.0], 10)
    """
    pooled: dict[str, dict[str, Any]] = {}
    peaks: dict[str, list[int]] = {}
    for samples in runs:
        for key, entry in samples.items():
            into = pooled.setdefault(
                key, {k: ([] if isinstance(v, list) else v) for k, v in entry.items()}
            )
            for field, value in entry.items():
                if isinstance(value, list):
                    into.setdefault(field, []).extend(float(v) for v in value)
            run_peaks = entry.get("run_peak_memory_bytes")
            if not run_peaks and "peak_memory_bytes" in entry:
                run_peaks = [entry["peak_memory_bytes"]]
            peaks.setdefault(key, []).extend(int(v) for v in run_peaks or ())
    for key, values in peaks.items():
        if values:
            pooled[key]["peak_memory_bytes"] = int(statistics.median(values))
            pooled[key]["run_peak_memory_bytes"] = values
    return pooled


def _count(entries: Mapping[str, Mapping[str, Any]]) -> int:
    """Return the number of latency samples over all entries."""
    return sum(len(e.get("latency_seconds", ())) for e in entries.values())


def _runs(entry: Mapping[str, Any]) -> int:
    """Return how many runs an entry was pooled from (1 for an entry without the count)."""
    return max(1, len(entry.get("run_ratio_medians") or ()))


def _poolable(have: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a run's entry ``new`` joins the stored entry ``have`` (see the module)."""
    return (
        _runs(have) < BASELINE_RUNS
        and not new.get("regressed", False)
        # A run far faster than a baseline of two or more runs is a passing state (or a real
        # speed-up, which a re-recorded baseline learns); one run is no baseline to tell.
        and not (new.get("faster_than_baseline", False) and _runs(have) >= 2)
        and new.get("profile_id") == have.get("profile_id")
    )


@final
class BaselineKeeper:
    """Keeps the ``performance`` baselines in the state store (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        clock: Clock | None = None,
        *,
        publish: Publish | None = None,
        fingerprint: Callable[[], Fingerprint] = collect_fingerprint,
    ) -> None:
        self._store = store
        self._clock = clock if clock is not None else SystemClock()
        self._publish = publish
        self._fingerprint = fingerprint

    # --- reading --------------------------------------------------------------------------

    def baselines(self) -> dict[str, dict[str, Any]]:
        """Every stored baseline record by fingerprint digest."""
        return {
            key[len(_PREFIX) :]: value
            for key, value in self._store.items(NAMESPACE).items()
            if key.startswith(_PREFIX)
        }

    def current(self) -> dict[str, Any] | None:
        """The last fingerprint seen (``{"digest", "fingerprint"}``), or None."""
        value = self._store.get_json(NAMESPACE, _CURRENT)
        return value if isinstance(value, dict) else None

    def options_for(self, check: str, tier: str) -> dict[str, Any]:
        """Return options to merge into ``check``'s; empty for every check but performance."""
        del tier
        if check != CHECK:
            return {}
        digest = self._fingerprint().digest()
        record = self._store.get_json(NAMESPACE, _PREFIX + digest)
        if isinstance(record, dict) and record.get("entries"):
            return {"baseline": record}
        state = "stale" if self.baselines() else "missing"
        return {"baseline": None, "baseline_state": state}

    # --- learning -------------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Bus subscriber: learn from completed ``performance`` runs (see the module docstring)."""
        if not isinstance(event, CheckCompleted) or event.check != CHECK:
            return
        details = event.details
        fingerprint = details.get("fingerprint")
        samples = details.get("samples")
        if not isinstance(fingerprint, Mapping):
            return
        digest = str(details.get("digest") or Fingerprint.from_record(fingerprint).digest())
        changed = self.note_fingerprint(digest, fingerprint)
        if isinstance(samples, Mapping) and samples:
            reason = "fingerprint changed" if changed else "first run"
            self.learn(
                digest,
                fingerprint,
                dict(samples),
                calibration=str(details.get("calibration", "")),
                reason=reason,
                runs=1,
            )

    __call__ = observe

    def note_fingerprint(self, digest: str, fingerprint: Mapping[str, Any]) -> bool:
        """Record ``digest`` as current; on a change publish FingerprintChanged, mark others stale.

        Returns whether the fingerprint changed (False for the very first one).
        """
        previous = self.current()
        event: Event | None = None
        with self._store.transaction():
            self._store.put_json(
                NAMESPACE, _CURRENT, {"digest": digest, "fingerprint": dict(fingerprint)}
            )
            for other, record in self.baselines().items():
                stale = other != digest
                if bool(record.get("stale")) != stale:
                    record["stale"] = stale
                    self._store.put_json(NAMESPACE, _PREFIX + other, record)
            if previous is not None and previous.get("digest") != digest:
                before = previous.get("fingerprint") or {}
                fields = tuple(
                    sorted(
                        k
                        for k in set(before) | set(fingerprint)
                        if before.get(k) != fingerprint.get(k)
                    )
                )
                event = FingerprintChanged(
                    previous=str(previous.get("digest")), current=digest, changed_fields=fields
                )
        if event is not None and self._publish is not None:
            self._publish(event)
        return event is not None

    def learn(
        self,
        digest: str,
        fingerprint: Mapping[str, Any],
        samples: dict[str, Any],
        *,
        calibration: str,
        reason: str,
        runs: int,
        replace: bool = False,
    ) -> bool:
        """Store ``samples`` as the baseline of ``digest`` unless one exists (or ``replace``).

        Into an existing baseline, entries (kernel × batch × mode) it lacks are added, with
        reason ``"new entries"``, and entries still short of :data:`BASELINE_RUNS` runs pool
        this run's samples of the same profile when it found no regression (``"pooled
        run"``). A baseline timed against other calibration workloads (an upgrade changed
        them) cannot be compared with, so this run's samples replace it (``"calibration
        changed"``). Returns whether anything was stored; publishes ``BaselineRecorded``
        when it was.
        """
        key = _PREFIX + digest
        with self._store.transaction():
            existing = self._store.get_json(NAMESPACE, key)
            if replace or not isinstance(existing, dict) or not existing.get("entries"):
                existing = None
            elif existing.get("calibration") != calibration:
                existing, reason = None, "calibration changed"
            if existing is not None:
                have = existing["entries"]
                missing = {k: v for k, v in samples.items() if k not in have}
                pooled = {
                    k: pool_samples([{k: have[k]}, {k: v}])[k]
                    for k, v in samples.items()
                    if k in have and _poolable(have[k], v)
                }
                if not missing and not pooled:
                    return False
                have.update(missing)
                have.update(pooled)
                existing["runs"] = max(_runs(e) for e in have.values())
                self._store.put_json(NAMESPACE, key, existing)
                stored = {**missing, **{k: samples[k] for k in pooled}}
                why = "; ".join(
                    part for part, on in (("new entries", missing), ("pooled run", pooled)) if on
                )
            else:
                record = {
                    "digest": digest,
                    "fingerprint": dict(fingerprint),
                    "calibration": calibration,
                    "recorded_at": self._clock.now().isoformat(),
                    "runs": runs,
                    "reason": reason,
                    "stale": False,
                    "entries": samples,
                }
                self._store.put_json(NAMESPACE, key, record)
                stored, why = samples, reason
        if self._publish is not None:
            self._publish(BaselineRecorded(fingerprint=digest, samples=_count(stored), reason=why))
        return True


# --- CLI ------------------------------------------------------------------------------------


def _open_store(state_dir: Path) -> StateStore:
    from daemon.state_dir import StateLayout

    layout = StateLayout(state_dir)
    layout.create()
    return StateStore.open(layout.database)


def record_command(config: Config, state_dir: Path, runs: int, out: TextIO) -> int:
    """Run the performance check ``runs`` times in child processes and store the pooled samples.

    Replaces any baseline of the current fingerprint. Returns 0, or 1 when a run failed
    (nothing is stored then), or 2 for a bad ``runs``.
    """
    from daemon.execution import CheckCatalog, new_run_id
    from daemon.profile_store import active_dir
    from daemon.runner import CheckRunner, ChildCompleted, ChildRequest

    if runs < 1:
        print(f"baseline record: --runs must be >= 1, got {runs}", file=out)
        return 2
    catalog = CheckCatalog(config)
    spec = catalog.spec(CHECK)
    check = catalog.load(CHECK)
    deadline = config.check_timeout(CHECK, float(check.timeout_s))
    settings = config.checks.get(CHECK)
    options: dict[str, Any] = dict(settings.options) if settings is not None else {}
    if config.kernels.extra:
        options.setdefault("extra_kernels", list(config.kernels.extra))
    options.update({"baseline": None, "baseline_state": "missing"})
    active = active_dir(state_dir)
    runner = CheckRunner(kill_grace_s=config.runner.kill_grace_s)
    collected: list[Mapping[str, Any]] = []
    digest = ""
    fingerprint: Mapping[str, Any] = {}
    calibration = ""
    for number in range(1, runs + 1):
        request = ChildRequest(
            check=CHECK,
            target=spec.target,
            tier=check.tier,
            run_id=new_run_id(),
            seed=number,
            state_dir=str(state_dir),
            options=options,
            profile_path=None if active is None else str(active),
        )
        outcome = runner.run(request, deadline_s=deadline)
        if not isinstance(outcome, ChildCompleted):
            print(f"baseline record: run {number}/{runs} failed: {outcome}", file=out)
            return 1
        details = outcome.result.details
        if digest and details.get("digest") != digest:
            print("baseline record: the fingerprint changed between runs; nothing stored", file=out)
            return 1
        digest = str(details.get("digest", ""))
        fingerprint = details.get("fingerprint", {})
        calibration = str(details.get("calibration", ""))
        collected.append(details.get("samples", {}))
        print(f"run {number}/{runs}: {outcome.duration_s:.1f} s", file=out)
    pooled = pool_samples(collected)
    with _open_store(state_dir) as store:
        keeper = BaselineKeeper(store)
        keeper.note_fingerprint(digest, fingerprint)
        keeper.learn(
            digest,
            fingerprint,
            pooled,
            calibration=calibration,
            reason=f"recorded ({runs} run{'s' if runs != 1 else ''})",
            runs=runs,
            replace=True,
        )
    print(
        f"baseline for fingerprint {digest}: {len(pooled)} entries, {_count(pooled)} samples",
        file=out,
    )
    return 0


def _summary(
    record: Mapping[str, Any], current: str | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """Return a baseline record without raw samples: counts, medians and levels per entry.

    ``level`` is the geometric mean of the runs' levels (what the regression test compares
    with) and ``level_spread`` the standard deviation of their logarithms, the run-to-run
    spread that widens the threshold (null with fewer than two runs). ``host_response``
    (the learned β), ``regression_threshold_ratio`` and ``retime_threshold_ratio`` are what
    a run is judged by under the check's ``options`` (null when the entry cannot be
    compared with).
    """
    from checks.performance import bars

    stored = record.get("entries", {})
    entries = {}
    for key, entry in sorted(stored.items()):
        lat = entry.get("latency_seconds") or [float("nan")]
        ratio = entry.get("ratio") or [float("nan")]
        logs = [math.log(v) for v in entry.get("run_levels") or () if v > 0]
        entries[key] = {
            "samples": len(entry.get("latency_seconds", ())),
            "runs": _runs(entry),
            "median_latency_seconds": statistics.median(lat),
            "median_ratio": statistics.median(ratio),
            "level": math.exp(statistics.fmean(logs)) if logs else None,
            "level_spread": statistics.stdev(logs) if len(logs) >= 2 else None,
            "peak_memory_bytes": entry.get("peak_memory_bytes"),
            **_bars_fields(bars(stored, key, options)),
        }
    return {
        "digest": record.get("digest"),
        "current": record.get("digest") == current,
        "stale": bool(record.get("stale")),
        "recorded_at": record.get("recorded_at"),
        "runs": record.get("runs"),
        "reason": record.get("reason"),
        "calibration": record.get("calibration"),
        "fingerprint": record.get("fingerprint"),
        "entries": entries,
    }


def _bars_fields(judged_by: Bars | None) -> dict[str, float | None]:
    """Return :func:`_summary`'s fields for an entry's :class:`checks.performance.Bars`."""
    if judged_by is None:
        return dict.fromkeys(
            ("host_response", "regression_threshold_ratio", "retime_threshold_ratio")
        )
    return {
        "host_response": judged_by.host_response,
        "regression_threshold_ratio": judged_by.threshold,
        "retime_threshold_ratio": judged_by.retime_threshold,
    }


def _bars_text(entry: Mapping[str, Any]) -> str:
    """Return what a run of ``entry`` is judged by, for the text of ``baseline show``."""
    if entry["regression_threshold_ratio"] is None:
        return ""
    text = f"  β {entry['host_response']:.2f}  threshold {entry['regression_threshold_ratio']:.1%}"
    if entry["retime_threshold_ratio"] is not None:
        text += f" (re-timed over {entry['retime_threshold_ratio']:.1%})"
    return text


def show_command(config: Config, state_dir: Path, out: TextIO, as_json: bool) -> int:
    """Print the stored baselines (and configured ones); returns 0."""
    from daemon.state_dir import StateLayout

    layout = StateLayout(state_dir)
    stored: dict[str, Mapping[str, Any]] = {}
    current: str | None = None
    if layout.database.exists():
        with StateStore.open(layout.database) as store:
            keeper = BaselineKeeper(store)
            seen = keeper.current()
            current = None if seen is None else str(seen.get("digest"))
            stored = dict(keeper.baselines())
    settings = config.checks.get(CHECK)
    options = settings.options if settings is not None else {}
    learned = [_summary(r, current, options) for _, r in sorted(stored.items())]
    configured = dict(options.get("baselines", {}))
    if as_json:
        payload = {"current": current, "learned": learned, "configured": configured}
        json.dump(payload, out, indent=2, sort_keys=True, default=str)
        print(file=out)
        return 0
    if not learned:
        print("no learned baselines (the first daily run records one)", file=out)
    for record in learned:
        flags = ", ".join(
            f for f, on in (("current", record["current"]), ("stale", record["stale"])) if on
        )
        print(
            f"fingerprint {record['digest']} [{flags or '-'}] recorded {record['recorded_at']} "
            f"({record['reason']})",
            file=out,
        )
        for key, entry in record["entries"].items():
            level = "-" if entry["level"] is None else f"{entry['level']:.3f}"
            if entry["level_spread"] is not None:
                level += f" ±{entry['level_spread'] * 100:.1f} %"
            print(
                f"  {key:<36} n={entry['samples']:<4} runs={entry['runs']:<2} "
                f"median {entry['median_latency_seconds'] * 1e3:9.3f} ms"
                f"  ratio {entry['median_ratio']:.3f}  level {level}"
                f"  peak {entry['peak_memory_bytes']} B{_bars_text(entry)}",
                file=out,
            )
    for kernel, batches in sorted(configured.items()):
        for batch, fields in sorted(dict(batches).items()):
            print(f"configured {kernel}/{batch}: {json.dumps(fields, sort_keys=True)}", file=out)
    return 0
