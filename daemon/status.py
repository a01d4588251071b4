"""``kernelwatch status``: last and next runs per tier, open issues, and the daemon's health."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from daemon.clock import SystemClock
from daemon.config import TIER_ORDER, Config
from daemon.schedule import next_occurrences
from daemon.state_dir import StateLayout
from daemon.store import INTERRUPTED_STATUS, MISSED_TRIGGER, RunRow, StateStore


def _daemon_health(config: Config) -> dict[str, Any]:
    if not config.http.enabled:
        return {"status": "unknown", "detail": "http endpoint disabled in config"}
    host = config.http.listen
    if host in {"0.0.0.0", "::"}:  # noqa: S104 - mapping a wildcard bind to where we can reach it
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{config.http.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: dict[str, Any] = json.load(response)
            return {**body, "detail": url}
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                unhealthy: dict[str, Any] = json.load(exc)  # /healthz says why in its body
            except (OSError, ValueError):
                unhealthy = {}
        if not isinstance(unhealthy, dict):
            unhealthy = {}
        return {**unhealthy, "status": "unhealthy", "detail": f"{url}: HTTP {exc.code}"}
    except (OSError, ValueError) as exc:
        return {"status": "not running", "detail": f"{url}: {exc}"}


def _run_state(row: RunRow, health: dict[str, Any]) -> str:
    """What became of a tier's latest run; "running" only if the live daemon says so."""
    if row.trigger == MISSED_TRIGGER:
        return "missed"
    if row.completed is not None or row.status == INTERRUPTED_STATUS:
        return row.status or "unknown"
    if "running" in health:  # the daemon answered: the run is its own, in flight or queued
        if row.started is None:
            return "queued"
        if health["running"] == row.tier:
            return "running"
    # No daemon runs it: a stop or a crash cut it short; the next start decides it.
    return INTERRUPTED_STATUS


def collect_status(config: Config, state_dir: Path) -> dict[str, Any]:
    """Read the state directory (without modifying it) and the daemon's /healthz."""
    layout = StateLayout(state_dir)
    now = SystemClock().now()
    tiers: list[dict[str, Any]] = []
    open_issues: dict[str, int] = {}
    health = _daemon_health(config)
    store = StateStore.open(layout.database) if layout.database.exists() else None
    try:
        for name in TIER_ORDER:
            settings = config.tiers.get(name)
            if settings is None or not settings.enabled:
                continue
            nxt = next_occurrences(name, settings, now, 1)
            row: dict[str, Any] = {
                "tier": name,
                "next_run": nxt[0].scheduled_for.isoformat() if nxt else "",
                "last_started": "",
                "last_status": "",
                "last_success": "",
            }
            if store is not None:
                started = store.last_started(name)
                row["last_started"] = started.isoformat() if started else ""
                last = store.last_run(name)
                if last is not None:
                    row["last_status"] = _run_state(last, health)
                success = store.last_success(name)
                row["last_success"] = success.isoformat() if success else ""
            tiers.append(row)
        if store is not None:
            for state in store.items("evaluator").values():
                if state.get("open_level"):
                    open_issues[state["issue"]] = open_issues.get(state["issue"], 0) + 1
    finally:
        if store is not None:
            store.close()
    return {"daemon": health, "tiers": tiers, "open_issues": open_issues}
