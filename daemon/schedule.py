"""Cadence tiers in time: cron parsing, occurrences, catch-up planning, clock jumps, APScheduler.

This is the only module that imports APScheduler (3.x). Everything above ``TierScheduler`` is
pure: it takes ``now``/``after`` as arguments and asks triggers for fire times, so it is tested
without sleeping and is the same code ``kernelwatch schedule`` prints from. ``TierScheduler`` is
the thin edge that wakes the daemon when a cron occurrence is due; it keeps no state worth
keeping (in-memory job store only) because our bookkeeping lives in SQLite (``daemon.store``).

Cron semantics are APScheduler's ``CronTrigger.from_crontab`` in UTC, which differ from
Vixie cron in two ways that matter for our defaults:

* day-of-month AND day-of-week must both match, so ``0 0 1-7 * sun`` is the first Sunday of
  the month (Vixie cron would OR them: every day 1-7 plus every Sunday);
* numeric weekdays count from 0 = Monday (Vixie cron: 0 = Sunday). Use names (``sun``,
  ``mon-fri``): they mean the same thing everywhere.

Catch-up (``plan_catch_up``) decisions:

* a tier with no bookkeeping at all (first start ever) catches nothing up: nothing was missed;
* several missed occurrences are coalesced: only the latest can be caught up, and only if
  ``now - scheduled_for <= catch_up_grace_s``; every older occurrence newer than the stored
  last scheduled time is reported as ``Missed`` (at most ``MAX_MISSED_LISTED`` per tier), so a
  missed run is never silent;
* a catch-up run gets a fresh window of ``window_s`` starting now (its original window has
  usually closed by the time the daemon is back, and the grace already bounds how late it is).

Runs a stop interrupted (queued or running when the daemon stopped or was killed; see
``plan_resume``) are decided once, at the next start: per tier, the newest one whose trigger the
daemon re-runs (cron, catch-up, profile change) runs again under its own trigger with a fresh
window if it is within the tier's catch-up grace and no later occurrence is being caught up;
every other one is reported missed. Verify runs are left to the recovery engine.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon.clock import Clock, SystemClock, ensure_utc
from daemon.config import TIER_ORDER, TierSettings
from daemon.store import RESUMABLE_TRIGGERS, RunRow

log = structlog.get_logger("kernelwatch.schedule")

MAX_MISSED_LISTED: Final = 100
_TICK: Final = timedelta(microseconds=1)
# Fixed start for validity and period scans, so both are deterministic (rule 6: no clock reads).
_REFERENCE: Final = datetime(2024, 1, 1, tzinfo=UTC)
# 28 years: the Gregorian weekday/date cycle, so every alignment of first Sundays is seen.
_PERIOD_SCAN: Final = timedelta(days=28 * 366)
_PERIOD_SCAN_MAX_FIRES: Final = 2000
_LOOKBACK_START_S: Final = 60.0
_LOOKBACK_MAX_S: Final = 10 * 366 * 86400.0


class Trigger(Protocol):
    """The part of an APScheduler trigger we use: its next fire time at or after ``now``."""

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None: ...


TriggerFactory = Callable[[str, TierSettings], Trigger]


# --- cron and fire times ----------------------------------------------------------------


def parse_cron(expr: str) -> CronTrigger:
    """Parse a 5-field crontab (UTC, day AND weekday, 0 = Monday); raise ``ValueError`` if bad."""
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError("empty cron expression; expected 5 fields: minute hour day month weekday")
    try:
        trigger = CronTrigger.from_crontab(expr, timezone=UTC)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{exc} (fields: minute hour day month weekday)") from None
    # A valid-looking expression such as "0 0 30 2 *" never fires; refuse it here rather than
    # let a tier silently never run.
    if trigger.get_next_fire_time(None, _REFERENCE) is None:
        raise ValueError("expression never fires")
    return trigger


def cron_trigger(tier: str, settings: TierSettings) -> Trigger:
    """The production trigger factory: the tier's cron expression."""
    return _cached_cron(settings.cron)


def interval_trigger(seconds: float, start: datetime) -> Trigger:
    """A trigger firing every ``seconds`` from ``start``: for tests and development runs only."""
    return IntervalTrigger(seconds=seconds, start_date=ensure_utc(start), timezone=UTC)  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=64)
def _cached_cron(expr: str) -> Trigger:
    return parse_cron(expr)  # type: ignore[no-any-return]


def _next_fire(trigger: Trigger, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after``."""
    # APScheduler returns a fire time at or after ``now`` (rounded up to a whole second).
    fire = trigger.get_next_fire_time(None, after + _TICK)
    return None if fire is None else fire.astimezone(UTC)


def _latest_fire(trigger: Trigger, at_or_before: datetime) -> datetime | None:
    """The last fire time <= ``at_or_before``, found by looking back in growing spans."""
    span = _LOOKBACK_START_S
    while span <= _LOOKBACK_MAX_S:
        latest = None
        fire = trigger.get_next_fire_time(None, at_or_before - timedelta(seconds=span))
        while fire is not None and fire <= at_or_before:
            latest = fire
            fire = _next_fire(trigger, fire)
        if latest is not None:
            return latest.astimezone(UTC)
        span *= 4
    return None


# --- occurrences ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One run of a tier: when it was due and when its window closes (both UTC)."""

    tier: str
    scheduled_for: datetime
    window_end: datetime


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Run this occurrence now, once; its window starts now (see the module docstring)."""

    occurrence: Occurrence

    @property
    def tier(self) -> str:
        return self.occurrence.tier


@dataclass(frozen=True, slots=True)
class Missed:
    """This occurrence did not run and will not: the daemon publishes ``RunMissed``."""

    tier: str
    scheduled_for: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Rerun:
    """Run an interrupted run again now, once, under its own trigger; its window starts now."""

    trigger: str
    occurrence: Occurrence

    @property
    def tier(self) -> str:
        return self.occurrence.tier


def _occurrence(tier: str, settings: TierSettings, scheduled_for: datetime) -> Occurrence:
    return Occurrence(tier, scheduled_for, scheduled_for + timedelta(seconds=settings.window_s))


def next_occurrences(
    tier: str, settings: TierSettings, after: datetime, count: int
) -> list[Occurrence]:
    """The next ``count`` occurrences strictly after ``after``; none for a disabled tier."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not settings.enabled:
        return []
    trigger = cron_trigger(tier, settings)
    found: list[Occurrence] = []
    fire = _next_fire(trigger, ensure_utc(after))
    while fire is not None and len(found) < count:
        found.append(_occurrence(tier, settings, fire))
        fire = _next_fire(trigger, fire)
    return found


def previous_occurrence(
    tier: str, settings: TierSettings, at_or_before: datetime
) -> Occurrence | None:
    """The latest occurrence due at or before ``at_or_before``; None if disabled or none."""
    if not settings.enabled:
        return None
    fire = _latest_fire(cron_trigger(tier, settings), ensure_utc(at_or_before))
    return None if fire is None else _occurrence(tier, settings, fire)


def expected_period_s(settings: TierSettings) -> float:
    """The largest gap between consecutive fire times: how overdue a tier may look when healthy.

    Scanned over 28 years (at most 2,000 fires) from a fixed date, so that every alignment of
    weekdays and months (35-day gaps between first Sundays, 98-day gaps between quarterly
    ones) is seen.
    """
    return _period_s(settings.cron)


@functools.lru_cache(maxsize=64)
def _period_s(expr: str) -> float:
    trigger = _cached_cron(expr)
    largest = 0.0
    fires = 0
    previous = _next_fire(trigger, _REFERENCE)
    while previous is not None and fires < _PERIOD_SCAN_MAX_FIRES:
        fire = _next_fire(trigger, previous)
        if fire is None:
            break
        largest = max(largest, (fire - previous).total_seconds())
        fires += 1
        if fire - _REFERENCE > _PERIOD_SCAN:
            break
        previous = fire
    return largest


def in_window(occ: Occurrence, now: datetime) -> bool:
    """Whether ``now`` lies in the occurrence's window [scheduled_for, window_end)."""
    now = ensure_utc(now)
    return occ.scheduled_for <= now < occ.window_end


# --- catch-up ---------------------------------------------------------------------------


def _tier_sort_key(tier: str) -> tuple[int, str]:
    return (TIER_ORDER.index(tier) if tier in TIER_ORDER else len(TIER_ORDER), tier)


def plan_catch_up(
    tiers: Mapping[str, TierSettings],
    last_scheduled: Mapping[str, datetime | None],
    now: datetime,
) -> list[CatchUp | Missed]:
    """What to do at start (or after a clock jump) about occurrences missed while not running.

    Per enabled tier, in ``TIER_ORDER``: occurrences due after the tier's last scheduled time
    and at or before ``now``. The latest is a ``CatchUp`` when within ``catch_up_grace_s``,
    else ``Missed``; every older one is ``Missed`` (coalesced). A tier whose last scheduled
    time is None (never ran) yields nothing. Within a tier, results are oldest first.
    """
    now = ensure_utc(now)
    plan: list[CatchUp | Missed] = []
    for tier in sorted(tiers, key=_tier_sort_key):
        settings = tiers[tier]
        last = last_scheduled.get(tier)
        if not settings.enabled or last is None:
            continue
        last = ensure_utc(last)
        trigger = cron_trigger(tier, settings)
        latest = _latest_fire(trigger, now)
        if latest is None or latest <= last:
            continue
        older: list[datetime] = []
        probe = _latest_fire(trigger, latest - _TICK)
        while probe is not None and probe > last and len(older) < MAX_MISSED_LISTED:
            older.append(probe)
            probe = _latest_fire(trigger, probe - _TICK)
        truncated = probe is not None and probe > last
        late_s = (now - latest).total_seconds()
        caught_up = late_s <= settings.catch_up_grace_s
        older_reason = (
            f"coalesced into the catch-up of {latest.isoformat()}"
            if caught_up
            else "past catch-up grace"
        )
        for i, when in enumerate(reversed(older)):
            reason = older_reason
            if i == 0 and truncated:
                reason += f"; older occurrences since {last.isoformat()} not listed"
            plan.append(Missed(tier, when, reason))
        if caught_up:
            window_end = now + timedelta(seconds=settings.window_s)
            plan.append(CatchUp(Occurrence(tier, latest, window_end)))
        else:
            plan.append(Missed(tier, latest, "past catch-up grace"))
    return plan


# Triggers whose interrupted runs the daemon leaves alone: the recovery engine re-queues its
# own pending verifications.
_NOT_OURS: Final = ("verify",)
_INTERRUPTED: Final = "interrupted by a daemon stop"


def plan_resume(
    interrupted: Sequence[RunRow],
    tiers: Mapping[str, TierSettings],
    now: datetime,
    *,
    superseded: Collection[str] = (),
) -> list[tuple[RunRow, Rerun | Missed]]:
    """What to do at start about runs left incomplete by the previous daemon (see module doc).

    ``interrupted`` are the store's incomplete rows (oldest first), ``tiers`` the enabled ones,
    ``superseded`` the tiers ``plan_catch_up`` catches up (a later occurrence replaces the
    interrupted run). Each returned row gets exactly one decision; verify rows get none.
    """
    now = ensure_utc(now)
    rows = [r for r in interrupted if r.trigger not in _NOT_OURS]
    rerun: dict[str, RunRow] = {}
    for row in rows:
        settings = tiers.get(row.tier)
        if (
            row.trigger in RESUMABLE_TRIGGERS
            and settings is not None
            and settings.enabled
            and row.tier not in superseded
            and (now - row.scheduled_for).total_seconds() <= settings.catch_up_grace_s
        ):
            best = rerun.get(row.tier)
            if best is None or row.scheduled_for >= best.scheduled_for:
                rerun[row.tier] = row
    plan: list[tuple[RunRow, Rerun | Missed]] = []
    for row in rows:
        chosen = rerun.get(row.tier)
        settings = tiers.get(row.tier)
        if chosen is row and settings is not None:
            window_end = now + timedelta(seconds=settings.window_s)
            plan.append(
                (row, Rerun(row.trigger, Occurrence(row.tier, row.scheduled_for, window_end)))
            )
            continue
        if row.trigger not in RESUMABLE_TRIGGERS:
            reason = f"{_INTERRUPTED}; {row.trigger} runs are not run again"
        elif settings is None or not settings.enabled:
            reason = f"{_INTERRUPTED}; the tier is not enabled"
        elif row.tier in superseded:
            reason = f"{_INTERRUPTED}; superseded by the catch-up of a later occurrence"
        elif chosen is not None:
            reason = (
                f"{_INTERRUPTED}; coalesced into the re-run of {chosen.scheduled_for.isoformat()}"
            )
        else:
            reason = f"{_INTERRUPTED}; past catch-up grace"
        plan.append((row, Missed(row.tier, row.scheduled_for, reason)))
    return plan


# --- clock jumps ------------------------------------------------------------------------


class ClockJumpDetector:
    """Notices a wall-clock step (suspend/resume, NTP step) by comparing it with monotonic time."""

    def __init__(self, clock: Clock, threshold_s: float) -> None:
        self._clock = clock
        self.threshold_s = threshold_s
        self._wall = clock.now()
        self._mono = clock.monotonic()

    @property
    def threshold_s(self) -> float:
        """The smallest step reported as a jump; settable (config reload)."""
        return self._threshold_s

    @threshold_s.setter
    def threshold_s(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"threshold_s must be > 0, got {value!r}")
        self._threshold_s = value

    def check(self) -> tuple[datetime, datetime, float] | None:
        """Return (expected, observed, delta_s) if the wall clock jumped since the last check.

        Re-bases on every call, so slow slewing never adds up to a false jump.
        """
        wall, mono = self._clock.now(), self._clock.monotonic()
        expected = self._wall + timedelta(seconds=mono - self._mono)
        delta_s = (wall - expected).total_seconds()
        self._wall, self._mono = wall, mono
        if abs(delta_s) > self._threshold_s:
            return expected, wall, delta_s
        return None


# --- the APScheduler edge ---------------------------------------------------------------


class TierScheduler:
    """Wakes the daemon at each enabled tier's cron occurrence; ``on_fire`` must only enqueue.

    APScheduler runs with UTC, an in-memory job store (never persisted: it pickles), one worker
    thread (so tiers due at the same instant fire in ``TIER_ORDER``), ``coalesce=True``,
    ``max_instances=1`` and a misfire grace of the tier's window. A run APScheduler skips
    (misfired past the window, or the previous ``on_fire`` still running) reaches
    ``on_missed(tier, scheduled_for, reason)``.
    """

    def __init__(
        self,
        tiers: Mapping[str, TierSettings],
        on_fire: Callable[[Occurrence], None],
        *,
        on_missed: Callable[[str, datetime, str], None] | None = None,
        clock: Clock | None = None,
        trigger_factory: TriggerFactory = cron_trigger,
    ) -> None:
        self._on_fire = on_fire
        self._on_missed = on_missed
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._trigger_factory = trigger_factory
        self._lock = threading.RLock()
        self._tiers: dict[str, TierSettings] = {}
        self._triggers: dict[str, Trigger] = {}
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 1},
        )
        self._scheduler.add_listener(self._on_skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self.reschedule(tiers)

    def start(self) -> None:
        """Start the scheduler thread."""
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop the scheduler thread, waiting for an ``on_fire`` in progress; idempotent."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)

    def reschedule(self, tiers: Mapping[str, TierSettings]) -> None:
        """Replace every job (config reload, clock jump): next fire times are recomputed now."""
        with self._lock:
            self._scheduler.remove_all_jobs()
            self._tiers = dict(tiers)
            self._triggers = {}
            for tier in sorted(tiers, key=_tier_sort_key):
                settings = tiers[tier]
                if not settings.enabled:
                    continue
                trigger = self._trigger_factory(tier, settings)
                self._triggers[tier] = trigger
                self._scheduler.add_job(
                    self._fire,
                    trigger=trigger,
                    args=(tier,),
                    id=self._job_id(tier),
                    name=f"tier:{tier}",
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=max(1, int(settings.window_s)),
                    replace_existing=True,
                )

    def next_fire_times(self) -> dict[str, datetime | None]:
        """Per configured tier, its next fire time (None when disabled)."""
        with self._lock:
            now = self._clock.now()
            result: dict[str, datetime | None] = {}
            for tier in sorted(self._tiers, key=_tier_sort_key):
                trigger = self._triggers.get(tier)
                job = self._scheduler.get_job(self._job_id(tier))
                if trigger is None or job is None:
                    result[tier] = None
                elif self._scheduler.running:
                    when = job.next_run_time
                    result[tier] = None if when is None else when.astimezone(UTC)
                else:  # pending jobs get their next run time only when the scheduler starts
                    result[tier] = _next_fire(trigger, now)
            return result

    def next_fire_after(self, tier: str, after: datetime) -> datetime | None:
        """The tier's first fire time strictly after ``after``; None when it is not scheduled.

        Asked of the trigger, not of APScheduler, whose job gets its next run time only after
        the job function was handed to the executor.
        """
        with self._lock:
            trigger = self._triggers.get(tier)
        return None if trigger is None else _next_fire(trigger, ensure_utc(after))

    @staticmethod
    def _job_id(tier: str) -> str:
        # The memory job store orders simultaneous jobs by id; the prefix makes that TIER_ORDER.
        return f"{_tier_sort_key(tier)[0]}-{tier}"

    def _fire(self, tier: str) -> None:
        # APScheduler 3.x does not pass the scheduled run time to the job, so recover it from
        # the trigger: with coalescing, it is the latest fire time at or before now.
        with self._lock:
            trigger = self._triggers.get(tier)
            settings = self._tiers.get(tier)
        if trigger is None or settings is None:
            return
        now = self._clock.now()
        scheduled = _latest_fire(trigger, now) or now
        try:
            self._on_fire(_occurrence(tier, settings, scheduled))
        except Exception as exc:  # noqa: BLE001 - a failing callback must not kill the schedule
            log.error("schedule_on_fire_failed", tier=tier, error=repr(exc))

    def _on_skipped(self, event: Any) -> None:
        tier = str(event.job_id).split("-", 1)[-1]
        if event.code == EVENT_JOB_MISSED:
            times, reason = [event.scheduled_run_time], "misfired past its window"
        else:
            times, reason = list(event.scheduled_run_times), "previous run still being queued"
        log.warning("schedule_run_skipped", tier=tier, reason=reason)
        if self._on_missed is None:
            return
        for when in times:
            try:
                self._on_missed(tier, when.astimezone(UTC), reason)
            except Exception as exc:  # noqa: BLE001 - same isolation as on_fire
                log.error("schedule_on_missed_failed", tier=tier, error=repr(exc))
