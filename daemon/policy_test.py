"""``kernelwatch policy test FILE.toml``: unit tests for the recovery policy, like promtool's.

Synthetic measurement series go through the real ``Evaluator`` and the real
``RecoveryEngine`` on a fake clock; procedures are recording fakes whose effect the file
describes; the test asserts which events and procedures fire, in order and how often.

File format::

    # Optional: rules (default: the embedded config's) and policy overrides.
    [[rules]]                       # same keys as the config's [[rules]]
    [recovery.policy.cache_miss]    # same keys as the config's [recovery.policy.*]
    cooldown_s = 0

    [[tests]]
    name = "geometric drift is stabilised"
    interval = "1d"                 # time between steps: 30s, 15m, 2h, 1d
    restarts = [3]                  # restart daemon (evaluator + engine, same store) before step 3
    procedures = { activate_geometric_stabilization = "fixes" }  # fixes | does_not_fix | fails

    [[tests.input]]
    tier = "weekly"
    check = "geometry"
    measurement = "geometric_ratio_drift_ratio"
    labels = { kernel = "octahedron" }
    values = "0 0.002 _ 0.002"      # one per step; _ = missed window (no run); x = check failed
    fixed = 0.0                     # what it measures once a procedure that "fixes" has run

    expect_events = ["ThresholdCrossed:geometric_drift",
                     "RecoveryStarted:activate_geometric_stabilization",
                     "ThresholdCleared:geometric_drift",
                     "RecoverySucceeded:activate_geometric_stabilization"]
    expect_procedures = ["activate_geometric_stabilization"]
    expect_counts = { EmergencyAborted = 0 }

Every test needs at least one expectation (``expect_events = []`` asserts that nothing
fires); one without any is an error naming it, since it would pass whatever happened.
Event tokens are ``Type:detail``; the detail is the issue (Threshold*, EmergencyAborted),
the procedure (Recovery*), the reason (RecoverySkipped) or the mode (ModeRestored).
``expect_events`` must equal the whole stream of those types. Runs queued by the engine
(verifications) run right after the step that queued them, measuring the current values.
"""

from __future__ import annotations

import re
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from checks.api import UNIT_SUFFIXES, Measurement, Status
from daemon.bus import EventBus
from daemon.clock import FakeClock
from daemon.config import Rule, load_config
from daemon.evaluator import Evaluator
from daemon.events import (
    CheckEvaluated,
    EmergencyAborted,
    Event,
    RunCompleted,
    RunStarted,
)
from daemon.execution import FAILED_MEASUREMENT
from daemon.procedures import ProcedureContext, ProcedureOutcome
from daemon.recovery import InlineWorker, RecoveryEngine
from daemon.recovery_config import IssuePolicy, RecoverySettings
from daemon.store import StateStore

TRACKED: Final = (
    "ThresholdCrossed",
    "ThresholdCleared",
    "RecoveryStarted",
    "RecoverySucceeded",
    "RecoveryFailed",
    "RecoveryIneffective",
    "RecoverySkipped",
    "EmergencyAborted",
    "ModeRestored",
)
EFFECTS: Final = ("fixes", "does_not_fix", "fails")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_START: Final = datetime(2026, 1, 4, 1, 0, tzinfo=UTC)
_MAX_QUEUED: Final = 50


class PolicyTestError(ValueError):
    """The test file is malformed; the message names the file and the key."""


_TOP_KEYS: Final = frozenset({"rules", "recovery", "tests"})
_TEST_KEYS: Final = frozenset(
    {
        "name",
        "interval",
        "restarts",
        "procedures",
        "input",
        "expect_events",
        "expect_procedures",
        "expect_counts",
    }
)
_INPUT_KEYS: Final = frozenset({"tier", "check", "measurement", "labels", "values", "fixed"})


def _known(table: Mapping[str, Any], keys: frozenset[str], where: str) -> None:
    """Refuse unknown keys: in TOML, a key written after [[tests.input]] lands in the input."""
    unknown = sorted(set(table) - keys)
    if unknown:
        raise PolicyTestError(f"{where}: unknown key(s) {unknown} (known: {sorted(keys)})")


def token(event: Event) -> str:
    """``Type:detail`` of an event (see the module docstring)."""
    name = event.type_name
    detail = ""
    if name.startswith("Threshold") or name == "EmergencyAborted":
        detail = str(getattr(event, "issue", ""))
    elif name == "RecoverySkipped":
        detail = str(getattr(event, "reason", ""))
    elif name.startswith("Recovery"):
        detail = str(getattr(event, "procedure", ""))
    elif name == "ModeRestored":
        detail = str(getattr(event, "mode", ""))
    return f"{name}:{detail}" if detail else name


def _seconds(text: str, where: str) -> float:
    m = _DURATION.match(str(text))
    if not m:
        raise PolicyTestError(f"{where}: {text!r} is not a duration like 30s, 15m, 2h, 1d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass(slots=True)
class _Input:
    tier: str
    check: str
    measurement: str
    labels: dict[str, str]
    values: list[str]
    fixed: float | None

    def value_at(self, step: int, fixed: bool) -> str | None:
        """The token at ``step`` (``_`` and past-the-end mean no run)."""
        raw = self.values[step] if step < len(self.values) else "_"
        if raw == "_":
            return None
        if fixed and self.fixed is not None:
            return repr(self.fixed)
        return raw

    def current(self, step: int, fixed: bool) -> str | None:
        """The latest non-missing token up to ``step`` (what a queued run would see)."""
        for i in range(min(step, len(self.values) - 1), -1, -1):
            value = self.value_at(i, fixed)
            if value is not None:
                return value
        return None


@dataclass(slots=True)
class _Fake:
    """A recording procedure whose effect the test file gives."""

    name: str
    effect: str
    world: _World

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        self.world.procedures.append(self.name)
        if self.name == "emergency_abort":
            ctx.publish(
                EmergencyAborted(
                    issue=ctx.issue, kernels=("*",), checkpoint_id="", stop_command_exit=0
                )
            )
        if self.effect == "fails":
            return ProcedureOutcome(False, "fails (policy test)")
        if self.effect == "fixes":
            self.world.fixed = True
        return ProcedureOutcome(True, self.effect)


@dataclass(slots=True)
class _World:
    fixed: bool = False
    procedures: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    queued: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Result:
    """One test's outcome: its name and what failed (empty when it passed)."""

    name: str
    failures: tuple[str, ...]


def _rules(doc: Mapping[str, Any], where: str) -> tuple[Rule, ...]:
    if "rules" not in doc:
        return load_config(None).rules
    try:
        return tuple(Rule(**dict(r)) for r in doc["rules"])
    except TypeError as exc:
        raise PolicyTestError(f"{where}: rules: {exc}") from exc


def _settings(doc: Mapping[str, Any], where: str) -> RecoverySettings:
    base = getattr(load_config(None), "recovery", None)
    settings = base if isinstance(base, RecoverySettings) else RecoverySettings()
    overrides = doc.get("recovery", {}).get("policy", {})
    policy = dict(settings.policy)
    for issue, table in overrides.items():
        try:
            current = policy.get(issue)
            policy[issue] = replace(current, **table) if current else IssuePolicy(**table)
        except TypeError as exc:
            raise PolicyTestError(f"{where}: recovery.policy.{issue}: {exc}") from exc
    return replace(settings, policy=policy)


def _unit(name: str) -> str:
    for unit in UNIT_SUFFIXES:
        if name.endswith(unit):
            return unit
    raise PolicyTestError(f"measurement {name!r} does not end with a unit")


class _Run:
    """One policy test: a fake daemon made of the real evaluator and engine."""

    def __init__(
        self, test: Mapping[str, Any], rules: Sequence[Rule], settings: RecoverySettings, tmp: Path
    ) -> None:
        self.where = f"test {test.get('name', '?')!r}"
        self.test = test
        self.rules = rules
        self.settings = settings
        self.tmp = tmp
        self.clock = FakeClock(_START)
        self.world = _World()
        effects = dict(test.get("procedures", {}))
        for name, effect in effects.items():
            if effect not in EFFECTS:
                raise PolicyTestError(f"{self.where}: procedures.{name}: one of {EFFECTS}")
        names = {p.procedure for p in settings.policy.values()}
        names |= {p.escalate_to for p in settings.policy.values()}
        names |= set(effects)
        self.fakes = {n: _Fake(n, effects.get(n, "does_not_fix"), self.world) for n in names}
        self.inputs = [self._input(i, raw) for i, raw in enumerate(test.get("input", []))]
        self.store = StateStore.open(tmp / "state.sqlite3", clock=self.clock)
        self.bus = EventBus(self.clock, host="policy-test")
        self.bus.subscribe("record", self._record)
        self._boot()

    def _input(self, i: int, raw: Mapping[str, Any]) -> _Input:
        _known(raw, _INPUT_KEYS, f"{self.where}: input[{i}]")
        try:
            return _Input(
                tier=str(raw["tier"]),
                check=str(raw["check"]),
                measurement=str(raw["measurement"]),
                labels={str(k): str(v) for k, v in raw.get("labels", {}).items()},
                values=str(raw["values"]).split(),
                fixed=float(raw["fixed"]) if "fixed" in raw else None,
            )
        except KeyError as exc:
            raise PolicyTestError(f"{self.where}: input[{i}] needs {exc}") from exc

    def _record(self, event: Event) -> None:
        if event.type_name in TRACKED:
            self.world.events.append(event)

    def _enqueue(
        self, tier: str, trigger: str, _at: datetime, _end: Any, checks: tuple[str, ...] = ()
    ) -> str | None:
        self.world.queued.append((tier, trigger, checks))
        return None  # the run id is announced by RunStarted, as for a coalesced run

    def _boot(self) -> None:
        """Start (or restart) the daemon's evaluator and engine over the same store."""
        self.bus.unsubscribe("recovery")
        self.evaluator = Evaluator(self.rules, self.store)
        tiers: dict[str, tuple[str, ...]] = {}
        for inp in self.inputs:
            tiers.setdefault(inp.tier, ())
            if inp.check not in tiers[inp.tier]:
                tiers[inp.tier] = (*tiers[inp.tier], inp.check)
        self.engine = RecoveryEngine(
            bus=self.bus,
            clock=self.clock,
            store=self.store,
            state_dir=self.tmp,
            settings=self.settings,
            procedures=self.fakes,
            enqueue=self._enqueue,
            tiers=lambda: tiers,
            rules=lambda: self.rules,
            open_series=self.evaluator.open_series,
            worker=InlineWorker(),
            watch_profile=False,
        )
        self.bus.subscribe("recovery", self.engine)
        self.engine.start()

    def _check_run(
        self, run_id: str, tier: str, check: str, tokens: list[tuple[_Input, str]]
    ) -> None:
        self.bus.publish(RunStarted(run_id=run_id, tier=tier, trigger="test", checks=(check,)))
        failed = any(tok == "x" for _, tok in tokens)
        fail_m = Measurement(
            name=FAILED_MEASUREMENT,
            value=1.0 if failed else 0.0,
            unit="bool",
            labels={"tier": tier, "check": check},
        )
        measurements = [fail_m]
        if not failed:
            for inp, tok in tokens:
                try:
                    value = float(tok)
                except ValueError as exc:
                    raise PolicyTestError(f"{self.where}: bad value {tok!r}") from exc
                measurements.append(
                    Measurement(
                        name=inp.measurement,
                        value=value,
                        unit=_unit(inp.measurement),
                        labels=inp.labels,
                    )
                )
        evaluation = self.evaluator.evaluate(
            run_id=run_id, tier=tier, check=check, measurements=measurements
        )
        for event in evaluation.events:
            self.bus.publish(event)
        status = Status.UNKNOWN if failed else evaluation.status
        self.bus.publish(CheckEvaluated(run_id=run_id, tier=tier, check=check, status=status.label))
        self.bus.publish(
            RunCompleted(
                run_id=run_id, tier=tier, status=status.label, succeeded=not failed, duration_s=1.0
            )
        )

    def _groups(self, step: int, queued: bool) -> dict[tuple[str, str], list[tuple[_Input, str]]]:
        groups: dict[tuple[str, str], list[tuple[_Input, str]]] = {}
        for inp in self.inputs:
            tok = (
                inp.current(step, self.world.fixed)
                if queued
                else inp.value_at(step, self.world.fixed)
            )
            if tok is not None:
                groups.setdefault((inp.tier, inp.check), []).append((inp, tok))
        return groups

    def run(self) -> None:
        interval = _seconds(self.test.get("interval", "1d"), f"{self.where}: interval")
        restarts = {int(r) for r in self.test.get("restarts", [])}
        steps = max((len(i.values) for i in self.inputs), default=0)
        n_queued = 0
        for step in range(steps):
            if step:
                self.clock.advance(interval)
            if step in restarts:
                self._boot()
            self.engine.tick()
            for (tier, check), tokens in self._groups(step, queued=False).items():
                self._check_run(f"s{step}-{tier}-{check}", tier, check, tokens)
            while self.world.queued:
                n_queued += 1
                if n_queued > _MAX_QUEUED:
                    raise PolicyTestError(f"{self.where}: more than {_MAX_QUEUED} queued runs")
                tier, _trigger, checks = self.world.queued.pop(0)
                self.clock.advance(1)
                groups = self._groups(step, queued=True)
                for (g_tier, check), tokens in groups.items():
                    if g_tier == tier and (not checks or check in checks):
                        self._check_run(f"q{n_queued}-{tier}-{check}", tier, check, tokens)
                self.engine.tick()

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def _assert(test: Mapping[str, Any], world: _World) -> tuple[str, ...]:
    failures: list[str] = []
    got = [token(e) for e in world.events]
    if "expect_events" in test:
        want = [str(t) for t in test["expect_events"]]
        if want != got:
            failures.append(f"expected events: {want}\n         got events: {got}")
    if "expect_procedures" in test:
        want = [str(t) for t in test["expect_procedures"]]
        if want != world.procedures:
            failures.append(
                f"expected procedures: {want}\n         got procedures: {world.procedures}"
            )
    for name, count in dict(test.get("expect_counts", {})).items():
        n = sum(1 for t in got if t == name or t.startswith(f"{name}:"))
        n += sum(1 for p in world.procedures if p == name) if name not in TRACKED else 0
        if n != int(count):
            failures.append(f"expected {count} × {name}, got {n}")
    return tuple(failures)


def run_file(path: Path) -> list[Result]:
    """Run every test of one file; raises ``PolicyTestError`` for a malformed file."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyTestError(f"{path}: {exc}") from exc
    _known(doc, _TOP_KEYS, str(path))
    for i, test in enumerate(doc.get("tests", [])):
        where = f"{path}: tests[{i}] ({test.get('name', '?')!r})"
        _known(test, _TEST_KEYS, where)
        for j, inp in enumerate(test.get("input", [])):
            _known(inp, _INPUT_KEYS, f"{where}: input[{j}]")
        # An entry that expects nothing passes whatever the policy does: a test that cannot fail.
        if not (
            "expect_events" in test or "expect_procedures" in test or test.get("expect_counts")
        ):
            raise PolicyTestError(
                f"{where}: no expectations (give expect_events, expect_procedures or "
                "expect_counts; expect_events = [] asserts that nothing fires)"
            )
    rules = _rules(doc, str(path))
    settings = _settings(doc, str(path))
    results: list[Result] = []
    for test in doc.get("tests", []):
        with tempfile.TemporaryDirectory(prefix="kw-policy-") as tmp:
            run = _Run(test, rules, settings, Path(tmp))
            try:
                run.run()
            finally:
                run.close()
            results.append(Result(str(test.get("name", "?")), _assert(test, run.world)))
    return results


def run_policy_tests(paths: Sequence[Path], out: TextIO) -> int:
    """Run the files and print a promtool-like report; return 0 if every test passed, else 1."""
    ok = True
    for path in paths:
        out.write(f"Unit Testing:  {path}\n")
        try:
            results = run_file(path)
        except PolicyTestError as exc:
            out.write(f"  ERROR: {exc}\n")
            ok = False
            continue
        failed = [r for r in results if r.failures]
        for r in results:
            out.write(f"  {'FAILED' if r.failures else 'PASS  '}  {r.name}\n")
            for failure in r.failures:
                out.write(f"    {failure}\n")
        out.write(f"  {'FAILED' if failed else 'SUCCESS'} ({len(results)} tests)\n\n")
        ok = ok and not failed and bool(results)
    return 0 if ok else 1
