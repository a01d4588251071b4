"""End to end, the daily tier's drills: memory_bloat, cache_thrash and slow_kernel, healed.

A real daemon learns the performance baseline in its first daily run and checkpoints the
healthy profile as stable; ``kernelwatch inject`` then corrupts the profile, the daemon's
profile watcher runs the daily tier at once, and the performance check's measurements
cross the drill's threshold → the mapped procedure → verification (the daily check again)
→ ThresholdCleared → RecoverySucceeded, in the JSONL telemetry and in /metrics.

Each test keeps the default rules of the weekly and monthly tiers and only its drill's
daily rule: the memory_bloat drill's 8× rows and the cache_thrash drill's recompilation
on every call also make the kernel slower, which the performance_regression rule would
repair by a revert of its own; here each drill's own chain is what is tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.checkpoints import CheckpointStore
from daemon.config import load_config
from daemon.profile_store import read_active
from tests.e2e._support import Env, assert_verified, daily_env, in_order, recovery_metric_lines
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start_healthy(env: Env) -> None:
    """Wait for the learned baseline and the healthy profile's stable checkpoint."""
    wait_until(lambda: env.of_type("BaselineRecorded"), timeout=90, what="baseline learned")
    env.wait_stable_checkpoint(timeout=90)


def measured(env: Env, run_id: str, name: str) -> list[float]:
    """The values of measurement ``name`` in the performance check of run ``run_id``."""
    values: list[float] = []
    for record in env.of_type("CheckCompleted"):
        if record["run_id"] == run_id and record["check"] == "performance":
            values += [float(m["value"]) for m in record["measurements"] if m["name"] == name]
    return values


def heal(env: Env, fault: str, issue: str, procedure: str) -> dict[str, Any]:
    """Inject ``fault``, wait for its recovery, assert every step; return the clearing record."""
    done = env.cli("inject", fault, "--yes")
    assert done.returncode == 0, done.stderr
    wait_until(
        lambda: [r for r in env.of_type("RecoverySucceeded") if r["issue"] == issue],
        timeout=120,
        what=f"{fault} recovered",
    )
    records = env.records()
    found = in_order(
        records,
        [
            {"type": "DrillInjected", "fault": fault},
            {"type": "ProfileChanged", "cause": f"drill:{fault}"},
            {"type": "RunStarted", "tier": "daily", "trigger": "profile_change"},
            {"type": "ThresholdCrossed", "issue": issue, "tier": "daily"},
            {"type": "RecoveryStarted", "issue": issue, "procedure": procedure},
            {"type": "ThresholdCleared", "issue": issue, "tier": "daily"},
            {"type": "RecoverySucceeded", "issue": issue, "procedure": procedure},
        ],
    )
    assert_verified(records, issue, procedure)
    metrics = env.metrics()
    assert f'kernelwatch_drills_injected_total{{fault="{fault}"}} 1.0' in metrics
    assert recovery_metric_lines(metrics, procedure, "succeeded"), metrics
    assert not env.of_type("EmergencyAborted")
    return records[found[5]]


def test_memory_bloat_heals_by_conservative_mode(tmp_path: Path) -> None:
    """memory_bloat → memory_spike → enable_conservative_mode; chunks bound the peak again."""
    env = daily_env(tmp_path, "memory_overhead", ["small", "medium", "large"])
    # No return to the previous mode during the test (that is tested by the policy tests).
    with env.daemon(
        run_now=["weekly", "monthly", "daily"],
        policy={"cooldown_s": 0.0},
        recovery={"conservative_healthy_runs": 100},
    ):
        start_healthy(env)
        cleared = heal(env, "memory_bloat", "memory_spike", "enable_conservative_mode")
        crossed = [r for r in env.of_type("ThresholdCrossed") if r["issue"] == "memory_spike"]
        assert max(measured(env, crossed[0]["run_id"], "memory_overhead_ratio")) > 0.45
        # The verification ran with the drill still in the profile: chunking alone healed it.
        after = measured(env, cleared["run_id"], "memory_overhead_ratio")
        assert len(after) == 3
        assert max(after) < 0.45
        profile = read_active(env.state)
        assert profile.vectorization == "conservative"
        assert profile.drill.get("batch_scale") == 8


def test_cache_thrash_heals_by_optimize_memory_patterns(tmp_path: Path) -> None:
    """cache_thrash → cache_miss → optimize_memory_patterns; the knob is gone, hits return."""
    env = daily_env(tmp_path, "cache_efficiency", ["small"])
    with env.daemon(run_now=["weekly", "monthly", "daily"], policy={"cooldown_s": 0.0}):
        start_healthy(env)
        cleared = heal(env, "cache_thrash", "cache_miss", "optimize_memory_patterns")
        assert min(measured(env, cleared["run_id"], "cache_efficiency_ratio")) >= 0.90
        profile = read_active(env.state)
        assert "cache_thrash" not in profile.drill
        assert profile.qfi_cache_size == load_config(None).recovery.qfi_cache_size


def test_slow_kernel_reverts_once_then_alerts_only(tmp_path: Path) -> None:
    """slow_kernel → performance_regression → revert to the stable checkpoint once; a second
    slow_kernel is alerted on, never reverted again nor escalated."""
    env = daily_env(tmp_path, "performance_regression", ["small", "medium"])
    with env.daemon(run_now=["weekly", "monthly", "daily"], policy={"cooldown_s": 0.0}):
        start_healthy(env)
        heal(env, "slow_kernel", "performance_regression", "revert_to_stable_checkpoint")
        store = CheckpointStore(env.state / "checkpoints")
        _manifest, stable, _ = store.newest_good(stable_only=True)
        assert stable is not None
        assert read_active(env.state) == stable
        assert not stable.drill

        assert env.cli("inject", "slow_kernel", "--yes").returncode == 0
        wait_until(
            lambda: [
                r
                for r in env.of_type("RecoverySkipped")
                if r["issue"] == "performance_regression" and r["reason"] == "alert_only"
            ],
            timeout=90,
            what="the second slow_kernel alerted on",
        )
        records = env.records()
    started = [
        r
        for r in records
        if r["type"] == "RecoveryStarted" and r["issue"] == "performance_regression"
    ]
    assert [r["procedure"] for r in started] == ["revert_to_stable_checkpoint"]
    assert len([r for r in records if r["type"] == "DrillInjected"]) == 2
    assert not [r for r in records if r["type"] == "EmergencyAborted"]
    assert read_active(env.state).drill.get("slow_factor") == 2.0
