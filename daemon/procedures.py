"""Recovery procedures: the Procedure protocol, the five built-ins, and user procedures.

Every procedure is idempotent (running it twice leaves the same state as once) and changes
the world only through the active profile, the store and child processes: the daemon never
imports MLX, so MLX work (clearing its buffer cache, pre-compiling shapes) runs in a child
``python -c`` with an argv list. The engine (``daemon.recovery``) emits RecoveryStarted and
RecoverySucceeded/RecoveryFailed around ``run``; a procedure raises ``RecoveryError`` or
returns ``ProcedureOutcome(ok=False)`` to fail.

User procedures come from the entry-point group ``kernelwatch.procedures`` (a class or
factory called with no arguments, giving an object with ``name`` and ``run``) and from
``[recovery.procedures.NAME]`` tables (``command`` argv, ``timeout_s``, ``env``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final, Protocol, final, runtime_checkable

from daemon.checkpoints import CheckpointStore, restore
from daemon.clock import Clock
from daemon.errors import RecoveryError, RegistryError, StateError
from daemon.events import CheckpointCorrupt, EmergencyAborted, Event
from daemon.profile_store import read_active, write_active
from daemon.recovery_config import CommandProcedureSettings, RecoverySettings
from kernels.profile import CANONICAL_RATIOS, Profile, canonical_profile

ENTRY_POINT_GROUP: Final = "kernelwatch.procedures"
NAMESPACE: Final = "recovery"
ABORTED_NAMESPACE: Final = "recovery.aborted"
ABORT_STEPS_NAMESPACE: Final = "recovery.abort"
CONSERVATIVE_KEY: Final = "conservative_mode"
ALL_KERNELS: Final = "*"


class KeyValueStore(Protocol):
    """The part of ``daemon.store.StateStore`` procedures and the engine use."""

    def get_json(self, namespace: str, key: str) -> Any | None: ...

    def put_json(self, namespace: str, key: str, value: Any) -> None: ...

    def delete(self, namespace: str, key: str) -> None: ...

    def items(self, namespace: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcedureContext:
    """What a procedure is given: where state lives, the policy settings, and the issue."""

    state_dir: Path
    settings: RecoverySettings
    clock: Clock
    store: KeyValueStore
    checkpoints: CheckpointStore
    publish: Callable[[Event], object]
    issue: str = "manual"
    labels: Mapping[str, str] = field(default_factory=dict)
    attempt_id: str = ""
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class ProcedureOutcome:
    """The result of one run: ``ok`` and a sentence for people; ``changed`` if the profile moved."""

    ok: bool
    detail: str
    changed: bool = False


@runtime_checkable
class Procedure(Protocol):
    """A repair. The engine calls ``run`` on its worker thread, once per attempt."""

    name: str

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        """Repair, idempotently; return the outcome or raise ``RecoveryError``."""
        ...


def _write(ctx: ProcedureContext, profile: Profile, name: str) -> bool:
    return write_active(ctx.state_dir, profile, f"procedure:{name}")


@final
class RevertToStableCheckpoint:
    """Restore the newest good stable checkpoint; corrupt newer ones are reported and skipped."""

    name = "revert_to_stable_checkpoint"

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        restored, corrupt = restore(ctx.checkpoints, ctx.state_dir)
        for checkpoint_id, error in corrupt:
            ctx.publish(CheckpointCorrupt(checkpoint_id=checkpoint_id, error=error))
        if restored is None:
            return ProcedureOutcome(False, "no good stable checkpoint to revert to")
        verb = "reverted to" if restored.changed else "already at"
        return ProcedureOutcome(True, f"{verb} checkpoint {restored.manifest.id}", restored.changed)


@final
class EnableConservativeMode:
    """Switch to conservative (chunked) vectorization, remembering the mode to return to.

    The engine counts healthy daily runs and calls :func:`leave_conservative_mode` after
    ``recovery.conservative_healthy_runs`` of them (``ModeRestored``).
    """

    name = "enable_conservative_mode"

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        profile = read_active(ctx.state_dir)
        if profile.vectorization == "conservative":
            return ProcedureOutcome(True, "already in conservative mode")
        ctx.store.put_json(
            NAMESPACE,
            CONSERVATIVE_KEY,
            {"previous_mode": profile.vectorization, "healthy_runs": 0},
        )
        changed = _write(ctx, profile.replace(vectorization="conservative"), self.name)
        return ProcedureOutcome(True, f"conservative mode (was {profile.vectorization})", changed)


def leave_conservative_mode(state_dir: Path, store: KeyValueStore) -> str | None:
    """Return to the mode saved by EnableConservativeMode; returns that mode, or None."""
    saved = store.get_json(NAMESPACE, CONSERVATIVE_KEY)
    if not isinstance(saved, dict):
        return None
    mode = str(saved.get("previous_mode", "aggressive"))
    profile = read_active(state_dir)
    if profile.vectorization == "conservative":
        write_active(state_dir, profile.replace(vectorization=mode), "mode_restored")
    store.delete(NAMESPACE, CONSERVATIVE_KEY)
    return mode


def stabilized(profile: Profile) -> Profile:
    """Quarter radii re-derived from the fixed canonical ratios (KERNELS.md, never the
    profile's) and the base radius, canonical phases."""
    radii = [profile.base_radius]
    for ratio in CANONICAL_RATIOS:
        radii.append(radii[-1] * ratio)
    return profile.replace(radii=tuple(radii), phases=canonical_profile().phases)


@final
class ActivateGeometricStabilization:
    """Re-derive the radii from the canonical ratios and restore canonical phases, keeping
    everything else of the profile."""

    name = "activate_geometric_stabilization"

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        profile = read_active(ctx.state_dir)
        target = stabilized(profile)
        drift = max(abs(a - b) for a, b in zip(profile.radii, target.radii, strict=True))
        changed = _write(ctx, target, self.name)
        return ProcedureOutcome(
            True, f"radii and phases re-derived (max radius Δ {drift:.3g})", changed
        )


# Runs in a child: the daemon never imports MLX. argv[1] is JSON {profile_dir, rows}.
_MEMORY_SCRIPT: Final = """
import json, sys
args = json.loads(sys.argv[1])
import numpy as np
import mlx.core as mx
from kernels import octahedron
from kernels.profile import canonical_profile, load_profile
mx.clear_cache()
profile = load_profile(args["profile_dir"]) if args["profile_dir"] else canonical_profile()
profile = profile.replace(drill={})
rng = np.random.default_rng(0)
for rows in args["rows"]:
    octahedron.activate_mlx(octahedron.make_inputs(rng, rows, profile, features=64), profile)
mx.clear_cache()
print(json.dumps({"cleared": True, "compiled": args["rows"]}))
"""


@final
class OptimizeMemoryPatterns:
    """Clear MLX's buffer cache and pre-compile the configured batch shapes (in a child), and
    set the cache configuration of the profile: ``qfi_cache_size`` to the configured size and
    the ``cache_thrash`` drill knob removed (the fault it models is a cache that defeats
    caching)."""

    name = "optimize_memory_patterns"

    def __init__(self, python: str = sys.executable) -> None:
        self._python = python

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        profile = read_active(ctx.state_dir)
        drill = {k: v for k, v in profile.drill.items() if k != "cache_thrash"}
        target = profile.replace(qfi_cache_size=ctx.settings.qfi_cache_size, drill=drill)
        changed = _write(ctx, target, self.name)
        active = ctx.state_dir / "active"
        args = {
            "profile_dir": str(active) if (active / "profile.json").exists() else "",
            "rows": list(ctx.settings.compile_batch_rows),
        }
        argv = [self._python, "-c", _MEMORY_SCRIPT, json.dumps(args)]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=ctx.settings.procedure_timeout_s,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return ProcedureOutcome(False, "cache clearing child timed out", changed)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            return ProcedureOutcome(False, f"cache clearing child failed: {tail[0]}", changed)
        return ProcedureOutcome(
            True,
            f"MLX cache cleared, shapes pre-compiled, qfi_cache_size={target.qfi_cache_size}",
            changed,
        )


def run_command(
    argv: tuple[str, ...], timeout_s: float, env: Mapping[str, str] | None = None
) -> int | None:
    """Run ``argv`` (no shell) with a timeout; return its exit code, or None if it timed out.

    The child inherits the daemon's environment plus ``env``: a stop command needs PATH.
    """
    child_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(
            list(argv),
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    except OSError as exc:
        raise RecoveryError(f"cannot run {argv[0]!r}: {exc}") from exc
    return done.returncode


def aborted_kernels(store: KeyValueStore) -> dict[str, Any]:
    """Kernels marked aborted (``*`` means all), with why and when."""
    return store.items(ABORTED_NAMESPACE)


def resume_kernels(store: KeyValueStore, kernels: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Unmark ``kernels`` (all when empty); return the ones that were aborted."""
    marked = aborted_kernels(store)
    chosen = tuple(k for k in marked if not kernels or k in kernels)
    for kernel in chosen:
        store.delete(ABORTED_NAMESPACE, kernel)
    return chosen


@final
class EmergencyAbort:
    """Forensic checkpoint, the dependent service's stop command, kernels marked aborted, and
    ``EmergencyAborted`` (which pages through Alertmanager).

    Idempotent across a crash: each step is recorded in the store under the attempt id
    (namespace ``recovery.abort``), and a re-run after a restart skips what was done. The
    stop command is recorded as started before it runs; one that was started but never
    reported (the daemon died meanwhile) is not run again, and the abort reports its exit
    as unknown (None) and fails, so a person checks the service.
    """

    name = "emergency_abort"

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        steps = _AbortSteps(ctx)
        if "checkpoint_id" not in steps.done:
            steps.mark(checkpoint_id=self._forensic(ctx))
        checkpoint_id = str(steps.done["checkpoint_id"])
        exit_code: int | None = None
        interrupted = False
        if ctx.settings.stop_command:
            stop = steps.done.get("stop")
            if stop is None:
                steps.mark(stop="started")
                exit_code = run_command(ctx.settings.stop_command, ctx.settings.stop_timeout_s)
                steps.mark(stop="done", stop_exit=exit_code)
            else:
                exit_code = steps.done.get("stop_exit")
                interrupted = stop != "done"
        kernel = ctx.labels.get("kernel")
        kernels = (kernel,) if kernel else (ALL_KERNELS,)
        for name in kernels:
            ctx.store.put_json(
                ABORTED_NAMESPACE,
                name,
                {"issue": ctx.issue, "at": ctx.clock.now().isoformat(), "attempt": ctx.attempt_id},
            )
        if not steps.done.get("published"):
            ctx.publish(
                EmergencyAborted(
                    issue=ctx.issue,
                    kernels=kernels,
                    checkpoint_id=checkpoint_id,
                    stop_command_exit=exit_code,
                )
            )
            steps.mark(published=True)
        ok = not ctx.settings.stop_command or exit_code == 0
        stop_said = (
            "stop command interrupted by a restart, not run again: check the service"
            if interrupted
            else f"stop command exit {exit_code}"
        )
        return ProcedureOutcome(ok, f"kernels {', '.join(kernels)} aborted; {stop_said}")

    @staticmethod
    def _forensic(ctx: ProcedureContext) -> str:
        """The forensic checkpoint of this attempt: the one a crashed run made, or a new one."""
        reason = f"forensic:{ctx.issue}" + (f":{ctx.attempt_id}" if ctx.attempt_id else "")
        try:
            if ctx.attempt_id:
                for row in ctx.checkpoints.entries():
                    if row.manifest is not None and row.manifest.reason == reason:
                        return row.id
            manifest = ctx.checkpoints.create(
                read_active(ctx.state_dir),
                stable=False,
                reason=reason,
                fingerprint=ctx.fingerprint,
            )
        except (StateError, OSError) as exc:
            # Forensics are best effort: the abort itself must still happen.
            return f"failed: {exc}"
        return manifest.id


@final
class _AbortSteps:
    """The steps of one emergency abort already done, kept in the store by attempt id."""

    def __init__(self, ctx: ProcedureContext) -> None:
        self._ctx = ctx
        key = ctx.attempt_id
        saved = ctx.store.get_json(ABORT_STEPS_NAMESPACE, key) if key else None
        self.done: dict[str, Any] = dict(saved) if isinstance(saved, dict) else {}

    def mark(self, **steps: Any) -> None:
        self.done.update(steps)
        if self._ctx.attempt_id:  # without an id (a bare call) there is no re-run to guard
            self._ctx.store.put_json(ABORT_STEPS_NAMESPACE, self._ctx.attempt_id, self.done)


@final
class CommandProcedure:
    """A user procedure that runs a program; exit 0 is success."""

    def __init__(self, name: str, settings: CommandProcedureSettings) -> None:
        self.name = name
        self._settings = settings

    def run(self, ctx: ProcedureContext) -> ProcedureOutcome:
        env = {
            **self._settings.env,
            "KERNELWATCH_STATE_DIR": str(ctx.state_dir),
            "KERNELWATCH_ISSUE": ctx.issue,
        }
        code = run_command(self._settings.command, self._settings.timeout_s, env)
        if code is None:
            return ProcedureOutcome(False, f"timed out after {self._settings.timeout_s:g} s")
        return ProcedureOutcome(code == 0, f"exit {code}")


def builtin_procedures() -> dict[str, Procedure]:
    procs: list[Procedure] = [
        RevertToStableCheckpoint(),
        EnableConservativeMode(),
        ActivateGeometricStabilization(),
        OptimizeMemoryPatterns(),
        EmergencyAbort(),
    ]
    return {p.name: p for p in procs}


def load_procedures(settings: RecoverySettings) -> dict[str, Procedure]:
    """Built-ins, then entry points, then command procedures (later names may not shadow)."""
    procs = builtin_procedures()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            factory = ep.load()
            proc = factory()
        except Exception as exc:  # a broken plugin must name itself, not stop the daemon
            raise RegistryError(f"procedure entry point {ep.name!r}: {exc!r}") from exc
        if not isinstance(proc, Procedure):
            raise RegistryError(f"procedure entry point {ep.name!r} has no name/run")
        _add(procs, proc.name, proc)
    for name, cmd in settings.procedures.items():
        _add(procs, name, CommandProcedure(name, cmd))
    return procs


def _add(procs: dict[str, Procedure], name: str, proc: Procedure) -> None:
    if name in procs:
        raise RegistryError(f"procedure {name!r} is defined twice")
    procs[name] = proc


def margin(value: float, threshold: float, direction: str) -> float:
    """Relative distance of ``value`` to ``threshold`` on the healthy side (negative = breach)."""
    if not math.isfinite(value):
        return -math.inf
    scale = abs(threshold) or 1.0
    return (threshold - value) / scale if direction == "above" else (value - threshold) / scale
