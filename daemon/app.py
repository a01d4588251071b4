"""The daemon's lifecycle: start-up → main loop → shutdown, with signals and systemd notify.

Threads: the main thread runs the loop (signals, reload, clock-jump detection, telemetry
ticks, watchdog pings); one worker thread executes queued runs one at a time; APScheduler's
thread only enqueues; the HTTP server answers scrapes. Signal handlers only set flags.
SIGTERM/SIGINT stop gracefully (the running check may finish within
``daemon.shutdown_grace_s``, then it is killed); a second one forces a fast exit. SIGHUP
reloads the config; a bad file is rejected and the running config kept.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, final

import structlog
from prometheus_client import CollectorRegistry

from daemon import __version__
from daemon.baselines import BaselineKeeper
from daemon.bus import EventBus
from daemon.clock import Clock, SystemClock
from daemon.config import TIER_ORDER, Config, load_config
from daemon.errors import ConfigError
from daemon.evaluator import Evaluator
from daemon.events import (
    ClockJumped,
    ConfigRejected,
    ConfigReloaded,
    DaemonStarted,
    DaemonStopping,
    RunDropped,
    RunMissed,
    RunScheduled,
    StateSetAside,
    TelemetryRepaired,
)
from daemon.execution import (
    CheckCatalog,
    OptionsProvider,
    RunRequest,
    TierExecutor,
    new_run_id,
)
from daemon.http_server import MetricsServer
from daemon.logs import LogSink
from daemon.metrics import MetricsSink
from daemon.runner import CheckRunner
from daemon.schedule import (
    CatchUp,
    ClockJumpDetector,
    Missed,
    Occurrence,
    TierScheduler,
    expected_period_s,
    plan_catch_up,
)
from daemon.sdnotify import Notifier
from daemon.state_dir import StateLayout
from daemon.store import MISSED_TRIGGER, SCHEDULED_TRIGGERS, StateStore
from daemon.telemetry import TelemetrySink, last_sequence

log = structlog.get_logger("kernelwatch.daemon")


@dataclass(slots=True)
class _Flags:
    stop: int = 0
    reload: bool = False
    reason: str = ""


@final
class Daemon:
    """One kernelwatch daemon over one state directory."""

    def __init__(
        self,
        *,
        config: Config,
        config_path: Path | None,
        state_dir: Path,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        run_now: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self._config_path = config_path
        self.layout = StateLayout(state_dir)
        self.clock: Clock = clock or SystemClock()
        self._notifier = notifier or Notifier()
        self._run_now = run_now
        self._flags = _Flags()
        self._queue: collections.deque[RunRequest] = collections.deque()
        self._queue_cv = threading.Condition()
        self._running: RunRequest | None = None
        self._running_since = 0.0
        self._worker: threading.Thread | None = None
        self._last_tick = 0.0
        self.registry = CollectorRegistry()
        self._hooks: list[Callable[[Daemon], None]] = []
        self._tick_hooks: list[Callable[[], None]] = []
        self.options_providers: list[OptionsProvider] = []

    # --- start-up --------------------------------------------------------------------

    def start(self) -> None:
        """Open state, wire the bus and sinks, plan catch-up, start threads; then READY=1."""
        self.layout.create()
        self.store = StateStore.open(self.layout.database)
        self.telemetry = TelemetrySink(self.layout.telemetry, self.config.telemetry, self.clock)
        self.bus = EventBus(self.clock, first_seq=last_sequence(self.layout.telemetry) + 1)
        self.metrics = MetricsSink(
            self.registry,
            version=__version__,
            telemetry_stats=self.telemetry.stats,
            queue_length=self.queue_length,
        )
        self.bus.subscribe("telemetry", self.telemetry)
        self.bus.subscribe("metrics", self.metrics)
        self.bus.subscribe("log", LogSink())
        self.baselines = BaselineKeeper(self.store, self.clock, publish=self.bus.publish)
        self.bus.subscribe("baselines", self.baselines.observe)
        self.options_providers.append(self.baselines.options_for)
        self.evaluator = Evaluator(self.config.rules, self.store)
        self.metrics.set_rules(self.config.rules)
        self.metrics.restore_open_issues(self.evaluator.open_issues())
        self.runner = CheckRunner(kill_grace_s=self.config.runner.kill_grace_s)
        self.catalog = CheckCatalog(self.config)
        self.executor = TierExecutor(
            bus=self.bus,
            clock=self.clock,
            runner=self.runner,
            evaluator=self.evaluator,
            catalog=self.catalog,
            config=self.config,
            state_dir=self.layout.root,
            options_provider=self._options_for,
            profile_path=self.active_profile_path,
        )
        self.bus.publish(
            DaemonStarted(
                version=__version__,
                pid=os.getpid(),
                config_source=self.config.source,
                state_dir=str(self.layout.root),
            )
        )
        for report in self.telemetry.repairs:
            self.bus.publish(
                TelemetryRepaired(file=str(report.file), bytes_truncated=report.bytes_truncated)
            )
        for path, moved_to, reason in self.store.set_aside:
            self.bus.publish(StateSetAside(path=path, moved_to=moved_to, reason=reason))
        for hook in self._hooks:
            hook(self)
        self.server: MetricsServer | None = None
        if self.config.http.enabled:
            self.server = MetricsServer(
                self.registry,
                listen=self.config.http.listen,
                port=self.config.http.port,
                health=self.health,
            )
            self.server.start()
        self.scheduler = TierScheduler(
            self._enabled_tiers(), self._on_fire, on_missed=self._record_missed
        )
        self.scheduler.start()
        self._publish_schedule_metrics()
        self._jumps = ClockJumpDetector(self.clock, self.config.daemon.clock_jump_threshold_s)
        self._catch_up()
        for tier in self._run_now:
            self.enqueue(tier, "manual", self.clock.now(), None)
        self._worker = threading.Thread(target=self._work, name="kernelwatch-worker", daemon=True)
        self._worker.start()
        self._last_tick = self.clock.monotonic()
        self._notifier.ready()

    def add_start_hook(self, hook: Callable[[Daemon], None]) -> None:
        """Let components (recovery) wire themselves in, after DaemonStarted, before scheduling."""
        self._hooks.append(hook)

    def add_tick_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` from the main loop every tick (keep it quick; it must not raise)."""
        self._tick_hooks.append(hook)

    def active_profile_path(self) -> Path | None:
        """The active kernel profile folder, or None while there is none (canonical defaults)."""
        return self.layout.active if (self.layout.active / "profile.json").exists() else None

    def _options_for(self, check: str, tier: str) -> dict[str, Any]:
        options: dict[str, Any] = {}
        for provider in self.options_providers:
            options.update(provider(check, tier))
        return options

    def _enabled_tiers(self) -> dict[str, Any]:
        return {name: t for name, t in self.config.tiers.items() if t.enabled}

    def _publish_schedule_metrics(self) -> None:
        nexts = self.scheduler.next_fire_times()
        for name, tier in self._enabled_tiers().items():
            self.metrics.set_expected_period(name, expected_period_s(tier))
            self.metrics.set_next_run(name, nexts.get(name))

    def _catch_up(self) -> None:
        now = self.clock.now()
        tiers = self._enabled_tiers()
        last = {tier: self.store.catch_up_baseline(tier, now) for tier in tiers}
        for item in plan_catch_up(tiers, last, now):
            if isinstance(item, CatchUp):
                occ = item.occurrence
                self.enqueue(occ.tier, "catch_up", occ.scheduled_for, occ.window_end)
            elif isinstance(item, Missed):
                self._record_missed(item.tier, item.scheduled_for, item.reason)

    def _record_missed(self, tier: str, scheduled_for: datetime, reason: str) -> None:
        """Bookkeep an occurrence that will not run, so no restart catches it up again."""
        self.store.record_scheduled(tier, scheduled_for, new_run_id(), MISSED_TRIGGER)
        self.bus.publish(
            RunMissed(tier=tier, scheduled_for=scheduled_for.isoformat(), reason=reason)
        )

    # --- the queue ---------------------------------------------------------------------

    def queue_length(self) -> int:
        with self._queue_cv:
            return len(self._queue)

    def running_tier(self) -> str | None:
        with self._queue_cv:
            return self._running.tier if self._running is not None else None

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued or running (tests and one-shot tools); False on timeout."""
        with self._queue_cv:
            return self._queue_cv.wait_for(
                lambda: not self._queue and self._running is None, timeout=timeout
            )

    def _on_fire(self, occ: Occurrence) -> None:
        self.enqueue(occ.tier, "cron", occ.scheduled_for, occ.window_end)

    def enqueue(
        self,
        tier: str,
        trigger: str,
        scheduled_for: datetime,
        window_end: datetime | None,
        checks: tuple[str, ...] = (),
    ) -> str | None:
        """Queue a run; a duplicate of a queued run or a full queue is reported, not lost."""
        with self._queue_cv:
            duplicate = any(r.tier == tier and r.checks == checks for r in self._queue)
            full = len(self._queue) >= self.config.runner.max_queue
            if duplicate or full:
                reason = "coalesced with a queued run" if duplicate else "run queue full"
                if trigger in SCHEDULED_TRIGGERS:
                    self._record_missed(tier, scheduled_for, reason)
                else:
                    self.bus.publish(
                        RunMissed(tier=tier, scheduled_for=scheduled_for.isoformat(), reason=reason)
                    )
                return None
            run_id = new_run_id()
            self.store.record_scheduled(tier, scheduled_for, run_id, trigger)
            request = RunRequest(
                run_id=run_id,
                tier=tier,
                trigger=trigger,
                scheduled_for=scheduled_for,
                window_end=window_end,
                checks=checks,
            )
            self._queue.append(request)
            self.bus.publish(
                RunScheduled(
                    run_id=run_id,
                    tier=tier,
                    trigger=trigger,
                    scheduled_for=scheduled_for.isoformat(),
                    window_end=window_end.isoformat() if window_end else "",
                )
            )
            self._queue_cv.notify()
            return run_id

    def _work(self) -> None:
        while True:
            with self._queue_cv:
                while not self._queue and not self._flags.stop:
                    self._queue_cv.wait(timeout=1.0)
                if self._flags.stop:
                    return
                request = self._queue.popleft()
                self._running = request
                self._running_since = self.clock.monotonic()
            try:
                self._execute(request)
            except Exception:
                log.exception("run_failed", run_id=request.run_id, tier=request.tier)
            finally:
                with self._queue_cv:
                    self._running = None
                    self._queue_cv.notify_all()

    def _execute(self, request: RunRequest) -> None:
        now = self.clock.now()
        if request.window_end is not None and now >= request.window_end:
            self.bus.publish(
                RunDropped(
                    run_id=request.run_id,
                    tier=request.tier,
                    window_end=request.window_end.isoformat(),
                )
            )
            self.store.record_completed(request.run_id, now, "dropped", False)
            return
        self.store.record_started(request.run_id, now)
        status, reports = self.executor.execute(request)
        succeeded = all(not r.error for r in reports)
        self.store.record_completed(request.run_id, self.clock.now(), status.label, succeeded)

    # --- health ------------------------------------------------------------------------

    def _making_progress(self) -> bool:
        """The loop ticks and the worker is alive and not stuck past its deadline."""
        worker_ok = self._worker is not None and self._worker.is_alive()
        with self._queue_cv:
            running = self._running
        if running is not None:
            bound = self.config.runner.default_timeout_s + 2 * self.config.runner.kill_grace_s + 60
            worker_ok = worker_ok and self.clock.monotonic() - self._running_since < bound
        return worker_ok

    def health(self) -> tuple[bool, dict[str, Any]]:
        loop_age = self.clock.monotonic() - self._last_tick
        ok = self._making_progress() and loop_age < 10 * self.config.daemon.tick_s + 5
        with self._queue_cv:
            running = self._running.tier if self._running else None
        return ok, {
            "status": "ok" if ok else "unhealthy",
            "version": __version__,
            "queue_length": self.queue_length(),
            "running": running,
            "loop_age_s": round(loop_age, 3),
            "open_issues": self.evaluator.open_issues(),
        }

    # --- main loop ---------------------------------------------------------------------

    def install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, self._on_stop_signal)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        return previous

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request_stop(signal.Signals(signum).name)

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._flags.reload = True

    def request_stop(self, reason: str) -> None:
        self._flags.stop += 1
        self._flags.reason = self._flags.reason or reason
        if self._flags.stop > 1:
            # Second signal: do not wait for the running check.
            self.runner.cancel()

    def request_reload(self) -> None:
        self._flags.reload = True

    def serve_forever(self) -> int:
        """Run the main loop until a stop signal; returns the process exit code."""
        stop_event = threading.Event()
        watchdog_every = self._notifier.watchdog_interval_s
        last_ping = 0.0
        while not self._flags.stop:
            stop_event.wait(self.config.daemon.tick_s)
            self._last_tick = self.clock.monotonic()
            self.telemetry.tick()
            for hook in self._tick_hooks:
                try:
                    hook()
                except Exception:
                    log.exception("tick_hook_failed", hook=repr(hook))
            if self._flags.reload:
                self._flags.reload = False
                self.reload()
            jump = self._jumps.check()
            if jump is not None:
                expected, observed, delta = jump
                self.bus.publish(
                    ClockJumped(
                        expected=expected.isoformat(), observed=observed.isoformat(), delta_s=delta
                    )
                )
                self.scheduler.reschedule(self._enabled_tiers())
                self._catch_up()
                self._publish_schedule_metrics()
            if watchdog_every is not None and self._making_progress():
                now = self.clock.monotonic()
                if now - last_ping >= watchdog_every / 2:
                    self._notifier.watchdog()
                    last_ping = now
        return self.shutdown()

    def reload(self) -> bool:
        """Load the config file again; swap it in only if it is valid."""
        self._notifier.reloading()
        source = str(self._config_path) if self._config_path else "<embedded>"
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            self.bus.publish(ConfigRejected(source=source, error=str(exc)))
            self._notifier.ready()
            return False
        self.config = new
        self.executor.config = new
        self.evaluator.set_rules(new.rules)
        self.metrics.set_rules(new.rules)
        self.catalog = CheckCatalog(new)
        self.scheduler.reschedule(self._enabled_tiers())
        self._publish_schedule_metrics()
        self.bus.publish(ConfigReloaded(source=source, digest=new.digest()))
        self._notifier.ready()
        return True

    def shutdown(self) -> int:
        """Stop scheduling, let the running check finish within a bound, flush, exit 0."""
        self._notifier.stopping()
        self.bus.publish(DaemonStopping(reason=self._flags.reason or "requested"))
        self.scheduler.shutdown()
        with self._queue_cv:
            self._queue_cv.notify_all()
        deadline = self.clock.monotonic() + self.config.daemon.shutdown_grace_s
        worker = self._worker
        cancelled = False
        while worker is not None and worker.is_alive():
            worker.join(timeout=0.2)
            late = self.clock.monotonic() >= deadline
            if (late or self._flags.stop > 1) and not cancelled:
                self.runner.cancel()
                cancelled = True
        if self.server is not None:
            self.server.stop()
        self.telemetry.close()
        self.store.close()
        return 0


def run_daemon(
    config: Config,
    config_path: Path | None,
    state_dir: Path,
    *,
    run_now: tuple[str, ...] = (),
    extra_hooks: tuple[Callable[[Daemon], None], ...] = (),
) -> int:
    """Entry point of ``kernelwatch run``."""
    for tier in run_now:
        if tier not in TIER_ORDER:
            raise ConfigError(f"unknown tier {tier!r}", source="--run-now")
    daemon = Daemon(config=config, config_path=config_path, state_dir=state_dir, run_now=run_now)
    for hook in extra_hooks:
        daemon.add_start_hook(hook)
    previous = daemon.install_signal_handlers()
    try:
        daemon.start()
        return daemon.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
