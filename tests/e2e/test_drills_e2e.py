"""End to end: a real daemon, real child checks, a drill injected through the CLI, healed.

inject → the tier detects it → ThresholdCrossed → the mapped procedure → verification →
ThresholdCleared → RecoverySucceeded, in the JSONL telemetry and in /metrics, and the
active profile ends equal to the newest stable checkpoint. Plus the unrepairable case and
kill -9 between a procedure and its verification. The daily drills (memory_bloat,
cache_thrash, slow_kernel) are in test_daily_drills_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from daemon.checkpoints import CheckpointStore
from daemon.profile_store import read_active
from tests.e2e._support import Env, assert_verified, in_order, recovery_metric_lines
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


DRILLS = {
    # fault: (issue, procedure)
    "radius_drift": ("geometric_drift", "activate_geometric_stabilization"),
    "phase_shift": ("geometric_drift", "activate_geometric_stabilization"),
    "precision_downgrade": ("coherence_loss", "revert_to_stable_checkpoint"),
    "crash": ("check_unhealthy", "revert_to_stable_checkpoint"),
    "hang": ("check_unhealthy", "revert_to_stable_checkpoint"),
}
# How a drill that breaks the check itself is detected, before its threshold is crossed.
DETECTED_BY = {"crash": "CheckCrashed", "hang": "CheckTimedOut"}


@pytest.mark.parametrize("fault", sorted(DRILLS))
def test_drill_is_detected_repaired_and_verified(tmp_path: Path, fault: str) -> None:
    """inject → detect → ThresholdCrossed → procedure → verify → cleared → succeeded."""
    issue, procedure = DRILLS[fault]
    env = Env(tmp_path)
    with env.daemon(run_now=["weekly", "monthly"], policy={"cooldown_s": 0.0}):
        env.wait_stable_checkpoint()
        done = env.cli("inject", fault, "--yes")
        assert done.returncode == 0, done.stderr
        wait_until(lambda: env.of_type("RecoverySucceeded"), timeout=90, what=f"{fault} recovered")
        records = env.records()
        detected = [{"type": DETECTED_BY[fault]}] if fault in DETECTED_BY else []
        in_order(
            records,
            [
                {"type": "DrillInjected", "fault": fault},
                {"type": "ProfileChanged", "cause": f"drill:{fault}"},
                *detected,
                {"type": "ThresholdCrossed", "issue": issue},
                {"type": "RecoveryStarted", "issue": issue, "procedure": procedure},
                {"type": "ThresholdCleared", "issue": issue},
                {"type": "RecoverySucceeded", "issue": issue, "procedure": procedure},
            ],
        )
        assert_verified(records, issue, procedure)
        metrics = env.metrics()
        assert f'kernelwatch_drills_injected_total{{fault="{fault}"}} 1.0' in metrics
        assert recovery_metric_lines(metrics, procedure, "succeeded"), metrics
        store = CheckpointStore(env.state / "checkpoints")

        def settled() -> bool:
            _manifest, profile, _ = store.newest_good(stable_only=True)
            return profile is not None and profile == read_active(env.state)

        # A repaired profile that differs from the old stable one is checkpointed once it
        # passes every tier again; a reverted one is the stable checkpoint already.
        wait_until(settled, timeout=60, what="active profile equal to the stable checkpoint")
        assert not read_active(env.state).drill
    assert not env.of_type("EmergencyAborted")


def test_unrepairable_fault_aborts_exactly_once(tmp_path: Path) -> None:
    """Corrupt stable checkpoint + persisting fault: one EmergencyAborted, one stop command."""
    env = Env(tmp_path)
    marker = tmp_path / "stopped.txt"
    stop = tmp_path / "stop.py"
    stop.write_text(f"open({str(marker)!r}, 'a').write('stopped\\n')\n")
    with env.daemon(
        run_now=["weekly", "monthly"],
        policy={"cooldown_s": 0.0, "max_attempts": 2},
        stop_command=[sys.executable, str(stop)],
    ):
        env.wait_stable_checkpoint()
        for folder in (env.state / "checkpoints").iterdir():
            for npz in folder.glob("params-*.npz"):
                npz.write_bytes(npz.read_bytes()[:-4] + b"XXXX")
        assert env.cli("inject", "precision_downgrade", "--yes").returncode == 0
        wait_until(lambda: env.of_type("EmergencyAborted"), timeout=90, what="abort")
        # More work for the engine: another profile change, more runs, many ticks.
        assert env.cli("inject", "phase_shift", "--yes").returncode == 0
        wait_until(
            lambda: change_runs_completed(env.records(), 3),
            timeout=120,
            what="the runs of the second drill's profile change completed",
        )
        records = env.records()
    aborts = [r for r in records if r["type"] == "EmergencyAborted"]
    assert len(aborts) == 1
    assert aborts[0]["issue"] == "coherence_loss"
    assert aborts[0]["stop_command_exit"] == 0
    assert marker.read_text() == "stopped\n"
    started = [
        r for r in records if r["type"] == "RecoveryStarted" and r["issue"] == "coherence_loss"
    ]
    assert [r["procedure"] for r in started] == [
        "revert_to_stable_checkpoint",
        "revert_to_stable_checkpoint",
        "emergency_abort",
    ]
    assert any(r["type"] == "CheckpointCorrupt" for r in records)
    assert json.loads(env.cli("checkpoint", "list", "--json").stdout)[0]["status"] == "CORRUPT"
    resumed = env.cli("resume")
    assert "quantum" in resumed.stdout


def change_runs_completed(records: list[dict[str, Any]], nth: int) -> bool:
    """The weekly and monthly runs queued by the ``nth`` ProfileChanged have completed (the
    monthly one is where coherence_loss could be raised again)."""
    changes = [i for i, r in enumerate(records) if r["type"] == "ProfileChanged"]
    if len(changes) < nth:
        return False
    end = changes[nth] if len(changes) > nth else len(records)
    queued = {
        r["run_id"]: r["tier"]
        for r in records[changes[nth - 1] : end]
        if r["type"] == "RunScheduled" and r["trigger"] == "profile_change"
    }
    completed = {r["run_id"] for r in records if r["type"] == "RunCompleted"}
    return sorted(queued.values()) == ["monthly", "weekly"] and set(queued) <= completed


def _pending_phase(state: Path) -> str:
    db = state / "kernelwatch.sqlite3"
    if not db.exists():
        return ""
    with closing(sqlite3.connect(db, timeout=5)) as conn:
        rows = conn.execute(
            "SELECT value FROM kv WHERE namespace = 'recovery' AND key LIKE 'pending:%'"
        ).fetchall()
    return ",".join(json.loads(v)["phase"] for (v,) in rows)


def test_kill_9_between_procedure_and_verification(tmp_path: Path) -> None:
    """After kill -9 with a verification pending, a restart counts the attempt once and verifies."""
    # A slow monthly run queued before the verification keeps the window open.
    env = Env(tmp_path, coherence="sizes = [64]\nbatch = 64")
    with env.daemon(run_now=["weekly", "monthly"], policy={"cooldown_s": 0.0}) as proc:
        env.wait_stable_checkpoint()
        assert env.cli("inject", "radius_drift", "--yes").returncode == 0
        wait_until(lambda: _pending_phase(env.state) == "verifying", timeout=60, what="verifying")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert not env.of_type("RecoverySucceeded")
    with env.daemon():
        wait_until(lambda: env.of_type("RecoverySucceeded"), timeout=90, what="verified")
        records = env.records()
    assert len([r for r in records if r["type"] == "RecoveryStarted"]) == 1
    with closing(sqlite3.connect(env.state / "kernelwatch.sqlite3")) as conn:
        (value,) = conn.execute(
            "SELECT value FROM kv WHERE namespace = 'recovery' AND key = 'issue:geometric_drift'"
        ).fetchone()
    assert len(json.loads(value)["attempts"]) == 1
    assert _pending_phase(env.state) == ""
