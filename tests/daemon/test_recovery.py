"""Tests for the recovery engine: policy, cooldown, verification, escalation, persistence."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from checks.api import Measurement
from daemon.bus import EventBus
from daemon.clock import FakeClock
from daemon.config import Rule, load_config
from daemon.errors import ConfigError
from daemon.evaluator import Evaluator
from daemon.events import (
    CheckEvaluated,
    Event,
    RunCompleted,
    RunStarted,
    ThresholdCleared,
    ThresholdCrossed,
)
from daemon.procedures import EnableConservativeMode, ProcedureContext, ProcedureOutcome
from daemon.profile_store import read_active, write_active
from daemon.recovery import InlineWorker, RecoveryEngine, ThreadWorker, Worker
from daemon.recovery_config import IssuePolicy, RecoverySettings
from daemon.store import StateStore
from kernels.profile import canonical_profile

TIERS = {"daily": ("performance",), "weekly": ("geometry",), "monthly": ("coherence",)}
ISSUE_CHECK = {
    "geometric_drift": ("weekly", "geometry"),
    "performance_regression": ("daily", "performance"),
    "memory_spike": ("daily", "performance"),
    "coherence_loss": ("monthly", "coherence"),
}


class Crash(BaseException):
    """Stands for kill -9 in the middle of a procedure: nothing after it runs."""


class FakeProcedure:
    """Records its calls; ``effects`` says, call by call, ok / fail / crash / blocked.

    A ``blocked`` call waits until the test sets :attr:`release`, so a test can look at
    what happened while the procedure was still running, without timing anything.
    """

    def __init__(self, name: str, effects: tuple[str, ...] = ("ok",)) -> None:
        self.name = name
        self.calls: list[str] = []
        self._effects = effects
        self.release = threading.Event()

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        effect = self._effects[min(len(self.calls), len(self._effects) - 1)]
        self.calls.append(ctx.issue)
        if effect == "crash":
            raise Crash
        if effect == "blocked" and not self.release.wait(timeout=30):
            raise AssertionError("the test never released a blocked procedure")
        return ProcedureOutcome(effect != "fail", effect)


class Harness:
    """A real bus and store, a fake clock, fake procedures and a recording enqueue."""

    def __init__(
        self,
        tmp_path: Path,
        settings: RecoverySettings | None = None,
        procedures: dict[str, FakeProcedure] | None = None,
        worker: Worker | None = None,
        tiers: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.tiers = tiers or TIERS
        self.open_series: Callable[[], Sequence[Any]] = tuple
        self.clock = FakeClock(datetime(2026, 1, 4, 1, 0, tzinfo=UTC))
        self.store = StateStore.open(tmp_path / "state.sqlite3", clock=self.clock)
        self.settings = settings or RecoverySettings()
        names = {p.procedure for p in self.settings.policy.values()} | {"emergency_abort"}
        self.procs = procedures or {n: FakeProcedure(n) for n in names}
        self.worker = worker
        self.events: list[Event] = []
        self.enqueued: list[tuple[str, str, str, tuple[str, ...]]] = []
        self.engine = self._engine()

    def _engine(self) -> RecoveryEngine:
        self.bus = EventBus(self.clock, host="test")
        self.bus.subscribe("record", self.events.append)
        engine = RecoveryEngine(
            bus=self.bus,
            clock=self.clock,
            store=self.store,
            state_dir=self.tmp_path,
            settings=self.settings,
            procedures=self.procs,
            enqueue=self._enqueue,
            tiers=lambda: self.tiers,
            open_series=lambda: self.open_series(),
            worker=self.worker or InlineWorker(),
        )
        self.bus.subscribe("recovery", engine)
        engine.start()
        return engine

    def restart(self) -> None:
        """A new engine over the same store, as after kill -9 and a restart."""
        self.bus.unsubscribe("recovery")
        self.engine = self._engine()

    def _enqueue(
        self, tier: str, trigger: str, _at: datetime, _end: Any, checks: tuple[str, ...]
    ) -> str:
        run_id = f"run{len(self.enqueued)}"
        self.enqueued.append((run_id, tier, trigger, checks))
        return run_id

    def cross(self, issue: str, run_id: str = "t0", kernel: str = "octahedron") -> None:
        tier, check = ISSUE_CHECK[issue]
        self.bus.publish(
            ThresholdCrossed(
                rule=issue,
                issue=issue,
                level="warning",
                measurement="x_ratio",
                labels={"kernel": kernel},
                value=1.0,
                threshold=0.5,
                tier=tier,
                check=check,
                run_id=run_id,
            )
        )

    def run_verification(self, fixed: bool) -> None:
        """Run the last queued verification: the issue clears when ``fixed``."""
        run_id, tier, trigger, checks = self.enqueued[-1]
        assert trigger == "verify"
        (check,) = checks
        issue = next(i for i, (t, c) in ISSUE_CHECK.items() if (t, c) == (tier, check))
        issue = self.open_issue or issue
        self.bus.publish(RunStarted(run_id=run_id, tier=tier, trigger=trigger, checks=checks))
        if fixed:
            self.bus.publish(
                ThresholdCleared(
                    rule=issue,
                    issue=issue,
                    measurement="x_ratio",
                    labels={"kernel": "octahedron"},
                    value=0.0,
                    tier=tier,
                    check=check,
                    run_id=run_id,
                )
            )
        status = "ok" if fixed else "warning"
        self.bus.publish(CheckEvaluated(run_id=run_id, tier=tier, check=check, status=status))
        self.bus.publish(
            RunCompleted(run_id=run_id, tier=tier, status=status, succeeded=True, duration_s=1.0)
        )

    open_issue: str | None = None

    def kinds(self) -> list[str]:
        out = []
        for e in self.events:
            name = e.type_name
            if name.startswith("Recovery") or name == "EmergencyAborted":
                detail = getattr(e, "reason", None) or getattr(e, "procedure", "")
                out.append(f"{name}:{detail}" if detail else name)
        return out


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.engine.close()
    h.store.close()


def test_crossing_runs_the_mapped_procedure_and_verifies(harness: Harness) -> None:
    """ThresholdCrossed → RecoveryStarted → procedure → verify run → RecoverySucceeded."""
    harness.cross("geometric_drift")
    assert harness.procs["activate_geometric_stabilization"].calls == ["geometric_drift"]
    assert harness.enqueued == [("run0", "weekly", "verify", ("geometry",))]
    harness.run_verification(fixed=True)
    assert harness.kinds() == [
        "RecoveryStarted:activate_geometric_stabilization",
        "RecoverySucceeded:activate_geometric_stabilization",
    ]
    assert harness.engine.snapshot()["pending"] == {}


def test_the_triggering_run_does_not_count_as_verification(harness: Harness) -> None:
    """The CheckEvaluated of the run that raised the issue is not the verification."""
    harness.cross("geometric_drift", run_id="t0")
    harness.bus.publish(CheckEvaluated(run_id="t0", tier="weekly", check="geometry", status="ok"))
    assert harness.kinds() == ["RecoveryStarted:activate_geometric_stabilization"]


def test_ineffective_attempts_escalate_exactly_once(harness: Harness) -> None:
    """Three ineffective attempts, spaced by the cooldown, then one emergency_abort, then none."""
    harness.cross("geometric_drift")
    harness.run_verification(fixed=False)
    harness.engine.tick()  # within the cooldown: nothing
    assert len(harness.procs["activate_geometric_stabilization"].calls) == 1
    for _ in range(2):
        harness.clock.advance(301)
        harness.engine.tick()
        harness.run_verification(fixed=False)
    assert len(harness.procs["activate_geometric_stabilization"].calls) == 3
    assert harness.procs["emergency_abort"].calls == ["geometric_drift"]
    for _ in range(5):
        harness.clock.advance(3600)
        harness.engine.tick()
    harness.cross("geometric_drift", run_id="t9")
    assert harness.procs["emergency_abort"].calls == ["geometric_drift"]
    assert len(harness.procs["activate_geometric_stabilization"].calls) == 3
    kinds = harness.kinds()
    assert kinds.count("RecoveryIneffective:activate_geometric_stabilization") == 3
    assert kinds[-4:] == [
        "RecoveryStarted:emergency_abort",
        "RecoverySkipped:escalated",
        "RecoverySucceeded:emergency_abort",
        "RecoverySkipped:escalated",
    ]


def test_cooldown_skips_a_new_crossing(harness: Harness) -> None:
    """A crossing within the cooldown after a successful attempt is skipped and said so."""
    harness.cross("geometric_drift")
    harness.run_verification(fixed=True)
    harness.clock.advance(10)
    harness.cross("geometric_drift", run_id="t1")
    assert harness.kinds()[-1] == "RecoverySkipped:cooldown"
    assert len(harness.procs["activate_geometric_stabilization"].calls) == 1


def test_attempts_outside_the_window_do_not_count(harness: Harness) -> None:
    """A window later, an issue gets its full attempts again."""
    harness.cross("geometric_drift")
    harness.run_verification(fixed=True)
    harness.clock.advance(86401)
    harness.cross("geometric_drift", run_id="t1")
    started = [e for e in harness.events if e.type_name == "RecoveryStarted"]
    assert [getattr(e, "attempt", 0) for e in started] == [1, 1]


def test_performance_regression_reverts_once_then_alerts_only(harness: Harness) -> None:
    """A slow kernel is reverted once, then only alerted on; it never escalates to an abort."""
    harness.cross("performance_regression")
    harness.run_verification(fixed=False)
    for _ in range(10):
        harness.clock.advance(600)
        harness.engine.tick()
    harness.cross("performance_regression", run_id="t2")
    assert harness.procs["revert_to_stable_checkpoint"].calls == ["performance_regression"]
    assert harness.procs["emergency_abort"].calls == []
    kinds = harness.kinds()
    assert kinds == [
        "RecoveryStarted:revert_to_stable_checkpoint",
        "RecoveryIneffective:revert_to_stable_checkpoint",
        "RecoverySkipped:alert_only",
        "RecoverySkipped:alert_only",
    ]


def test_failed_procedure_counts_and_escalates(harness: Harness) -> None:
    """A procedure that fails is RecoveryFailed, counts, and leads to escalation."""
    harness.procs["activate_geometric_stabilization"] = FakeProcedure(
        "activate_geometric_stabilization", ("fail",)
    )
    harness.restart()
    harness.cross("geometric_drift")
    for _ in range(2):
        harness.clock.advance(301)
        harness.engine.tick()
    assert harness.kinds().count("RecoveryFailed:activate_geometric_stabilization") == 3
    assert harness.procs["emergency_abort"].calls == ["geometric_drift"]


def test_restart_between_procedure_and_verification(harness: Harness) -> None:
    """After a restart the attempt counts once and the verification is queued again."""
    harness.cross("geometric_drift")
    assert len(harness.enqueued) == 1  # the verification queued, then the daemon dies
    harness.restart()
    assert harness.enqueued[-1][1:] == ("weekly", "verify", ("geometry",))
    assert len(harness.enqueued) == 2
    harness.run_verification(fixed=True)
    assert len(harness.procs["activate_geometric_stabilization"].calls) == 1
    issue = harness.engine.snapshot()["issues"]["geometric_drift"]
    assert len(issue["attempts"]) == 1
    assert harness.kinds()[-1] == "RecoverySucceeded:activate_geometric_stabilization"


def test_restart_during_a_procedure_reruns_it_without_counting_again(tmp_path: Path) -> None:
    """kill -9 inside a procedure: the restart re-runs it (idempotent) and counts once."""
    h = Harness(tmp_path)
    proc = FakeProcedure("activate_geometric_stabilization", ("crash", "ok"))
    h.procs["activate_geometric_stabilization"] = proc
    h.restart()
    with pytest.raises(Crash):
        h.cross("geometric_drift")
    before = len(h.events)
    h.restart()
    assert len(proc.calls) == 2
    h.run_verification(fixed=True)
    assert len(h.engine.snapshot()["issues"]["geometric_drift"]["attempts"]) == 1
    after = [e.type_name for e in h.events[before:]]
    assert "RecoveryStarted" not in after  # the same attempt, not a new one
    assert "RecoverySucceeded" in after
    h.engine.close()
    h.store.close()


def test_open_issue_survives_restart_and_is_retried(harness: Harness) -> None:
    """An open issue with an ineffective attempt is retried after a restart and the cooldown."""
    harness.cross("geometric_drift")
    harness.run_verification(fixed=False)
    harness.restart()
    harness.clock.advance(301)
    harness.engine.tick()
    assert len(harness.procs["activate_geometric_stabilization"].calls) == 2
    started = [e for e in harness.events if e.type_name == "RecoveryStarted"]
    assert getattr(started[-1], "attempt", 0) == 2


def test_cleared_issue_ends_escalation(harness: Harness) -> None:
    """Once an escalated issue clears, a new opening is repaired again."""
    settings = RecoverySettings(
        policy={"geometric_drift": IssuePolicy(procedure="x", max_attempts=1, cooldown_s=0)}
    )
    h = Harness(harness.tmp_path / "h", settings)
    h.cross("geometric_drift")
    h.run_verification(fixed=False)
    assert h.procs["emergency_abort"].calls == ["geometric_drift"]
    h.bus.publish(
        ThresholdCleared(
            rule="geometric_drift",
            issue="geometric_drift",
            measurement="x_ratio",
            labels={"kernel": "octahedron"},
            value=0.0,
            tier="weekly",
            check="geometry",
            run_id="late",
        )
    )
    h.clock.advance(90000)
    h.cross("geometric_drift", run_id="t5")
    assert len(h.procs["x"].calls) == 2
    h.engine.close()
    h.store.close()


def test_profile_change_queues_weekly_monthly_and_daily(harness: Harness) -> None:
    """A change to the active profile by anyone is published and re-checked at once."""
    write_active(harness.tmp_path, canonical_profile(), "initial")
    harness.engine.tick()
    assert harness.enqueued == []  # the first profile is not a change to re-check
    write_active(harness.tmp_path, canonical_profile().replace(amplitude=0.2), "drill:phase_shift")
    harness.engine.tick()
    assert [(t, tr) for _, t, tr, _ in harness.enqueued] == [
        ("weekly", "profile_change"),
        ("monthly", "profile_change"),
        ("daily", "profile_change"),
    ]
    names = [e.type_name for e in harness.events]
    assert names[-2:] == ["DrillInjected", "ProfileChanged"]


def test_stable_checkpoint_after_every_tier_passed(harness: Harness) -> None:
    """A profile that passed every tier since it changed is checkpointed as stable, once."""
    write_active(harness.tmp_path, canonical_profile(), "initial")
    harness.engine.tick()
    for i, (tier, (check,)) in enumerate(TIERS.items()):
        run_id = f"p{i}"
        harness.bus.publish(RunStarted(run_id=run_id, tier=tier, trigger="cron", checks=(check,)))
        harness.bus.publish(CheckEvaluated(run_id=run_id, tier=tier, check=check, status="ok"))
    harness.bus.publish(CheckEvaluated(run_id="p0", tier="daily", check="performance", status="ok"))
    created = [e for e in harness.events if e.type_name == "CheckpointCreated"]
    assert len(created) == 1
    (manifest,) = harness.engine.checkpoints.entries()
    assert manifest.manifest is not None
    assert manifest.manifest.stable
    assert set(manifest.manifest.tiers_passed) == set(TIERS)


def test_conservative_mode_returns_after_healthy_daily_runs(tmp_path: Path) -> None:
    """enable_conservative_mode is undone after K healthy daily runs, with ModeRestored."""
    settings = replace(RecoverySettings(), conservative_healthy_runs=2)
    h = Harness(tmp_path, settings)
    h.procs["enable_conservative_mode"] = EnableConservativeMode()  # type: ignore[assignment]
    h.restart()
    write_active(tmp_path, canonical_profile(), "initial")
    h.cross("memory_spike")
    assert read_active(tmp_path).vectorization == "conservative"
    h.run_verification(fixed=True)
    for i in range(2):
        h.bus.publish(RunStarted(run_id=f"d{i}", tier="daily", trigger="cron", checks=()))
        h.bus.publish(
            RunCompleted(run_id=f"d{i}", tier="daily", status="ok", succeeded=True, duration_s=1)
        )
    assert read_active(tmp_path).vectorization == "aggressive"
    restored = [e for e in h.events if e.type_name == "ModeRestored"]
    assert len(restored) == 1
    h.engine.close()
    h.store.close()


def test_recovery_started_does_not_wait_for_a_slow_procedure(tmp_path: Path) -> None:
    """A procedure runs on the worker: the publisher is back, with RecoveryStarted
    published, while the procedure is still running."""
    h = Harness(tmp_path, worker=ThreadWorker())
    procedure = h.procs["activate_geometric_stabilization"]
    procedure._effects = ("blocked",)
    h.cross("geometric_drift")
    # publish() returned although the procedure cannot have finished: it is blocked.
    assert h.kinds() == ["RecoveryStarted:activate_geometric_stabilization"]
    assert h.enqueued == []
    procedure.release.set()
    assert h.engine.drain(5.0)
    assert h.enqueued  # the verification was queued once the procedure ended
    h.engine.close()
    h.store.close()


def test_manual_run_goes_through_the_engine(harness: Harness) -> None:
    """kernelwatch recover: RecoveryStarted(trigger=manual) → procedure → RecoverySucceeded."""
    harness.engine.run_manual("revert_to_stable_checkpoint")
    assert harness.kinds() == [
        "RecoveryStarted:revert_to_stable_checkpoint",
        "RecoverySucceeded:revert_to_stable_checkpoint",
    ]
    assert harness.enqueued == []


DRIFT_RULE = Rule(
    name="geometric_drift",
    measurement="geometric_ratio_drift_ratio",
    issue="geometric_drift",
    warn=0.001,
    raise_after=1,
)


def breach(evaluator: Evaluator, run_id: str) -> None:
    """A weekly geometry run whose drift breaches; its events are never published."""
    evaluator.evaluate(
        run_id=run_id,
        tier="weekly",
        check="geometry",
        measurements=[
            Measurement(
                name="geometric_ratio_drift_ratio",
                value=0.002,
                unit="ratio",
                labels={"kernel": "octahedron", "seed": run_id},
            )
        ],
    )


def test_issue_learned_from_the_evaluator_after_a_restart_is_verified(harness: Harness) -> None:
    """A breach the engine never heard of (crash first) is repaired once and then verified,
    never counted as a success unverified nor escalated while its verification is pending."""
    evaluator = Evaluator([DRIFT_RULE], harness.store)
    breach(evaluator, "t0")  # ThresholdCrossed lost in the crash
    harness.open_series = Evaluator([DRIFT_RULE], harness.store).open_series
    harness.restart()
    for _ in range(6):  # 15 minutes of ticks, three cooldowns
        harness.engine.tick()
        harness.clock.advance(150)
    assert harness.procs["activate_geometric_stabilization"].calls == ["geometric_drift"]
    assert harness.enqueued == [("run0", "weekly", "verify", ("geometry",))]
    assert harness.kinds() == ["RecoveryStarted:activate_geometric_stabilization"]
    harness.open_issue = "geometric_drift"
    harness.run_verification(fixed=True)
    assert harness.kinds()[-1] == "RecoverySucceeded:activate_geometric_stabilization"
    assert harness.procs["emergency_abort"].calls == []


def test_issue_with_no_known_check_is_skipped_until_a_run_names_it(harness: Harness) -> None:
    """An open issue saved without its tier and check is not repaired blind: skipped as
    unverifiable (said once), then repaired and verified once its check has run again."""
    breach(Evaluator([DRIFT_RULE], harness.store), "t0")
    for key, doc in harness.store.items("evaluator").items():
        del doc["tier"], doc["check"]  # as written before the evaluator kept them
        harness.store.put_json("evaluator", key, doc)
    evaluator = Evaluator([DRIFT_RULE], harness.store)
    harness.open_series = evaluator.open_series
    harness.restart()
    harness.engine.tick()
    harness.clock.advance(600)
    harness.engine.tick()
    assert harness.kinds() == ["RecoverySkipped:unverifiable"]
    assert harness.procs["activate_geometric_stabilization"].calls == []
    breach(evaluator, "t1")  # the next weekly run, still breaching: no new crossing
    harness.engine.tick()
    assert harness.procs["activate_geometric_stabilization"].calls == ["geometric_drift"]
    assert harness.enqueued == [("run0", "weekly", "verify", ("geometry",))]


def pass_runs(h: Harness, queued: list[tuple[str, str, str, tuple[str, ...]]]) -> None:
    """Every queued run starts and every check of its tier evaluates ok."""
    for run_id, tier, trigger, _checks in queued:
        h.bus.publish(RunStarted(run_id=run_id, tier=tier, trigger=trigger, checks=()))
        for check in h.tiers[tier]:
            h.bus.publish(CheckEvaluated(run_id=run_id, tier=tier, check=check, status="ok"))


def test_default_config_checkpoints_a_changed_profile_after_its_change_runs(
    tmp_path: Path,
) -> None:
    """With the default config (quarterly enabled), the runs a profile change queues are
    enough for a stable checkpoint: quarterly, a benchmark report, is not waited for."""
    config = load_config(None)
    tiers = {name: t.checks for name, t in config.tiers.items() if t.enabled}
    assert "quarterly" in tiers
    h = Harness(tmp_path, config.recovery, tiers=tiers)
    write_active(tmp_path, canonical_profile(), "initial")
    h.engine.tick()
    changed = canonical_profile().replace(amplitude=0.2)
    write_active(tmp_path, changed, "external")
    h.engine.tick()
    assert [t for _, t, _, _ in h.enqueued] == ["weekly", "monthly", "daily"]
    pass_runs(h, h.enqueued)
    (row,) = h.engine.checkpoints.entries()
    assert row.manifest is not None
    assert row.manifest.stable
    assert row.manifest.profile_id == changed.profile_id
    assert set(row.manifest.tiers_passed) == {"daily", "weekly", "monthly"}
    h.engine.close()
    h.store.close()


class HeldWorker:
    """Holds submitted jobs until the test runs them: the worker thread, frozen in time."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []
        self.hold = False

    def submit(self, job: Callable[[], None]) -> None:
        if self.hold:
            self.jobs.append(job)
        else:
            job()

    def run_held(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()

    def drain(self, timeout_s: float = 30.0) -> bool:
        return True

    def close(self) -> None:
        return None


def test_profile_changed_before_the_checkpoint_is_written_is_not_checkpointed(
    tmp_path: Path,
) -> None:
    """Only the profile that passed every tier is checkpointed as stable, not one that
    replaced it before the checkpoint was written."""
    worker = HeldWorker()
    h = Harness(tmp_path, worker=worker)
    write_active(tmp_path, canonical_profile(), "initial")
    h.engine.tick()
    worker.hold = True
    pass_runs(h, [(f"p{i}", tier, "cron", ()) for i, tier in enumerate(TIERS)])
    write_active(tmp_path, canonical_profile().replace(amplitude=0.2), "external")
    worker.run_held()
    assert h.engine.checkpoints.entries() == []
    assert not [e for e in h.events if e.type_name == "CheckpointCreated"]
    h.engine.close()
    h.store.close()


def test_empty_checkpoint_tiers_make_a_profile_change_run_every_tier(tmp_path: Path) -> None:
    """``checkpoint_tiers = []`` (every enabled tier) makes a profile change queue quarterly
    too, so the stable checkpoint it requires is still reached after a change."""
    config = load_config(None)
    tiers = {name: t.checks for name, t in config.tiers.items() if t.enabled}
    h = Harness(tmp_path, replace(config.recovery, checkpoint_tiers=()), tiers=tiers)
    write_active(tmp_path, canonical_profile(), "initial")
    h.engine.tick()
    write_active(tmp_path, canonical_profile().replace(amplitude=0.2), "external")
    h.engine.tick()
    assert [t for _, t, _, _ in h.enqueued] == ["weekly", "monthly", "daily", "quarterly"]
    h.engine.close()
    h.store.close()


def test_unknown_checkpoint_tier_is_a_config_error(tmp_path: Path) -> None:
    """A misspelt tier in checkpoint_tiers is refused, naming the key and the value."""
    path = tmp_path / "kw.toml"
    path.write_text('[recovery]\ncheckpoint_tiers = ["daily", "weekley"]\n')
    with pytest.raises(ConfigError, match=r"recovery\.checkpoint_tiers: unknown tier 'weekley'"):
        load_config(path)
