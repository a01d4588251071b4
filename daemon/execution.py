"""Run one tier: each of its checks in a child process, then the evaluator, as events.

Shared by the daemon's worker thread and the one-shot ``kernelwatch check``, so both take
the same path: RunStarted → (CheckStarted → CheckCompleted | CheckTimedOut | CheckCrashed
→ ThresholdCrossed/Cleared → CheckEvaluated)* → RunCompleted.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, final

from checks.api import Check, Measurement, Status
from checks.registry import CheckSpec, discover_checks, load_check
from daemon.bus import EventBus
from daemon.clock import Clock
from daemon.config import Config
from daemon.errors import RegistryError
from daemon.evaluator import Evaluator
from daemon.events import (
    CheckCompleted,
    CheckCrashed,
    CheckEvaluated,
    CheckStarted,
    CheckTimedOut,
    RunCompleted,
    RunStarted,
)
from daemon.runner import CheckRunner, ChildCompleted, ChildCrashed, ChildRequest, ChildTimedOut

# A synthetic measurement per check run, so "N timeouts/crashes in a row" is an ordinary
# rule with hysteresis (the default `check_unhealthy` rule).
FAILED_MEASUREMENT: Final = "check_failed_bool"

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

    def checks_for(self, request: RunRequest) -> tuple[str, ...]:
        if request.checks:
            return request.checks
        tier = self.config.tiers.get(request.tier)
        return tier.checks if tier is not None else ()

    def execute(self, request: RunRequest) -> tuple[Status, list[CheckReport]]:
        names = self.checks_for(request)
        started = self._clock.monotonic()
        self._bus.publish(
            RunStarted(
                run_id=request.run_id, tier=request.tier, trigger=request.trigger, checks=names
            )
        )
        reports = [self._run_check(request, name) for name in names]
        status = max((r.status for r in reports), default=Status.OK)
        succeeded = all(not r.error for r in reports)
        self._bus.publish(
            RunCompleted(
                run_id=request.run_id,
                tier=request.tier,
                status=status.label,
                succeeded=succeeded,
                duration_s=self._clock.monotonic() - started,
            )
        )
        return status, reports

    def _deadline_s(self, request: RunRequest, check: Check) -> float:
        timeout = self.config.check_timeout(check.name, float(check.timeout_s))
        if request.window_end is None:
            return timeout
        remaining = (request.window_end - self._clock.now()).total_seconds()
        return max(1.0, min(timeout, remaining))

    def _run_check(self, request: RunRequest, name: str) -> CheckReport:
        try:
            check = self._catalog.load(name)
            spec = self._catalog.spec(name)
        except RegistryError as exc:
            return self._record_failure(request, name, 0.0, f"cannot load check: {exc}")
        deadline = self._deadline_s(request, check)
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

        def on_start(pid: int) -> None:
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

        outcome = self._runner.run(child, deadline_s=deadline, on_start=on_start)
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
                name, evaluation.status, outcome.duration_s, measurements, evaluation.breaches
            )
        if isinstance(outcome, ChildTimedOut):
            self._bus.publish(
                CheckTimedOut(**common, deadline_s=deadline, duration_s=outcome.duration_s)
            )
            return self._record_failure(
                request, name, outcome.duration_s, f"timed out after {deadline:.1f} s", False
            )
        assert isinstance(outcome, ChildCrashed)
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
