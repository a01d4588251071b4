"""Drills: corrupt the active profile on purpose, for rehearsals and end-to-end tests.

Each fault is a plain parameter change or a knob of the profile's documented ``drill``
mapping that the kernels honour, so the real checks detect it and the real procedures
heal it:

=================== ====================================== =================================
fault               change                                 issue (tier) → procedure
=================== ====================================== =================================
radius_drift        second radius +1 %                     geometric_drift (weekly) →
                                                           activate_geometric_stabilization
phase_shift         third phase +0.01 rad                  same as radius_drift
precision_downgrade ``quantum_precision = "float16"``      coherence_loss (monthly) → revert
memory_bloat        ``drill.batch_scale``, balanced mode   memory_spike (daily) →
                                                           enable_conservative_mode
cache_thrash        ``drill.cache_thrash``                 cache_miss (daily) →
                                                           optimize_memory_patterns
slow_kernel         ``drill.slow_factor = 2``              performance_regression (daily) →
                                                           revert once, then alert only
hang, crash         ``drill.hang``, ``drill.crash``        check_unhealthy → revert
=================== ====================================== =================================

The CLI has no bus: ``inject`` writes the profile with cause ``drill:FAULT`` and a note in
the store (namespace ``drills``); the daemon's profile watcher then publishes
``DrillInjected`` and ``ProfileChanged`` and queues the weekly, monthly and daily tiers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from daemon.clock import Clock, SystemClock
from daemon.errors import RecoveryError
from daemon.profile_store import read_active, write_active
from daemon.recovery_config import DrillSettings
from daemon.state_dir import StateLayout
from daemon.store import StateStore
from kernels.profile import Profile

NAMESPACE: Final = "drills"
MEMORY_BLOAT_SCALE: Final = 8


def _with_drill(profile: Profile, **knobs: object) -> Profile:
    return profile.replace(drill={**profile.drill, **knobs})


def _radius_drift(p: Profile) -> Profile:
    radii = list(p.radii)
    radii[1] *= 1.01
    return p.replace(radii=tuple(radii))


def _phase_shift(p: Profile) -> Profile:
    phases = list(p.phases)
    phases[2] += 0.01
    return p.replace(phases=tuple(phases))


FAULTS: Final[dict[str, Callable[[Profile], Profile]]] = {
    "radius_drift": _radius_drift,
    "phase_shift": _phase_shift,
    "precision_downgrade": lambda p: p.replace(quantum_precision="float16"),
    "memory_bloat": lambda p: _with_drill(p, batch_scale=MEMORY_BLOAT_SCALE).replace(
        vectorization="balanced"
    ),
    "cache_thrash": lambda p: _with_drill(p, cache_thrash=True),
    "slow_kernel": lambda p: _with_drill(p, slow_factor=2.0),
    "hang": lambda p: _with_drill(p, hang=True),
    "crash": lambda p: _with_drill(p, crash=True),
}


def inject(
    state_dir: Path,
    fault: str,
    confirm: bool,
    settings: DrillSettings,
    clock: Clock | None = None,
) -> Profile:
    """Apply ``fault`` to the active profile and return the new profile.

    Raises
    ------
    RecoveryError
        Without ``confirm``, when drills are disabled, or for an unknown fault.
    """
    if not settings.enabled:
        raise RecoveryError("drills are disabled by the configuration ([drills] enabled = false)")
    if fault not in FAULTS:
        raise RecoveryError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})")
    if not confirm:
        raise RecoveryError(f"refusing to inject {fault!r} without --yes: it corrupts the profile")
    state_dir = Path(state_dir)
    layout = StateLayout(state_dir)
    layout.create()
    profile = FAULTS[fault](read_active(state_dir))
    write_active(state_dir, profile, f"drill:{fault}")
    now = (clock or SystemClock()).now()
    with StateStore.open(layout.database) as store:
        store.put_json(
            NAMESPACE,
            now.isoformat(timespec="microseconds"),
            {"fault": fault, "profile_id": profile.profile_id},
        )
    return profile
