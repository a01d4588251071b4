"""``kernelwatch check``: run a tier or one check now, through the daemon's runner and evaluator.

It judges by level alone (no hysteresis) and writes nothing to the state directory, so it
can run beside a live daemon without disturbing its counters, telemetry or schedule. It
does read the performance baselines learned there (by the daemon or ``baseline record``),
so a manual daily run is judged for regressions exactly as a scheduled one; it never
learns from its own samples.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from checks.api import Status
from daemon.baselines import BaselineKeeper
from daemon.bus import EventBus
from daemon.clock import SystemClock
from daemon.config import TIER_ORDER, Config
from daemon.evaluator import Evaluator
from daemon.execution import CheckCatalog, RunRequest, TierExecutor, new_run_id
from daemon.logs import LogSink
from daemon.profile_store import active_dir
from daemon.runner import CheckRunner
from daemon.state_dir import StateLayout
from daemon.store import StateStore


def run_once(config: Config, state_dir: Path, target: str) -> tuple[Status, dict[str, Any]]:
    """Run ``target`` (a tier or a check name); return the worst status and a JSON payload."""
    clock = SystemClock()
    bus = EventBus(clock)
    bus.subscribe("log", LogSink())
    catalog = CheckCatalog(config)
    checks: tuple[str, ...] = ()
    if target in TIER_ORDER:
        tier = target
    else:
        check = catalog.load(target)  # raises RegistryError naming the known checks
        tier, checks = check.tier, (target,)
    database = StateLayout(state_dir).database
    store = StateStore.open(database, clock=clock) if database.exists() else None
    baselines = BaselineKeeper(store, clock) if store is not None else None
    executor = TierExecutor(
        bus=bus,
        clock=clock,
        runner=CheckRunner(kill_grace_s=config.runner.kill_grace_s),
        evaluator=Evaluator(config.rules),
        catalog=catalog,
        config=config,
        state_dir=state_dir,
        stateless=True,
        options_provider=baselines.options_for if baselines is not None else None,
        profile_path=lambda: active_dir(state_dir),
    )
    request = RunRequest(
        run_id=new_run_id(),
        tier=tier,
        trigger="manual",
        scheduled_for=datetime.now(UTC),
        window_end=None,
        checks=checks,
    )
    try:
        result = executor.execute(request)
    finally:
        if store is not None:
            store.close()
    status = result.status
    payload = {
        "target": target,
        "tier": tier,
        "run_id": request.run_id,
        "status": status.label,
        "exit_code": int(status),
        "checks": [
            {
                "check": r.check,
                "status": r.status.label,
                "duration_s": r.duration_s,
                "error": r.error,
                "breaches": list(r.breaches),
                "notes": list(r.notes),
                "measurements": [m.to_record() for m in r.measurements],
            }
            for r in result.reports
        ],
    }
    return status, payload
