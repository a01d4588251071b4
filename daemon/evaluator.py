"""Apply config rules to measurements: warn/crit levels with hysteresis, durable across restarts.

A rule selects measurements by name and a subset of labels. Each distinct series (rule plus
the measurement's identifying labels) has its own counters: the rule raises after
``raise_after`` consecutive breaches and clears after ``clear_after`` consecutive passes. A
series already open at ``warning`` that breaches ``critical`` raises again (an escalation).
A non-finite value counts as a critical breach: a broken measurement must not look healthy.

The evaluator returns events; it never publishes them. Its state is written to the
``StateStore`` after every evaluation, so hysteresis counters and open issues survive a
restart. Each series also remembers the tier and check that last measured it: an issue the
recovery engine learns of only after a restart must still be verified by that check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, final

from checks.api import Measurement, Status
from daemon.config import Rule
from daemon.events import Event, ThresholdCleared, ThresholdCrossed

# Labels that change from run to run and so do not identify a series.
VOLATILE_LABELS: Final = frozenset({"seed", "profile_id", "run_id"})
_NAMESPACE: Final = "evaluator"
_LEVEL_RANK: Final = {None: 0, "warning": 1, "critical": 2}


class KeyValueStore(Protocol):
    """The part of ``daemon.store.StateStore`` the evaluator uses."""

    def items(self, namespace: str) -> dict[str, Any]: ...

    def put_json(self, namespace: str, key: str, value: Any) -> None: ...

    def delete(self, namespace: str, key: str) -> None: ...


@dataclass(slots=True)
class SeriesState:
    """Hysteresis counters of one series."""

    rule: str
    issue: str
    measurement: str
    labels: dict[str, str]
    breaches: int = 0
    passes: int = 0
    open_level: str | None = None
    # The tier and check of the last run that measured the series ("" in state written
    # before they were kept; the next run of the check fills them in).
    tier: str = ""
    check: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "issue": self.issue,
            "measurement": self.measurement,
            "labels": self.labels,
            "breaches": self.breaches,
            "passes": self.passes,
            "open_level": self.open_level,
            "tier": self.tier,
            "check": self.check,
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on one check run, and the events it produced."""

    status: Status
    kernel_status: Mapping[str, Status]
    events: tuple[Event, ...] = ()
    breaches: tuple[str, ...] = field(default=())


def level_of(rule: Rule, value: float) -> str | None:
    """Return ``critical``, ``warning`` or ``None`` for ``value`` under ``rule``."""
    if not math.isfinite(value):
        return "critical"
    above = rule.direction == "above"
    if rule.crit is not None and (value > rule.crit if above else value < rule.crit):
        return "critical"
    if rule.warn is not None and (value > rule.warn if above else value < rule.warn):
        return "warning"
    return None


def series_key(rule: Rule, measurement: Measurement) -> str:
    identity = {k: v for k, v in measurement.labels.items() if k not in VOLATILE_LABELS}
    return rule.name + "|" + json.dumps(identity, sort_keys=True, separators=(",", ":"))


def _matches(rule: Rule, measurement: Measurement) -> bool:
    if rule.measurement != measurement.name:
        return False
    return all(measurement.labels.get(k) == v for k, v in rule.labels.items())


@final
class Evaluator:
    """Turns measurements into ThresholdCrossed / ThresholdCleared events and a status."""

    def __init__(self, rules: Sequence[Rule], store: KeyValueStore | None = None) -> None:
        self._store = store
        self._rules: tuple[Rule, ...] = ()
        self._series: dict[str, SeriesState] = {}
        if store is not None:
            for key, raw in store.items(_NAMESPACE).items():
                self._series[key] = SeriesState(**raw)
        self.set_rules(rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Swap in new rules (on reload); state of rules that no longer exist is dropped."""
        self._rules = tuple(rules)
        names = {r.name for r in self._rules}
        for key in [k for k, s in self._series.items() if s.rule not in names]:
            del self._series[key]
            if self._store is not None:
                self._store.delete(_NAMESPACE, key)

    def open_issues(self) -> dict[str, int]:
        """Number of open series per issue."""
        counts: dict[str, int] = {}
        for state in self._series.values():
            if state.open_level is not None:
                counts[state.issue] = counts.get(state.issue, 0) + 1
        return counts

    def open_series(self) -> list[SeriesState]:
        """Open series; safe to call from another thread (the recovery engine's)."""
        # list() copies in one step: iterating the live dict could meet an insertion.
        return [s for s in list(self._series.values()) if s.open_level is not None]

    def evaluate(
        self,
        *,
        run_id: str,
        tier: str,
        check: str,
        measurements: Iterable[Measurement],
        stateless: bool = False,
    ) -> Evaluation:
        """Apply every rule to ``measurements``.

        ``stateless`` judges by level alone, without hysteresis and without touching stored
        state (the one-shot ``kernelwatch check`` uses it, so it never disturbs the daemon).
        """
        events: list[Event] = []
        worst: Status = Status.OK
        per_kernel: dict[str, Status] = {}
        breaches: list[str] = []
        touched: list[str] = []
        for measurement in measurements:
            kernel = measurement.labels.get("kernel")
            if kernel is not None:
                per_kernel.setdefault(kernel, Status.OK)
            for rule in self._rules:
                if not _matches(rule, measurement):
                    continue
                level = level_of(rule, measurement.value)
                if level is not None:
                    breaches.append(f"{rule.name}={measurement.value:.6g} ({level})")
                if stateless:
                    effective = level
                else:
                    key = series_key(rule, measurement)
                    effective, event = self._step(
                        key, rule, measurement, level, run_id, tier, check
                    )
                    touched.append(key)
                    if event is not None:
                        events.append(event)
                status = _status_of(effective)
                worst = max(worst, status)
                if kernel is not None:
                    per_kernel[kernel] = max(per_kernel[kernel], status)
        if self._store is not None and touched:
            for key in dict.fromkeys(touched):
                self._store.put_json(_NAMESPACE, key, self._series[key].to_json())
        return Evaluation(worst, per_kernel, tuple(events), tuple(breaches))

    def _step(
        self,
        key: str,
        rule: Rule,
        measurement: Measurement,
        level: str | None,
        run_id: str,
        tier: str,
        check: str,
    ) -> tuple[str | None, Event | None]:
        state = self._series.get(key)
        if state is None:
            identity = {k: v for k, v in measurement.labels.items() if k not in VOLATILE_LABELS}
            state = SeriesState(rule.name, rule.issue, rule.measurement, identity)
            self._series[key] = state
        if tier and check:
            state.tier, state.check = tier, check
        labels = dict(measurement.labels)
        if level is None:
            state.breaches = 0
            state.passes += 1
            if state.open_level is not None and state.passes >= rule.clear_after:
                state.open_level = None
                return None, ThresholdCleared(
                    rule=rule.name,
                    issue=rule.issue,
                    measurement=measurement.name,
                    labels=labels,
                    value=measurement.value,
                    tier=tier,
                    check=check,
                    run_id=run_id,
                )
            return state.open_level, None
        state.passes = 0
        state.breaches += 1
        if (
            state.breaches >= rule.raise_after
            and _LEVEL_RANK[level] > _LEVEL_RANK[state.open_level]
        ):
            state.open_level = level
            threshold = rule.crit if level == "critical" else rule.warn
            return level, ThresholdCrossed(
                rule=rule.name,
                issue=rule.issue,
                level=level,
                measurement=measurement.name,
                labels=labels,
                value=measurement.value,
                threshold=float("nan") if threshold is None else threshold,
                tier=tier,
                check=check,
                run_id=run_id,
            )
        return state.open_level, None


def _status_of(level: str | None) -> Status:
    if level == "critical":
        return Status.CRITICAL
    if level == "warning":
        return Status.WARNING
    return Status.OK
