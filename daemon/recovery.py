"""The recovery engine: issue → procedure with cooldown, attempt limits, verification, escalation.

It subscribes to the bus. On ``ThresholdCrossed`` it consults the policy and, when it acts,
publishes ``RecoveryStarted`` at once and hands the procedure to a worker thread (procedures
may take seconds; the bus must not wait). After a procedure the check that raised the issue
runs again (``enqueue(tier, "verify", ...)``); that run's ``ThresholdCleared`` for the issue
or an ``ok`` ``CheckEvaluated`` gives ``RecoverySucceeded``, anything else
``RecoveryIneffective``. An issue still open after a cooldown is tried again from ``tick``;
``max_attempts`` within ``window_s`` escalate once to ``escalate_to`` (default
emergency_abort) and later crossings get ``RecoverySkipped(reason="escalated")`` until the
issue clears. ``alert_only_after`` attempts in a window stop repairs without escalating.
Every repair is verified: an open issue whose tier and check are unknown (neither we nor
the evaluator recorded them) is not repaired but skipped (``reason="unverifiable"``) until
a run of its check names them. Only escalations and manual runs go unverified.

Everything that must survive ``kill -9`` is in the store, namespace ``recovery``: per issue
(open series, attempt times, last attempt, escalated) and per pending attempt (phase
``running`` or ``verifying``). The worker writes an attempt before running its procedure,
so a restart counts it once, re-runs an interrupted (idempotent) procedure, and re-queues a
lost verification. The engine also tracks which of the ``checkpoint_tiers`` passed since the
last profile change and checkpoints a profile that passed them all as *stable*; ``tick``
polls the active profile and answers a change with ``ProfileChanged`` and weekly, monthly
and daily runs (plus any other checkpoint tier) at once: a deployment that breaks the
geometry, the quantum path, or makes kernels slow or memory-hungry is caught in minutes, not
at the next window, and a good profile is checkpointed as soon as those runs pass.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol, final

import structlog

from checks.api import Measurement
from daemon.checkpoints import CheckpointStore
from daemon.clock import Clock
from daemon.config import Rule
from daemon.evaluator import VOLATILE_LABELS
from daemon.events import (
    CheckCompleted,
    CheckEvaluated,
    CheckpointCreated,
    DrillInjected,
    Event,
    ModeRestored,
    ProfileChanged,
    RecoveryFailed,
    RecoveryIneffective,
    RecoverySkipped,
    RecoveryStarted,
    RecoverySucceeded,
    RunCompleted,
    RunStarted,
    ThresholdCleared,
    ThresholdCrossed,
)
from daemon.procedures import (
    CONSERVATIVE_KEY,
    NAMESPACE,
    KeyValueStore,
    Procedure,
    ProcedureContext,
    ProcedureOutcome,
    leave_conservative_mode,
    margin,
)
from daemon.profile_store import ProfileWatcher, read_active
from daemon.recovery_config import IssuePolicy, RecoverySettings
from daemon.workers import InlineWorker as InlineWorker  # re-exported: tests, policy tests
from daemon.workers import ThreadWorker as ThreadWorker
from daemon.workers import Worker as Worker

log = structlog.get_logger("kernelwatch.recovery")

# Queued in this order on a profile change: the quick correctness tiers first, then daily's
# performance check (its timings and peak memory catch a slow or memory-hungry profile).
PROFILE_CHANGE_TIERS: Final = ("weekly", "monthly", "daily")
_PROFILE_KEY: Final = "profile"
Enqueue = Callable[[str, str, datetime, "datetime | None", tuple[str, ...]], "str | None"]


class Publisher(Protocol):
    def publish(self, event: Event) -> Event: ...


@dataclass(slots=True)
class IssueState:
    """Per issue: open series (key → tier/check/labels), attempt times, escalation."""

    series: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)
    last_attempt: str | None = None
    escalated: bool = False
    quiet: str = ""  # a skip reason already reported for this opening (ticks stay silent)


@dataclass(slots=True)
class Pending:
    """An attempt between RecoveryStarted and its verdict."""

    attempt_id: str
    issue: str
    procedure: str
    tier: str
    check: str
    labels: dict[str, str]
    attempt: int
    verify: bool
    phase: str = "running"  # running → verifying
    verify_run_id: str | None = None
    trigger_run_id: str = ""
    cleared: bool = False


def _series_key(e: ThresholdCrossed | ThresholdCleared) -> str:
    identity = {k: v for k, v in e.labels.items() if k not in VOLATILE_LABELS}
    return e.rule + "|" + json.dumps(identity, sort_keys=True, separators=(",", ":"))


def _rule_matches(rule: Rule, m: Measurement) -> bool:
    return rule.measurement == m.name and all(m.labels.get(k) == v for k, v in rule.labels.items())


def _tier_check_of(s: Any) -> tuple[str, str]:
    """The tier and check of an evaluator series; check_unhealthy's labels name them too."""
    tier = str(getattr(s, "tier", "") or s.labels.get("tier", ""))
    check = str(getattr(s, "check", "") or s.labels.get("check", ""))
    return tier, check


def _verifiable(series: Mapping[str, Any]) -> bool:
    return bool(series.get("tier") and series.get("check"))


def pending_attempts(store: KeyValueStore) -> tuple[str, ...]:
    """The ids of the attempts a restart will resume (between RecoveryStarted and verdict)."""
    return tuple(
        key.partition(":")[2] for key in store.items(NAMESPACE) if key.startswith("pending:")
    )


@final
class RecoveryEngine:
    """See the module docstring. Call ``start()`` once subscribed, ``tick()`` periodically."""

    def __init__(
        self,
        *,
        bus: Publisher,
        clock: Clock,
        store: KeyValueStore,
        state_dir: Path,
        settings: RecoverySettings,
        procedures: Mapping[str, Procedure],
        enqueue: Enqueue,
        tiers: Callable[[], Mapping[str, tuple[str, ...]]],
        rules: Callable[[], Sequence[Rule]] = tuple,
        open_series: Callable[[], Sequence[Any]] = tuple,
        worker: Worker | None = None,
        fingerprint: str = "",
        watch_profile: bool = True,
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._store = store
        self._state_dir = Path(state_dir)
        self.settings = settings
        self._procedures = dict(procedures)
        self._enqueue = enqueue
        self._tiers = tiers
        self._rules = rules
        self._open_series = open_series
        self._worker: Worker = worker if worker is not None else ThreadWorker()
        self._fingerprint = fingerprint
        self.checkpoints = CheckpointStore(self._state_dir / "checkpoints", clock)
        self._lock = threading.RLock()
        self._issues: dict[str, IssueState] = {}
        self._pending: dict[str, Pending] = {}
        self._triggers: dict[str, str] = {}  # run_id → trigger, for runs seen starting
        self._fresh_runs: set[str] = set()  # runs started since the last profile change
        self._profile: dict[str, Any] = {
            "profile_id": "",
            "passed": {},
            "margin": None,
            "checkpointed": False,
        }
        self._watcher = ProfileWatcher(self._state_dir) if watch_profile else None
        # Events and jobs are collected under the lock and released after it (``_after``):
        # publishing or queueing while holding it could deadlock with the bus's own lock.
        self._outbox: collections.deque[Event] = collections.deque()
        self._jobs: list[Callable[[], None]] = []
        self._flushing = threading.Lock()

    def _emit(self, event: Event) -> None:
        self._outbox.append(event)

    def _submit(self, job: Callable[[], None]) -> None:
        self._jobs.append(job)

    def _after(self) -> None:
        """Publish collected events in order, then hand collected jobs to the worker."""
        while self._outbox:
            # Whoever holds _flushing publishes everything, including what others add meanwhile.
            if not self._flushing.acquire(blocking=False):
                break
            try:
                while True:
                    with self._lock:
                        if not self._outbox:
                            break
                        event = self._outbox.popleft()
                    self._bus.publish(event)
            finally:
                self._flushing.release()
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            self._worker.submit(job)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Load persisted state; resume interrupted attempts; adopt open issues."""
        with self._lock:
            for key, raw in self._store.items(NAMESPACE).items():
                kind, _, name = key.partition(":")
                if kind == "issue":
                    self._issues[name] = IssueState(**raw)
                elif kind == "pending":
                    self._pending[name] = Pending(**raw)
                elif key == _PROFILE_KEY:
                    self._profile.update(raw)
            if self._watcher is not None:
                self._watcher.last_id = str(self._profile.get("profile_id", ""))
            # Series the evaluator holds open (persisted by it, with the tier and check that
            # measured them) that we have not heard of, e.g. a crash between ThresholdCrossed
            # and our first write.
            for key, s in self._evaluator_series().items():
                if s.issue in self.settings.policy:
                    st = self._issues.setdefault(s.issue, IssueState())
                    series = st.series.setdefault(key, {"labels": dict(s.labels)})
                    if not (series.get("tier") and series.get("check")):
                        series["tier"], series["check"] = _tier_check_of(s)
            resumed = list(self._pending.values())
        for p in resumed:
            log.info("recovery_resumed", attempt_id=p.attempt_id, phase=p.phase)
            if p.phase == "running":
                self._submit(functools.partial(self._run_attempt, p.attempt_id, persist=False))
            else:
                self._submit(functools.partial(self._request_verification, p.attempt_id))
        self._after()
        # A profile changed while we were down is noticed before any run starts.
        self.poll_profile()

    def close(self) -> None:
        self._worker.close()

    def drain(self, timeout_s: float = 30.0) -> bool:
        return self._worker.drain(timeout_s)

    # --- events ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if isinstance(event, ThresholdCrossed):
            self._on_crossed(event)
        elif isinstance(event, ThresholdCleared):
            self._on_cleared(event)
        elif isinstance(event, RunStarted):
            self._on_run_started(event)
        elif isinstance(event, CheckCompleted):
            self._on_check_completed(event)
        elif isinstance(event, CheckEvaluated):
            self._on_evaluated(event)
        elif isinstance(event, RunCompleted):
            self._on_run_completed(event)
        else:
            return
        self._after()

    def _policy(self, issue: str) -> IssuePolicy | None:
        if not self.settings.enabled:
            return None
        return self.settings.policy.get(issue)

    def _on_crossed(self, e: ThresholdCrossed) -> None:
        if self._policy(e.issue) is None:
            return
        with self._lock:
            st = self._issues.setdefault(e.issue, IssueState())
            st.series[_series_key(e)] = {
                "tier": e.tier,
                "check": e.check,
                "labels": dict(e.labels),
                "run_id": e.run_id,
            }
            self._decide(e.issue, trigger="threshold", source=e)

    def _on_cleared(self, e: ThresholdCleared) -> None:
        with self._lock:
            for p in self._pending.values():
                if p.issue == e.issue and p.phase == "verifying" and p.verify_run_id == e.run_id:
                    p.cleared = True
            st = self._issues.get(e.issue)
            if st is None:
                return
            st.series.pop(_series_key(e), None)
            if not st.series:
                # The issue is closed: escalation and reported skips end with it.
                st.escalated = False
                st.quiet = ""
            self._save_issue(e.issue)

    def _on_run_started(self, e: RunStarted) -> None:
        with self._lock:
            self._triggers[e.run_id] = e.trigger
            if len(self._triggers) > 1000:
                self._triggers.pop(next(iter(self._triggers)))
            self._fresh_runs.add(e.run_id)
            for p in self._pending.values():
                adoptable = p.phase == "verifying" and p.verify_run_id is None
                wanted = p.tier == e.tier and (p.check in e.checks or not e.checks)
                if adoptable and wanted and e.run_id != p.trigger_run_id:
                    p.verify_run_id = e.run_id

    def _on_check_completed(self, e: CheckCompleted) -> None:
        rules = self._rules()
        with self._lock:
            if e.run_id not in self._fresh_runs:
                return
            worst = self._profile.get("margin")
            for m in e.measurements:
                for rule in rules:
                    if not _rule_matches(rule, m):
                        continue
                    threshold = rule.warn if rule.warn is not None else rule.crit
                    if threshold is None:
                        continue
                    value = margin(m.value, threshold, rule.direction)
                    worst = value if worst is None else min(worst, value)
            self._profile["margin"] = worst

    def _on_evaluated(self, e: CheckEvaluated) -> None:
        with self._lock:
            for p in list(self._pending.values()):
                if p.phase == "verifying" and p.verify_run_id == e.run_id and p.check == e.check:
                    self._verdict(p, p.cleared or e.status == "ok")
            if e.run_id in self._fresh_runs:
                self._track_pass(e)

    def _on_run_completed(self, e: RunCompleted) -> None:
        with self._lock:
            for p in list(self._pending.values()):
                if p.phase == "verifying" and p.verify_run_id == e.run_id:
                    self._verdict(p, p.cleared)  # the check never evaluated: not verified
            trigger = self._triggers.pop(e.run_id, "")
            self._fresh_runs.discard(e.run_id)
            if e.tier == "daily" and trigger != "verify":
                self._count_daily(e.status == "ok" and e.succeeded)

    # --- decisions ---------------------------------------------------------------------

    def _in_window(self, st: IssueState, policy: IssuePolicy, now: datetime) -> list[str]:
        since = now - timedelta(seconds=policy.window_s)
        return [a for a in st.attempts if datetime.fromisoformat(a) > since]

    def _skip(self, issue: str, procedure: str, reason: str, loud: bool) -> None:
        st = self._issues[issue]
        if loud or st.quiet != reason:
            self._emit(RecoverySkipped(procedure=procedure, issue=issue, reason=reason))
        st.quiet = reason

    def _decide(self, issue: str, *, trigger: str, source: ThresholdCrossed | None) -> None:
        """Under the lock: skip, attempt, or escalate. ``source`` None means a tick retry."""
        policy = self._policy(issue)
        st = self._issues.get(issue)
        if policy is None or st is None or not st.series:
            return
        loud = source is not None
        if any(p.issue == issue for p in self._pending.values()):
            return  # joins the attempt in flight
        if st.escalated:
            self._skip(issue, policy.procedure, "escalated", loud)
            return
        now = self._clock.now()
        recent = self._in_window(st, policy, now)
        if policy.alert_only_after and len(recent) >= policy.alert_only_after:
            self._skip(issue, policy.procedure, "alert_only", loud)
            return
        if len(recent) >= policy.max_attempts:
            self._escalate(issue, policy, len(recent))
            return
        if st.last_attempt is not None:
            since = (now - datetime.fromisoformat(st.last_attempt)).total_seconds()
            if since < policy.cooldown_s:
                if loud:
                    self._skip(issue, policy.procedure, "cooldown", True)
                return
        if source is not None:
            tier, check, labels = source.tier, source.check, dict(source.labels)
        else:
            target = self._verifiable_series(st)
            if target is None:
                # Repairing without a check to verify it would count a guess as a success.
                self._skip(issue, policy.procedure, "unverifiable", loud)
                return
            tier, check = str(target["tier"]), str(target["check"])
            labels = dict(target.get("labels", {}))
        self._begin(
            issue,
            policy.procedure,
            tier=tier,
            check=check,
            labels=labels,
            trigger_run_id=source.run_id if source is not None else "",
            attempt=len(recent) + 1,
            trigger=trigger,
            verify=True,
        )

    def _evaluator_series(self) -> dict[str, Any]:
        """The evaluator's open series by our series key."""
        return {
            s.rule + "|" + json.dumps(s.labels, sort_keys=True, separators=(",", ":")): s
            for s in self._open_series()
        }

    def _verifiable_series(self, st: IssueState) -> dict[str, Any] | None:
        """Under the lock: an open series whose tier and check are known; blanks are filled
        from the evaluator, which learns them at the check's next run."""
        if not any(_verifiable(s) for s in st.series.values()):
            known = self._evaluator_series()
            for key, series in st.series.items():
                if key in known:
                    series["tier"], series["check"] = _tier_check_of(known[key])
        return next((s for s in st.series.values() if _verifiable(s)), None)

    def _escalate(self, issue: str, policy: IssuePolicy, attempts: int) -> None:
        st = self._issues[issue]
        st.escalated = True
        first = next(iter(st.series.values()), {})
        self._begin(
            issue,
            policy.escalate_to,
            tier=str(first.get("tier", "")),
            check=str(first.get("check", "")),
            labels=dict(first.get("labels", {})),
            trigger_run_id="",
            attempt=attempts + 1,
            trigger="escalation",
            verify=False,
        )
        self._skip(issue, policy.procedure, "escalated", True)

    def _begin(
        self,
        issue: str,
        procedure: str,
        *,
        tier: str,
        check: str,
        labels: dict[str, str],
        trigger_run_id: str,
        attempt: int,
        trigger: str,
        verify: bool,
    ) -> None:
        now = self._clock.now().isoformat()
        st = self._issues[issue]
        st.attempts.append(now)
        st.last_attempt = now
        st.quiet = ""
        p = Pending(
            attempt_id=uuid.uuid4().hex[:12],
            issue=issue,
            procedure=procedure,
            tier=tier,
            check=check,
            labels=labels,
            attempt=attempt,
            verify=verify,
            trigger_run_id=trigger_run_id,
        )
        self._pending[p.attempt_id] = p
        self._emit(
            RecoveryStarted(
                attempt_id=p.attempt_id,
                procedure=procedure,
                issue=issue,
                attempt=attempt,
                trigger=trigger,
            )
        )
        # Persisting is the worker's first step: RecoveryStarted must not wait for a fsync.
        self._submit(lambda: self._run_attempt(p.attempt_id, persist=True))

    def tick(self) -> None:
        """Poll the active profile; retry open issues whose cooldown has passed."""
        self.poll_profile()
        with self._lock:
            for issue in list(self._issues):
                self._decide(issue, trigger="retry", source=None)
        self._after()

    # --- the worker side ---------------------------------------------------------------

    def _context(self, p: Pending) -> ProcedureContext:
        return ProcedureContext(
            state_dir=self._state_dir,
            settings=self.settings,
            clock=self._clock,
            store=self._store,
            checkpoints=self.checkpoints,
            publish=self._bus.publish,  # called without our lock held
            issue=p.issue,
            labels=p.labels,
            attempt_id=p.attempt_id,
            fingerprint=self._fingerprint,
        )

    def _run_attempt(self, attempt_id: str, *, persist: bool) -> None:
        with self._lock:
            p = self._pending.get(attempt_id)
            if p is None:
                return
            st = self._issues.get(p.issue)
            docs = [(f"pending:{p.attempt_id}", asdict(p))]
            if st is not None:
                docs.append((f"issue:{p.issue}", asdict(st)))
        if persist:
            # Written outside the lock: a fsync must not delay the bus's next decision.
            with self._transaction():
                for key, doc in docs:
                    self._store.put_json(NAMESPACE, key, doc)
        procedure = self._procedures.get(p.procedure)
        try:
            if procedure is None:
                outcome = ProcedureOutcome(False, f"unknown procedure {p.procedure!r}")
            else:
                outcome = procedure.run(self._context(p))
        except Exception as exc:  # a procedure's failure is an event, never a dead thread
            log.exception("procedure_failed", procedure=p.procedure)
            outcome = ProcedureOutcome(False, repr(exc))
        log.info("procedure_ran", procedure=p.procedure, ok=outcome.ok, detail=outcome.detail)
        with self._lock:
            if not outcome.ok:
                self._emit(
                    RecoveryFailed(
                        attempt_id=p.attempt_id,
                        procedure=p.procedure,
                        issue=p.issue,
                        error=outcome.detail,
                    )
                )
                self._finish(p, counted_failure=True)
            elif not p.verify:
                self._emit(
                    RecoverySucceeded(attempt_id=p.attempt_id, procedure=p.procedure, issue=p.issue)
                )
                self._finish(p, counted_failure=False)
            else:
                p.phase = "verifying"
                self._save_pending(p)
        self._after()
        if not outcome.ok or not p.verify:
            return
        if outcome.changed:
            self.poll_profile()  # ProfileChanged before the verification run is queued
        self._request_verification(attempt_id)

    def _request_verification(self, attempt_id: str) -> None:
        with self._lock:
            p = self._pending.get(attempt_id)
            if p is None:
                return
            p.verify_run_id = None
        run_id = self._enqueue(p.tier, "verify", self._clock.now(), None, (p.check,))
        with self._lock:
            # A coalesced request returns None: the next run of the check verifies instead.
            if run_id is not None and p.verify_run_id is None and attempt_id in self._pending:
                p.verify_run_id = run_id
                self._save_pending(p)

    def _verdict(self, p: Pending, ok: bool) -> None:
        """Under the lock: publish the verification's verdict and close the attempt."""
        if ok:
            self._emit(
                RecoverySucceeded(attempt_id=p.attempt_id, procedure=p.procedure, issue=p.issue)
            )
            self._finish(p, counted_failure=False)
            return
        policy = self._policy(p.issue)
        st = self._issues.setdefault(p.issue, IssueState())
        recent = len(self._in_window(st, policy, self._clock.now())) if policy else p.attempt
        self._emit(
            RecoveryIneffective(
                attempt_id=p.attempt_id,
                procedure=p.procedure,
                issue=p.issue,
                attempts_in_window=recent,
            )
        )
        self._finish(p, counted_failure=True)

    def _finish(self, p: Pending, *, counted_failure: bool) -> None:
        self._pending.pop(p.attempt_id, None)
        with self._transaction():
            self._store.delete(NAMESPACE, f"pending:{p.attempt_id}")
            self._save_issue(p.issue)
        if counted_failure and p.verify:
            # Past max attempts the next decision escalates; do it now, not at the next tick.
            policy = self._policy(p.issue)
            st = self._issues.get(p.issue)
            if policy is not None and st is not None and st.series:
                recent = self._in_window(st, policy, self._clock.now())
                alert_only = policy.alert_only_after and len(recent) >= policy.alert_only_after
                if len(recent) >= policy.max_attempts and not st.escalated and not alert_only:
                    self._escalate(p.issue, policy, len(recent))

    # --- persistence -------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        transaction = getattr(self._store, "transaction", None)
        if transaction is None:
            yield
            return
        with transaction():
            yield

    def _save_issue(self, issue: str) -> None:
        st = self._issues.get(issue)
        if st is not None:
            self._store.put_json(NAMESPACE, f"issue:{issue}", asdict(st))

    def _save_pending(self, p: Pending) -> None:
        self._store.put_json(NAMESPACE, f"pending:{p.attempt_id}", asdict(p))

    def _save_profile(self) -> None:
        self._store.put_json(NAMESPACE, _PROFILE_KEY, self._profile)

    # --- the active profile ------------------------------------------------------------

    def poll_profile(self) -> None:
        """Publish a change of the active profile and queue weekly, monthly and daily at once."""
        if self._watcher is None:
            return
        with self._lock:
            change = self._watcher.poll()
            if change is None:
                return
            self._profile = {
                "profile_id": change.profile_id,
                "passed": {},
                "margin": None,
                "checkpointed": False,
            }
            self._fresh_runs.clear()
            self._save_profile()
            if change.cause.startswith("drill:"):
                fault = change.cause.partition(":")[2]
                self._emit(DrillInjected(fault=fault, profile_id=change.profile_id))
            self._emit(
                ProfileChanged(
                    profile_id=change.profile_id,
                    previous_id=change.previous_id,
                    cause=change.cause,
                )
            )
        self._after()
        if change.previous_id == "" and change.cause == "initial":
            return  # the first profile written at install: nothing to re-check yet
        for tier in self.profile_change_tiers():
            self._enqueue(tier, "profile_change", self._clock.now(), None, ())

    def profile_change_tiers(self) -> list[str]:
        """What a profile change queues: weekly, monthly, daily, then any other tier a stable
        checkpoint needs, so a good profile is checkpointed after these runs, not months later."""
        tiers = self._tiers()
        extra = [t for t in self._required_tiers() if t not in PROFILE_CHANGE_TIERS]
        return [t for t in (*PROFILE_CHANGE_TIERS, *extra) if t in tiers]

    def _required_tiers(self) -> dict[str, tuple[str, ...]]:
        """The enabled ``checkpoint_tiers`` with checks (every enabled tier when empty)."""
        tiers = {t: c for t, c in self._tiers().items() if c}
        if self.settings.checkpoint_tiers:
            tiers = {t: c for t, c in tiers.items() if t in self.settings.checkpoint_tiers}
        return tiers

    def _track_pass(self, e: CheckEvaluated) -> None:
        """Under the lock: note a check's verdict; checkpoint once every tier passed."""
        required = self._required_tiers()
        if e.tier not in required or e.check not in required[e.tier]:
            return
        passed: dict[str, dict[str, str]] = self._profile.setdefault("passed", {})
        passed.setdefault(e.tier, {})[e.check] = e.status
        all_ok = all(
            passed.get(tier, {}).get(check) == "ok"
            for tier, checks in required.items()
            for check in checks
        )
        self._save_profile()
        if all_ok and not self._profile.get("checkpointed"):
            self._profile["checkpointed"] = True
            self._save_profile()
            score = self._profile.get("margin")
            tiers = tuple(required)
            passed_id = str(self._profile.get("profile_id", ""))
            self._submit(lambda: self._checkpoint_stable(passed_id, tiers, score))

    def _checkpoint_stable(
        self, passed_id: str, tiers: tuple[str, ...], score: float | None
    ) -> None:
        profile = read_active(self._state_dir)
        if passed_id and profile.profile_id != passed_id:
            # Changed since it passed: the new profile has passed nothing yet.
            log.info("stable_checkpoint_skipped", passed=passed_id, active=profile.profile_id)
            return
        manifest = self.checkpoints.create(  # the worker thread: I/O off the bus
            profile,
            stable=True,
            reason="passed " + ", ".join(tiers),
            tiers_passed=tiers,
            score=score,
            fingerprint=self._fingerprint,
        )
        with self._lock:
            self._emit(
                CheckpointCreated(
                    checkpoint_id=manifest.id,
                    profile_id=manifest.profile_id,
                    stable=True,
                    score=score if score is not None else float("nan"),
                )
            )
        self._after()
        self.checkpoints.prune(
            keep_stable=self.settings.keep_stable, keep_best=self.settings.keep_best
        )

    def _count_daily(self, healthy: bool) -> None:
        """Under the lock: count healthy full daily runs while in conservative mode."""
        saved = self._store.get_json(NAMESPACE, CONSERVATIVE_KEY)
        if not isinstance(saved, dict):
            return
        runs = int(saved.get("healthy_runs", 0)) + 1 if healthy else 0
        saved["healthy_runs"] = runs
        self._store.put_json(NAMESPACE, CONSERVATIVE_KEY, saved)
        if runs >= self.settings.conservative_healthy_runs:
            self._submit(lambda: self._restore_mode(runs))

    def _restore_mode(self, runs: int) -> None:
        mode = leave_conservative_mode(self._state_dir, self._store)
        if mode is not None:
            with self._lock:
                self._emit(ModeRestored(mode=mode, healthy_runs=runs))
            self._after()
            self.poll_profile()

    # --- manual runs -------------------------------------------------------------------

    def run_manual(
        self, procedure: str, issue: str = "manual", attempt_id: str | None = None
    ) -> str:
        """Run ``procedure`` through the engine (``kernelwatch recover``); returns the attempt
        id (``attempt_id`` when given: a control request's id). Manual runs are not verified
        and do not count against any issue's attempts."""
        with self._lock:
            p = Pending(
                attempt_id=attempt_id or uuid.uuid4().hex[:12],
                issue=issue,
                procedure=procedure,
                tier="",
                check="",
                labels={},
                attempt=1,
                verify=False,
            )
            self._pending[p.attempt_id] = p
            self._emit(
                RecoveryStarted(
                    attempt_id=p.attempt_id,
                    procedure=procedure,
                    issue=issue,
                    attempt=1,
                    trigger="manual",
                )
            )
            self._submit(lambda: self._run_attempt(p.attempt_id, persist=True))
        self._after()
        return p.attempt_id

    def snapshot(self) -> dict[str, Any]:
        """Issues and pending attempts, for status and tests."""
        with self._lock:
            return {
                "issues": {k: asdict(v) for k, v in self._issues.items()},
                "pending": {k: asdict(v) for k, v in self._pending.items()},
                "profile": dict(self._profile),
            }
