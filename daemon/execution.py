"""Run one tier: each of its checks in a child process, then the evaluator, as events.

Shared by the daemon's worker thread and the one-shot ``kernelwatch check``, so both take
the same path: RunStarted → (CheckStarted → CheckCompleted | CheckTimedOut | CheckCrashed
→ ThresholdCrossed/Cleared → CheckEvaluated)* → RunCompleted.

A run that does not get to run all its checks ends with ``RunDropped`` instead of
``RunCompleted``: at shutdown (``stop``, or a child the runner cancelled) or when the run's
window closes before its next check can start. A cancelled child's ``CheckCrashed`` is not
evaluated: being stopped says nothing about the check's health.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, final

import structlog

from checks.api import Check, Measurement, Status
from checks.registry import CheckSpec, discover_checks, load_check
from daemon.bus import EventBus
from daemon.clock import Clock
from daemon.config import Config
from daemon.errors import RegistryError
from daemon.evaluator import Evaluator
from daemon.events import (
    CheckCancelled,
    CheckCompleted,
    CheckCrashed,
    CheckEvaluated,
    CheckStarted,
    CheckTimedOut,
    RunCompleted,
    RunDropped,
    RunStarted,
)
from daemon.runner import CheckRunner, ChildCompleted, ChildCrashed, ChildRequest, ChildTimedOut

# A synthetic measurement per check run, so "N timeouts/crashes in a row" is an ordinary
# rule with hysteresis (the default `check_unhealthy` rule).
FAILED_MEASUREMENT: Final = "check_failed_bool"
# A check whose window closes sooner than this is not started: it could not even start its
# interpreter, and a certain timeout would count against the check's health.
MIN_USEFUL_DEADLINE_S: Final = 1.0

log = structlog.get_logger("kernelwatch.execution")

OptionsProvider = Callable[[str, str], Mapping[str, Any]]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRequest:
    """A queued run of a tier (or of named checks) with its trigger and window."""

    run_id: str
    tier: str
    trigger: str
    scheduled_for: datetime
    window_end: datetime | None
    checks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What a one-shot run shows a person: one row per check."""

    check: str
    status: Status
    duration_s: float
    measurements: tuple[Measurement, ...]
    breaches: tuple[str, ...]
    error: str = ""
    cancelled: bool = False
    #: What the check said about how it measured (no baseline yet, a widened threshold...).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: its worst status and one report per check that ran.

    ``dropped`` is why it stopped before its last check (``"stopping"``: the executor was
    stopped or a child cancelled, so the run should be run again later; ``"window_closed"``:
    too late for the rest); ``skipped`` names the checks that never started.
    """

    status: Status
    reports: tuple[CheckReport, ...]
    dropped: Literal["", "stopping", "window_closed"] = ""
    skipped: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        """Every check ran and produced a result."""
        return not self.dropped and all(not r.error for r in self.reports)


@dataclass(frozen=True, slots=True)
class _NotStarted:
    reason: Literal["stopping", "window_closed"]


@final
class CheckCatalog:
    """Resolves check names to specs and loaded Check objects (no MLX imported here)."""

    def __init__(self, config: Config) -> None:
        configured = {name: s.module for name, s in config.checks.items() if s.module}
        self._specs: dict[str, CheckSpec] = dict(discover_checks(configured))
        self._loaded: dict[str, Check] = {}

    def names(self) -> list[str]:
        return sorted(self._specs)

    def spec(self, name: str) -> CheckSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise RegistryError(f"unknown check {name!r} (known: {known})") from None

    def load(self, name: str) -> Check:
        if name not in self._loaded:
            try:
                self._loaded[name] = load_check(self.spec(name))
            except ValueError as exc:
                raise RegistryError(str(exc)) from exc
        return self._loaded[name]


@final
class TierExecutor:
    """Executes run requests one at a time; see the module docstring for the event sequence."""

    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        runner: CheckRunner,
        evaluator: Evaluator,
        catalog: CheckCatalog,
        config: Config,
        state_dir: Path,
        options_provider: OptionsProvider | None = None,
        profile_path: Callable[[], Path | None] | None = None,
        stateless: bool = False,
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._runner = runner
        self._evaluator = evaluator
        self._catalog = catalog
        self.config = config
        self._state_dir = state_dir
        self._options_provider = options_provider
        self._profile_path = profile_path
        self._stateless = stateless
        # Held from "may this check start?" until its CheckStarted is published, so that once
        # ``stop`` returns no CheckStarted can follow (the daemon then says DaemonStopping).
        self._gate = threading.Lock()
        self._stopping = False

    def stop(self) -> None:
        """Start no further checks; a check being started publishes CheckStarted first."""
        with self._gate:
            self._stopping = True

    def apply(self, config: Config, catalog: CheckCatalog) -> None:
        """Use a reloaded config and its catalog from the next check on."""
        self.config = config
        self._catalog = catalog

    def checks_for(self, request: RunRequest) -> tuple[str, ...]:
        if request.checks:
            return request.checks
        tier = self.config.tiers.get(request.tier)
        return tier.checks if tier is not None else ()

    def execute(self, request: RunRequest) -> RunResult:
        names = self.checks_for(request)
        started = self._clock.monotonic()
        self._bus.publish(
            RunStarted(
                run_id=request.run_id, tier=request.tier, trigger=request.trigger, checks=names
            )
        )
        reports: list[CheckReport] = []
        dropped: Literal["", "stopping", "window_closed"] = ""
        for name in names:
            report = self._run_check(request, name)
            if isinstance(report, _NotStarted):
                dropped = report.reason
                break
            reports.append(report)
            if report.cancelled:
                dropped = "stopping"
                break
        status = max((r.status for r in reports), default=Status.OK)
        if dropped:
            result = RunResult(Status.UNKNOWN, tuple(reports), dropped, names[len(reports) :])
            self._bus.publish(
                RunDropped(
                    run_id=request.run_id,
                    tier=request.tier,
                    window_end=request.window_end.isoformat() if request.window_end else "",
                    reason=dropped,
                    skipped=tuple(result.skipped),
                )
            )
            return result
        result = RunResult(status, tuple(reports))
        self._bus.publish(
            RunCompleted(
                run_id=request.run_id,
                tier=request.tier,
                status=status.label,
                succeeded=result.succeeded,
                duration_s=self._clock.monotonic() - started,
            )
        )
        return result

    def _deadline_s(self, request: RunRequest, check: Check) -> float | None:
        """min(check timeout, window end); None when the window closes too soon to start."""
        timeout = self.config.check_timeout(check.name, float(check.timeout_s))
        if request.window_end is None:
            return timeout
        remaining = (request.window_end - self._clock.now()).total_seconds()
        if remaining < MIN_USEFUL_DEADLINE_S:
            return None
        return min(timeout, remaining)

    def _run_check(self, request: RunRequest, name: str) -> CheckReport | _NotStarted:
        if self._stopping:
            return _NotStarted("stopping")
        try:
            check = self._catalog.load(name)
            spec = self._catalog.spec(name)
        except RegistryError as exc:
            return self._record_failure(request, name, 0.0, f"cannot load check: {exc}")
        deadline = self._deadline_s(request, check)
        if deadline is None:
            return _NotStarted("window_closed")
        seed = secrets.randbits(31)
        options: dict[str, Any] = {}
        if self.config.kernels.extra:
            options["extra_kernels"] = list(self.config.kernels.extra)
        settings = self.config.checks.get(name)
        if settings is not None:
            options.update(settings.options)
        if self._options_provider is not None:
            options.update(self._options_provider(name, request.tier))
        profile = self._profile_path() if self._profile_path is not None else None
        child = ChildRequest(
            check=name,
            target=spec.target,
            tier=request.tier,
            run_id=request.run_id,
            seed=seed,
            state_dir=str(self._state_dir),
            options=options,
            profile_path=str(profile) if profile is not None else None,
        )

        gate_held = False
        child_started = False

        def release_gate() -> None:
            nonlocal gate_held
            if gate_held:
                gate_held = False
                self._gate.release()

        def on_start(pid: int) -> None:
            nonlocal child_started
            child_started = True
            try:
                self._bus.publish(
                    CheckStarted(
                        run_id=request.run_id,
                        tier=request.tier,
                        check=name,
                        pid=pid,
                        deadline_s=deadline,
                        seed=seed,
                    )
                )
            finally:
                release_gate()

        self._gate.acquire()
        gate_held = True
        try:
            if self._stopping:
                return _NotStarted("stopping")
            outcome = self._runner.run(child, deadline_s=deadline, on_start=on_start)
        finally:
            release_gate()
        if isinstance(outcome, ChildCrashed) and outcome.cancelled and not child_started:
            return _NotStarted("stopping")  # the runner was cancelled before this check began
        common: dict[str, Any] = {"run_id": request.run_id, "tier": request.tier, "check": name}
        if isinstance(outcome, ChildCompleted):
            measurements = (*outcome.result.measurements, self._failed(request.tier, name, 0.0))
            self._bus.publish(
                CheckCompleted(
                    **common,
                    duration_s=outcome.duration_s,
                    peak_rss_bytes=outcome.peak_rss_bytes,
                    measurements=measurements,
                    notes=outcome.result.notes,
                    details=outcome.result.details,
                )
            )
            evaluation = self._evaluator.evaluate(
                **common, measurements=measurements, stateless=self._stateless
            )
            for event in evaluation.events:
                self._bus.publish(event)
            self._bus.publish(
                CheckEvaluated(
                    **common,
                    status=evaluation.status.label,
                    kernel_status={k: v.label for k, v in evaluation.kernel_status.items()},
                )
            )
            return CheckReport(
                name,
                evaluation.status,
                outcome.duration_s,
                measurements,
                evaluation.breaches,
                notes=tuple(outcome.result.notes),
            )
        if isinstance(outcome, ChildTimedOut):
            self._bus.publish(
                CheckTimedOut(**common, deadline_s=deadline, duration_s=outcome.duration_s)
            )
            return self._record_failure(
                request, name, outcome.duration_s, f"timed out after {deadline:.1f} s", False
            )
        assert isinstance(outcome, ChildCrashed)
        if outcome.cancelled:
            # Killed by our own shutdown: says nothing about the check, so no crash is
            # counted and nothing is evaluated.
            self._bus.publish(
                CheckCancelled(**common, duration_s=outcome.duration_s, reason=outcome.error)
            )
            return CheckReport(
                name, Status.UNKNOWN, outcome.duration_s, (), (), outcome.error, cancelled=True
            )
        self._bus.publish(
            CheckCrashed(
                **common,
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                duration_s=outcome.duration_s,
                error=outcome.error[-2000:],
            )
        )
        what = f"signal {outcome.signal}" if outcome.signal else f"exit code {outcome.exit_code}"
        return self._record_failure(request, name, outcome.duration_s, f"crashed ({what})", False)

    def _failed(self, tier: str, check: str, value: float) -> Measurement:
        return Measurement(
            name=FAILED_MEASUREMENT, value=value, unit="bool", labels={"tier": tier, "check": check}
        )

    def _record_failure(
        self, request: RunRequest, name: str, duration_s: float, error: str, crash: bool = True
    ) -> CheckReport:
        """Evaluate the synthetic failure measurement; the check's own status is UNKNOWN."""
        if crash and not error.startswith("crashed"):
            self._bus.publish(
                CheckCrashed(
                    run_id=request.run_id,
                    tier=request.tier,
                    check=name,
                    exit_code=None,
                    signal=None,
                    duration_s=duration_s,
                    error=error,
                )
            )
        failed = self._failed(request.tier, name, 1.0)
        evaluation = self._evaluator.evaluate(
            run_id=request.run_id,
            tier=request.tier,
            check=name,
            measurements=(failed,),
            stateless=self._stateless,
        )
        for event in evaluation.events:
            self._bus.publish(event)
        self._bus.publish(
            CheckEvaluated(
                run_id=request.run_id, tier=request.tier, check=name, status=Status.UNKNOWN.label
            )
        )
        return CheckReport(name, Status.UNKNOWN, duration_s, (failed,), evaluation.breaches, error)


def tier_names(config: Config) -> Sequence[str]:
    return [t for t in config.tiers if config.tiers[t].enabled]
