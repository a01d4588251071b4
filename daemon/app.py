"""The daemon's lifecycle: start-up → main loop → shutdown, with signals and systemd notify.

Threads: the main thread runs the loop (signals, reload, clock-jump detection, telemetry
ticks, watchdog pings); one worker thread executes queued runs one at a time; APScheduler's
thread only enqueues; the HTTP server answers scrapes. Signal handlers only set flags (a
handler that took a lock could deadlock against the very code it interrupted).

SIGTERM/SIGINT stop gracefully: no check starts after ``DaemonStopping``; the running check
may finish within ``daemon.shutdown_grace_s``, then its process group is killed (SIGTERM,
SIGKILL after ``runner.kill_grace_s``); the whole stop is bounded by the sum of both plus
``SHUTDOWN_SLACK_S``. The run in progress and the runs still queued end with ``RunDropped``
and stay bookkept as interrupted, so the next start runs them again (within the tier's
catch-up grace) or reports them missed, once. Telemetry is flushed and the exit code is 0. A
second SIGTERM/SIGINT forces the exit at once: the child's group is SIGKILLed, queued runs
are dropped, telemetry is flushed, and the process exits with 128 + the signal number.

SIGHUP reloads the config: everything new is built first and swapped in only if all of it
succeeded; a bad file is rejected with ``ConfigRejected`` and the running config kept.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final, final

import structlog
from prometheus_client import CollectorRegistry

from daemon import __version__
from daemon.baselines import BaselineKeeper
from daemon.bus import EventBus
from daemon.clock import Clock, SystemClock
from daemon.config import TIER_ORDER, Config, load_config
from daemon.errors import ConfigError, ListenError
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
from daemon.profile_store import active_dir
from daemon.runner import CheckRunner
from daemon.schedule import (
    CatchUp,
    ClockJumpDetector,
    Missed,
    Occurrence,
    Rerun,
    TierScheduler,
    cron_trigger,
    expected_period_s,
    plan_catch_up,
    plan_resume,
)
from daemon.sdnotify import Notifier
from daemon.state_dir import StateLayout
from daemon.store import (
    INTERRUPTED_STATUS,
    MISSED_TRIGGER,
    SCHEDULED_TRIGGERS,
    RunRow,
    StateStore,
)
from daemon.telemetry import TelemetrySink, last_sequence

log = structlog.get_logger("kernelwatch.daemon")

EX_SOFTWARE: Final = 70
# How long past ``shutdown_grace_s + kill_grace_s`` a stop may take: the killed check's last
# events and bookkeeping (a child stuck in the kernel even after SIGKILL is not waited for).
SHUTDOWN_SLACK_S: Final = 5.0
# After a forced exit killed the check's group, how long its run may take to say so.
FORCED_JOIN_S: Final = 2.0
# Between two checks of a run the worker only loads, evaluates and bookkeeps; longer than
# this without a child running means it is stuck.
BETWEEN_CHECKS_S: Final = 60.0


@dataclass(slots=True)
class _Flags:
    stop: int = 0
    reload: bool = False
    reason: str = ""
    signum: int = 0


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
        self._stopping = False  # under _queue_cv: the queue is closed, enqueue drops at once
        self.forced = False  # a second stop signal cut the shutdown short
        self.server: MetricsServer | None = None
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
        # Read before anything of this start is queued: these are the previous daemon's.
        interrupted = self.store.incomplete_runs()
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
        if self.config.http.enabled:
            self._listen()
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
        # Every subscriber is wired now (hooks add recovery's): their failure series start at 0.
        self.metrics.declare_subscribers(self.bus.subscriber_names())
        self.scheduler = TierScheduler(
            self._enabled_tiers(), self._on_fire, on_missed=self._record_missed
        )
        self.scheduler.start()
        self._publish_schedule_metrics()
        self._jumps = ClockJumpDetector(self.clock, self.config.daemon.clock_jump_threshold_s)
        self._catch_up(interrupted)
        for tier in self._run_now:
            self.enqueue(tier, "manual", self.clock.now(), None)
        self._worker = threading.Thread(target=self._work, name="kernelwatch-worker", daemon=True)
        self._worker.start()
        self._last_tick = self.clock.monotonic()
        self._notifier.ready()

    def _listen(self) -> None:
        """Bind /metrics and /healthz before DaemonStarted: a taken port is a failed start."""
        http = self.config.http
        server = MetricsServer(
            self.registry, listen=http.listen, port=http.port, health=self.health
        )
        try:
            server.start()
        except OSError as exc:
            self.telemetry.close()
            self.store.close()
            raise ListenError(
                f"{self.config.source}: http.listen/http.port: cannot listen on "
                f"{http.listen}:{http.port}: {exc.strerror or exc}"
            ) from exc
        self.server = server

    def add_start_hook(self, hook: Callable[[Daemon], None]) -> None:
        """Let components (recovery) wire themselves in, after DaemonStarted, before scheduling."""
        self._hooks.append(hook)

    def add_tick_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` from the main loop every tick (keep it quick; it must not raise)."""
        self._tick_hooks.append(hook)

    def active_profile_path(self) -> Path | None:
        """The active kernel profile folder, or None while there is none (canonical defaults)."""
        return active_dir(self.layout.root)

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

    def _catch_up(self, interrupted: list[RunRow] | None = None) -> None:
        """Queue or report what was missed; at start also decide the interrupted runs, once."""
        now = self.clock.now()
        tiers = self._enabled_tiers()
        last = {tier: self.store.catch_up_baseline(tier, now) for tier in tiers}
        plan = plan_catch_up(tiers, last, now)
        superseded = {item.tier for item in plan if isinstance(item, CatchUp)}
        for row, decision in plan_resume(interrupted or [], tiers, now, superseded=superseded):
            if isinstance(decision, Rerun):
                occ = decision.occurrence
                self.enqueue(occ.tier, decision.trigger, occ.scheduled_for, occ.window_end)
            else:
                # The interrupted row itself bookkeeps the occurrence: no "missed" row.
                self.bus.publish(
                    RunMissed(
                        tier=decision.tier,
                        scheduled_for=decision.scheduled_for.isoformat(),
                        reason=decision.reason,
                    )
                )
            # Closed after the re-run is queued: a crash in between leaves two incomplete rows,
            # which the next start coalesces into one run.
            self.store.record_completed(row.run_id, now, INTERRUPTED_STATUS, False)
        for item in plan:
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
        self.metrics.set_next_run(
            occ.tier, self.scheduler.next_fire_after(occ.tier, occ.scheduled_for)
        )

    def enqueue(
        self,
        tier: str,
        trigger: str,
        scheduled_for: datetime,
        window_end: datetime | None,
        checks: tuple[str, ...] = (),
    ) -> str | None:
        """Queue a run; a duplicate of a queued run or a full queue is reported, not lost.

        While stopping, the run is bookkept and dropped at once (the next start decides it).
        """
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
            self.bus.publish(
                RunScheduled(
                    run_id=run_id,
                    tier=tier,
                    trigger=trigger,
                    scheduled_for=scheduled_for.isoformat(),
                    window_end=window_end.isoformat() if window_end else "",
                )
            )
            if self._stopping:
                self._drop_interrupted(request)
                return None
            self._queue.append(request)
            self._queue_cv.notify()
            return run_id

    def _drop_interrupted(self, request: RunRequest) -> None:
        """Report a run a stop keeps from running; it stays incomplete for the next start."""
        log.warning("run_dropped", run_id=request.run_id, tier=request.tier, reason="stopping")
        self.bus.publish(
            RunDropped(
                run_id=request.run_id,
                tier=request.tier,
                window_end=request.window_end.isoformat() if request.window_end else "",
                reason="stopping",
                skipped=tuple(self.executor.checks_for(request)),
            )
        )
        self.store.record_interrupted(request.run_id)

    def _work(self) -> None:
        while True:
            with self._queue_cv:
                while not self._queue and not self._stop_requested():
                    self._queue_cv.wait(timeout=1.0)
                if self._stop_requested():
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
                    reason="window_closed",
                    skipped=tuple(self.executor.checks_for(request)),
                )
            )
            self.store.record_completed(request.run_id, now, "dropped", False)
            return
        self.store.record_started(request.run_id, now)
        result = self.executor.execute(request)
        if result.dropped == "stopping":
            self.store.record_interrupted(request.run_id)
        elif result.dropped:
            self.store.record_completed(request.run_id, self.clock.now(), "dropped", False)
        else:
            self.store.record_completed(
                request.run_id, self.clock.now(), result.status.label, result.succeeded
            )

    def _stop_requested(self) -> bool:
        # Read without a lock on purpose: set by signal handlers, which must not take locks.
        return self._stopping or self._flags.stop > 0

    # --- health ------------------------------------------------------------------------

    def _making_progress(self) -> bool:
        """The worker is alive and not stuck past its check's own deadline (or between checks)."""
        worker_ok = self._worker is not None and self._worker.is_alive()
        with self._queue_cv:
            running, since = self._running, self._running_since
        if running is not None:
            overdue_in = self.runner.overdue_in()
            if overdue_in is not None:
                worker_ok = worker_ok and overdue_in > 0
            else:
                busy = min(self.runner.idle_for(), self.clock.monotonic() - since)
                worker_ok = worker_ok and busy < BETWEEN_CHECKS_S
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
        self._flags.signum = signum
        self.request_stop(signal.Signals(signum).name)

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._flags.reload = True

    def request_stop(self, reason: str) -> None:
        """Ask the main loop to stop; a second request forces the exit (flags only: see doc)."""
        self._flags.stop += 1
        self._flags.reason = self._flags.reason or reason

    def request_reload(self) -> None:
        self._flags.reload = True

    def serve_forever(self) -> int:
        """Run the main loop until a stop signal, then shut down; returns the exit code.

        Shutdown runs even when the loop fails, so telemetry is flushed and the running check
        does not outlive the daemon; a failed loop exits 70 (EX_SOFTWARE).
        """
        try:
            self._loop()
        except Exception:
            log.exception("main_loop_failed")
            self._flags.reason = self._flags.reason or "main loop failed"
            return self.shutdown() or EX_SOFTWARE
        return self.shutdown()

    def _loop(self) -> None:
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

    def reload(self) -> bool:
        """Load the config file again; swap it in only if everything built from it is valid.

        Applies all but the telemetry, HTTP and logging settings (those need a restart).
        """
        self._notifier.reloading()
        source = str(self._config_path) if self._config_path else "<embedded>"
        try:
            new = load_config(self._config_path)
            catalog = CheckCatalog(new)
            for name, tier in new.tiers.items():
                if tier.enabled:
                    cron_trigger(name, tier)
        except Exception as exc:  # noqa: BLE001 - whatever the file does, the daemon keeps running
            error = str(exc) if isinstance(exc, ConfigError) else f"{source}: {exc!r}"
            self.bus.publish(ConfigRejected(source=source, error=error))
            self._notifier.ready()
            return False
        self.config = new
        self.catalog = catalog
        self.executor.apply(new, catalog)
        self.runner.kill_grace_s = new.runner.kill_grace_s
        self._jumps.threshold_s = new.daemon.clock_jump_threshold_s
        self.evaluator.set_rules(new.rules)
        self.metrics.set_rules(new.rules)
        self.scheduler.reschedule(self._enabled_tiers())
        self._publish_schedule_metrics()
        self.bus.publish(ConfigReloaded(source=source, digest=new.digest()))
        self._notifier.ready()
        return True

    def shutdown(self) -> int:
        """Stop scheduling and checks, bound the running one, drop the queue, flush; exit code.

        0, or 128 + the signal number when a second stop signal forced the exit.
        """
        self.executor.stop()  # from here on no CheckStarted: it cannot follow DaemonStopping
        with self._queue_cv:
            self._stopping = True
            self._queue_cv.notify_all()
        self._notifier.stopping()
        self.bus.publish(DaemonStopping(reason=self._flags.reason or "requested"))
        self.scheduler.shutdown()
        self._wait_for_worker()
        with self._queue_cv:
            queued = list(self._queue)
            self._queue.clear()
        for request in queued:
            self._drop_interrupted(request)
        if self.server is not None:
            self.server.stop()
        self.telemetry.close()
        self.store.close()
        if self.forced:
            return 128 + self._flags.signum if self._flags.signum else 1
        return 0

    def _wait_for_worker(self) -> None:
        """Let the running check finish within the grace, then cancel it; all of it bounded.

        Real time, not ``self.clock``: these are waits on a thread and a process.
        """
        worker = self._worker
        grace_end = time.monotonic() + self.config.daemon.shutdown_grace_s
        hard_end = grace_end + self.runner.kill_grace_s + SHUTDOWN_SLACK_S
        cancelled = False
        while worker is not None and worker.is_alive():
            now = time.monotonic()
            if self._flags.stop > 1:
                log.warning("shutdown_forced", signal=self._flags.signum)
                self.forced = True
                self.runner.kill_now()
                # A SIGKILLed group is noticed at once: a moment for the run's last events.
                worker.join(timeout=FORCED_JOIN_S)
                return
            if now >= grace_end and not cancelled:
                log.warning("shutdown_grace_over", grace_s=self.config.daemon.shutdown_grace_s)
                self.runner.cancel()
                cancelled = True
            if now >= hard_end:
                # Only a child stuck in the kernel gets here: stop waiting for it.
                log.error("shutdown_bound_reached", running=self.running_tier())
                self.runner.kill_now()
                return
            worker.join(timeout=0.1)


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
        code = daemon.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if daemon.forced:
        # Forced: do not wait for the worker or anything else at interpreter exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
