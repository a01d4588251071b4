"""Tests for the built-in and user recovery procedures, on a real state directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.checkpoints import CheckpointStore
from daemon.clock import FakeClock
from daemon.events import Event
from daemon.procedures import (
    ABORTED_NAMESPACE,
    ActivateGeometricStabilization,
    CommandProcedure,
    EmergencyAbort,
    EnableConservativeMode,
    OptimizeMemoryPatterns,
    Procedure,
    ProcedureContext,
    RevertToStableCheckpoint,
    builtin_procedures,
    leave_conservative_mode,
    resume_kernels,
)
from daemon.profile_store import read_active, write_active
from daemon.recovery_config import CommandProcedureSettings, RecoverySettings
from daemon.store import StateStore
from kernels.profile import canonical_profile


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore.open(tmp_path / "state.sqlite3") as s:
        yield s


def make_ctx(
    tmp_path: Path, store: StateStore, settings: RecoverySettings | None = None, **kw: object
) -> tuple[ProcedureContext, list[Event]]:
    clock = FakeClock(datetime(2026, 1, 4, tzinfo=UTC))
    published: list[Event] = []
    ctx = ProcedureContext(
        state_dir=tmp_path,
        settings=settings or RecoverySettings(),
        clock=clock,
        store=store,
        checkpoints=CheckpointStore(tmp_path / "checkpoints", clock),
        publish=published.append,
        **kw,  # type: ignore[arg-type]
    )
    return ctx, published


def test_builtins_conform_to_the_protocol() -> None:
    """Every built-in is a Procedure named as the policy names it."""
    procs = builtin_procedures()
    assert set(procs) == {
        "revert_to_stable_checkpoint",
        "enable_conservative_mode",
        "activate_geometric_stabilization",
        "optimize_memory_patterns",
        "emergency_abort",
    }
    assert all(isinstance(p, Procedure) for p in procs.values())


def test_revert_restores_the_stable_checkpoint_idempotently(
    tmp_path: Path, store: StateStore
) -> None:
    """Revert makes the stable checkpoint active; a second run changes nothing."""
    ctx, _ = make_ctx(tmp_path, store)
    ctx.checkpoints.create(canonical_profile(), stable=True, reason="t")
    write_active(tmp_path, canonical_profile().replace(quantum_precision="float16"), "drill")
    first = RevertToStableCheckpoint().run(ctx)
    assert (first.ok, first.changed) == (True, True)
    assert read_active(tmp_path) == canonical_profile()
    second = RevertToStableCheckpoint().run(ctx)
    assert (second.ok, second.changed) == (True, False)


def test_revert_without_a_good_checkpoint_fails_and_reports_corrupt(
    tmp_path: Path, store: StateStore
) -> None:
    """With only a corrupt checkpoint, revert fails and publishes CheckpointCorrupt."""
    ctx, published = make_ctx(tmp_path, store)
    m = ctx.checkpoints.create(canonical_profile(), stable=True, reason="t")
    (ctx.checkpoints.path_of(m.id) / "profile.json").write_text("{}")
    outcome = RevertToStableCheckpoint().run(ctx)
    assert not outcome.ok
    assert [e.type_name for e in published] == ["CheckpointCorrupt"]


def test_conservative_mode_is_idempotent_and_reversible(tmp_path: Path, store: StateStore) -> None:
    """Conservative mode remembers the previous mode; leaving it restores that mode."""
    ctx, _ = make_ctx(tmp_path, store)
    write_active(tmp_path, canonical_profile().replace(vectorization="balanced"), "t")
    assert EnableConservativeMode().run(ctx).changed
    assert not EnableConservativeMode().run(ctx).changed
    assert read_active(tmp_path).vectorization == "conservative"
    assert leave_conservative_mode(tmp_path, store) == "balanced"
    assert read_active(tmp_path).vectorization == "balanced"


def test_stabilization_rederives_radii_and_phases_only(tmp_path: Path, store: StateStore) -> None:
    """Radii come back from base radius × ratios, phases canonical, other fields kept."""
    ctx, _ = make_ctx(tmp_path, store)
    canon = canonical_profile()
    drifted = canon.replace(
        radii=(1.0, 1.13625, 1.35, 1.51875),
        phases=(0.0, 0.8, 1.6, 2.4),
        vectorization="balanced",
    )
    write_active(tmp_path, drifted, "drill")
    assert ActivateGeometricStabilization().run(ctx).ok
    active = read_active(tmp_path)
    assert active.radii == pytest.approx(canon.radii, rel=1e-12)
    assert active.phases == canon.phases
    assert active.vectorization == "balanced"


def test_emergency_abort_runs_stop_command_once_and_marks_kernels(
    tmp_path: Path, store: StateStore
) -> None:
    """Abort: forensic checkpoint, stop command (argv, no shell), kernels marked, event."""
    marker = tmp_path / "stopped.txt"
    script = tmp_path / "stop.py"
    script.write_text(f"open({str(marker)!r}, 'a').write('stop\\n')\n")
    settings = replace(RecoverySettings(), stop_command=(sys.executable, str(script)))
    ctx, published = make_ctx(
        tmp_path, store, settings, issue="coherence_loss", labels={"kernel": "quantum"}
    )
    outcome = EmergencyAbort().run(ctx)
    assert outcome.ok
    assert marker.read_text() == "stop\n"
    assert set(store.items(ABORTED_NAMESPACE)) == {"quantum"}
    (event,) = published
    assert event.type_name == "EmergencyAborted"
    assert getattr(event, "stop_command_exit", None) == 0
    (row,) = ctx.checkpoints.entries()
    assert row.manifest is not None
    assert not row.manifest.stable
    assert resume_kernels(store) == ("quantum",)
    assert store.items(ABORTED_NAMESPACE) == {}


def test_stop_command_timeout_is_reported(tmp_path: Path, store: StateStore) -> None:
    """A stop command that hangs is killed at its timeout and the abort says so."""
    settings = replace(
        RecoverySettings(),
        stop_command=(sys.executable, "-c", "import time; time.sleep(30)"),
        stop_timeout_s=0.5,
    )
    ctx, published = make_ctx(tmp_path, store, settings)
    outcome = EmergencyAbort().run(ctx)
    assert not outcome.ok
    assert getattr(published[0], "stop_command_exit", 0) is None
    assert set(store.items(ABORTED_NAMESPACE)) == {"*"}


def test_command_procedure_passes_env_and_reports_exit(tmp_path: Path, store: StateStore) -> None:
    """A command procedure gets its env and the issue; exit 0 is success."""
    ctx, _ = make_ctx(tmp_path, store, issue="cache_miss")
    code = (
        "import os, sys; "
        "sys.exit(0 if os.environ['X'] + os.environ['KERNELWATCH_ISSUE'] == 'ycache_miss' else 3)"
    )
    ok = CommandProcedure(
        "mine", CommandProcedureSettings(command=(sys.executable, "-c", code), env={"X": "y"})
    ).run(ctx)
    assert ok.ok
    bad = CommandProcedure(
        "mine", CommandProcedureSettings(command=(sys.executable, "-c", code), env={"X": "n"})
    ).run(ctx)
    assert not bad.ok


@pytest.mark.slow
def test_optimize_memory_patterns_uses_a_child_and_fixes_cache_settings(
    tmp_path: Path, store: StateStore
) -> None:
    """The MLX work runs in a child; the profile's cache settings are reset."""
    settings = replace(RecoverySettings(), compile_batch_rows=(8,), qfi_cache_size=512)
    ctx, _ = make_ctx(tmp_path, store, settings)
    write_active(tmp_path, canonical_profile().replace(drill={"cache_thrash": True}), "drill")
    outcome = OptimizeMemoryPatterns().run(ctx)
    assert outcome.ok, outcome.detail
    active = read_active(tmp_path)
    assert active.qfi_cache_size == 512
    assert "cache_thrash" not in active.drill


def test_the_daemon_side_never_imports_mlx() -> None:
    """Importing the recovery modules does not import mlx."""
    code = (
        "import sys; import daemon.recovery, daemon.procedures, daemon.drills, "
        "daemon.policy_test, daemon.cli_recovery; sys.exit('mlx' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# Runs one emergency abort in a child, as the daemon's worker would: argv[1] is JSON
# {state_dir, stop_command}. The stop command kills this child: kill -9 mid-procedure.
_ABORT_IN_A_CHILD = """
import json, sys
from datetime import UTC, datetime
from pathlib import Path
from daemon.checkpoints import CheckpointStore
from daemon.clock import FakeClock
from daemon.procedures import EmergencyAbort, ProcedureContext
from daemon.recovery_config import RecoverySettings
from daemon.store import StateStore
args = json.loads(sys.argv[1])
state = Path(args["state_dir"])
clock = FakeClock(datetime(2026, 1, 4, tzinfo=UTC))
store = StateStore.open(state / "state.sqlite3")
ctx = ProcedureContext(
    state_dir=state,
    settings=RecoverySettings(stop_command=tuple(args["stop_command"])),
    clock=clock,
    store=store,
    checkpoints=CheckpointStore(state / "checkpoints", clock),
    publish=lambda e: print(e.type_name, flush=True),
    issue="coherence_loss",
    attempt_id="a1",
)
EmergencyAbort().run(ctx)
"""


def test_emergency_abort_rerun_after_kill_9_does_not_repeat_the_stop_command(
    tmp_path: Path, store: StateStore
) -> None:
    """kill -9 once the stop command ran, then the restart's re-run: the stop command ran
    once, one forensic checkpoint, one EmergencyAborted, and the outcome says why."""
    marker = tmp_path / "stopped.txt"
    stop = tmp_path / "stop.py"
    stop.write_text(
        "import os, signal\n"
        f"open({str(marker)!r}, 'a').write('stop\\n')\n"
        # Only the child's stop command kills its parent; run again here, it must not kill us.
        "if os.environ.get('KW_KILL_PARENT'):\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n"
    )
    argv = [sys.executable, str(stop)]
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _ABORT_IN_A_CHILD,
            json.dumps({"state_dir": str(tmp_path), "stop_command": argv}),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "KW_KILL_PARENT": "1"},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert "EmergencyAborted" not in child.stdout
    settings = replace(RecoverySettings(), stop_command=tuple(argv))
    ctx, published = make_ctx(tmp_path, store, settings, issue="coherence_loss", attempt_id="a1")
    outcome = EmergencyAbort().run(ctx)
    assert marker.read_text() == "stop\n"
    assert [e.type_name for e in published] == ["EmergencyAborted"]
    assert getattr(published[0], "stop_command_exit", 0) is None
    assert not outcome.ok
    assert "not run again" in outcome.detail
    assert len(ctx.checkpoints.entries()) == 1
    assert set(store.items(ABORTED_NAMESPACE)) == {"*"}


def test_emergency_abort_rerun_of_a_finished_abort_repeats_nothing(
    tmp_path: Path, store: StateStore
) -> None:
    """The same attempt run twice (a crash before the engine saw its outcome) stops the
    service once and publishes one EmergencyAborted, and both runs report the same outcome."""
    marker = tmp_path / "stopped.txt"
    script = tmp_path / "stop.py"
    script.write_text(f"open({str(marker)!r}, 'a').write('stop\\n')\n")
    settings = replace(RecoverySettings(), stop_command=(sys.executable, str(script)))
    ctx, published = make_ctx(tmp_path, store, settings, attempt_id="a2")
    first = EmergencyAbort().run(ctx)
    second = EmergencyAbort().run(ctx)
    assert first == second
    assert first.ok
    assert marker.read_text() == "stop\n"
    assert [e.type_name for e in published] == ["EmergencyAborted"]
    assert len(ctx.checkpoints.entries()) == 1
