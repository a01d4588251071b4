"""End to end: a real daemon, real child checks, a drill injected through the CLI, healed.

inject → the tier detects it → ThresholdCrossed → the mapped procedure → verification →
ThresholdCleared → RecoverySucceeded, in the JSONL telemetry and in /metrics, and the
active profile ends equal to the newest stable checkpoint. Plus the unrepairable case and
kill -9 between a procedure and its verification. The daily drills (memory_bloat,
cache_thrash, slow_kernel) need a learned performance baseline and are not covered here.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from daemon.checkpoints import CheckpointStore
from daemon.config import load_config
from daemon.profile_store import read_active
from tests.helpers import ROOT, free_port, http_get, telemetry_records, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rules_toml(unhealthy_after: int = 1) -> str:
    """The default rules, with check_unhealthy raised after ``unhealthy_after`` failures."""
    out = []
    for r in load_config(None).rules:
        lines = [
            "[[rules]]",
            f'name = "{r.name}"',
            f'measurement = "{r.measurement}"',
            f'issue = "{r.issue}"',
            f'direction = "{r.direction}"',
        ]
        if r.warn is not None:
            lines.append(f"warn = {r.warn!r}")
        if r.crit is not None:
            lines.append(f"crit = {r.crit!r}")
        if r.labels:
            lines.append(
                "labels = {" + ", ".join(f'{k} = "{v}"' for k, v in r.labels.items()) + "}"
            )
        raise_after = unhealthy_after if r.name == "check_unhealthy" else r.raise_after
        lines += [f"raise_after = {raise_after}", f"clear_after = {r.clear_after}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _config(port: int, coherence: str = "sizes = [16]\nbatch = 4") -> str:
    return f"""
[daemon]
tick_s = 0.2
shutdown_grace_s = 5.0
[http]
port = {port}
[telemetry]
flush_every_records = 1
flush_every_s = 0.1
[tiers.daily]
enabled = false
[tiers.quarterly]
enabled = false
[tiers.weekly]
cron = "0 0 1 1 *"
catch_up_grace_s = 0.0
checks = ["geometry"]
[tiers.monthly]
cron = "0 0 1 1 *"
catch_up_grace_s = 0.0
checks = ["coherence"]
[checks.geometry]
timeout_s = 5.0
[checks.geometry.options]
rounds = 2
kernels = ["octahedron"]
[checks.coherence]
timeout_s = 60.0
[checks.coherence.options]
{coherence}
kernels = ["quantum"]

{_rules_toml()}"""


class Env:
    """A state dir, a config and a port for one daemon."""

    def __init__(self, tmp_path: Path, coherence: str = "sizes = [16]\nbatch = 4") -> None:
        self.state = tmp_path / "state"
        self.port = free_port()
        self.config = tmp_path / "config.toml"
        self.config.write_text(_config(self.port, coherence))
        self.log = tmp_path / "daemon.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "daemon.cli", *args]
        argv += ["--state-dir", str(self.state), "--config", str(self.config)]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)

    def records(self) -> list[dict[str, Any]]:
        return telemetry_records(self.state)

    def of_type(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["type"] == name]

    @contextmanager
    def daemon(
        self,
        *,
        run_now: tuple[str, ...] | list[str] = (),
        policy: dict[str, Any] | None = None,
        stop_command: list[str] | None = None,
    ) -> Iterator[subprocess.Popen[bytes]]:
        """Start `kernelwatch run` with a `[recovery]` table setting the given overrides."""
        recovery = "\n[recovery]\nstop_timeout_s = 10.0\n"
        if stop_command is not None:
            recovery += f"stop_command = {json.dumps(stop_command)}\n"
        for issue in load_config().recovery.policy:
            recovery += f"[recovery.policy.{issue}]\n"
            recovery += "".join(f"{k} = {json.dumps(v)}\n" for k, v in (policy or {}).items())
        config = self.config.with_name("config-run.toml")
        config.write_text(self.config.read_text() + recovery)
        argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)]
        argv += ["--state-dir", str(self.state)]
        for tier in run_now:
            argv += ["--run-now", tier]
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)

    def wait_stable_checkpoint(self) -> None:
        wait_until(lambda: self.of_type("CheckpointCreated"), timeout=60, what="first checkpoint")

    def metrics(self) -> str:
        status, body = http_get(f"http://127.0.0.1:{self.port}/metrics")
        assert status == 200
        return body.decode()


def _in_order(records: list[dict[str, Any]], steps: list[dict[str, Any]]) -> list[int]:
    """Indices of records matching each step (all of its fields), each after the previous."""
    found: list[int] = []
    start = 0
    for step in steps:
        for i in range(start, len(records)):
            if all(records[i].get(k) == v for k, v in step.items()):
                found.append(i)
                start = i + 1
                break
        else:
            raise AssertionError(f"no {step} after record {start}: {records[start:][:40]}")
    return found


DRILLS = {
    # fault: (issue, procedure)
    "radius_drift": ("geometric_drift", "activate_geometric_stabilization"),
    "phase_shift": ("geometric_drift", "activate_geometric_stabilization"),
    "precision_downgrade": ("coherence_loss", "revert_to_stable_checkpoint"),
    "crash": ("check_unhealthy", "revert_to_stable_checkpoint"),
    "hang": ("check_unhealthy", "revert_to_stable_checkpoint"),
}


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
        _in_order(
            records,
            [
                {"type": "DrillInjected", "fault": fault},
                {"type": "ProfileChanged", "cause": f"drill:{fault}"},
                {"type": "ThresholdCrossed", "issue": issue},
                {"type": "RecoveryStarted", "issue": issue, "procedure": procedure},
                {"type": "ThresholdCleared", "issue": issue},
                {"type": "RecoverySucceeded", "issue": issue, "procedure": procedure},
            ],
        )
        metrics = env.metrics()
        assert f'kernelwatch_drills_injected_total{{fault="{fault}"}} 1.0' in metrics
        succeeded = [
            line
            for line in metrics.splitlines()
            if line.startswith("kernelwatch_recovery_actions_total{")
            and 'outcome="succeeded"' in line
            and f'procedure="{procedure}"' in line
        ]
        assert succeeded, metrics
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
    extra = {
        "run_now": ["weekly", "monthly"],
        "policy": {"cooldown_s": 0.0, "max_attempts": 2},
        "stop_command": [sys.executable, str(stop)],
    }
    with env.daemon(**extra):
        env.wait_stable_checkpoint()
        for folder in (env.state / "checkpoints").iterdir():
            for npz in folder.glob("params-*.npz"):
                npz.write_bytes(npz.read_bytes()[:-4] + b"XXXX")
        assert env.cli("inject", "precision_downgrade", "--yes").returncode == 0
        wait_until(lambda: env.of_type("EmergencyAborted"), timeout=90, what="abort")
        # More work for the engine: another profile change, more runs, many ticks.
        assert env.cli("inject", "phase_shift", "--yes").returncode == 0
        wait_until(
            lambda: len(env.of_type("ProfileChanged")) >= 3, timeout=30, what="second drill seen"
        )
        time.sleep(5)
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
