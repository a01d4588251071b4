"""Tests for drills: each fault changes the profile as documented, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.drills import FAULTS, inject
from daemon.errors import RecoveryError
from daemon.procedures import stabilized
from daemon.profile_store import ProfileWatcher, read_active
from daemon.recovery_config import DrillSettings
from daemon.store import StateStore
from kernels.profile import canonical_profile


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_changes_the_active_profile(tmp_path: Path, fault: str) -> None:
    """Every fault yields a different, valid profile, attributed to the drill."""
    watcher = ProfileWatcher(tmp_path, last_id=canonical_profile().profile_id)
    profile = inject(tmp_path, fault, True, DrillSettings())
    assert profile != canonical_profile()
    assert read_active(tmp_path) == profile
    change = watcher.poll()
    assert change is not None
    assert change.cause == f"drill:{fault}"
    with StateStore.open(tmp_path / "kernelwatch.sqlite3") as store:
        (note,) = store.items("drills").values()
    assert note["fault"] == fault


def test_radius_drift_is_one_percent_and_stabilization_heals_it(tmp_path: Path) -> None:
    """The second radius grows by 1 %; re-deriving radii restores the canonical profile."""
    profile = inject(tmp_path, "radius_drift", True, DrillSettings())
    assert profile.radii[1] == pytest.approx(canonical_profile().radii[1] * 1.01)
    healed = stabilized(profile)
    assert healed.radii == pytest.approx(canonical_profile().radii, rel=1e-12)
    assert healed.replace(radii=canonical_profile().radii) == canonical_profile()


def test_refused_without_confirmation(tmp_path: Path) -> None:
    """No --yes, no drill, and the profile is untouched."""
    with pytest.raises(RecoveryError, match="--yes"):
        inject(tmp_path, "crash", False, DrillSettings())
    assert not (tmp_path / "active" / "profile.json").exists()


def test_refused_when_disabled(tmp_path: Path) -> None:
    """A config that disables drills refuses them."""
    with pytest.raises(RecoveryError, match="disabled"):
        inject(tmp_path, "crash", True, DrillSettings(enabled=False))


def test_unknown_fault(tmp_path: Path) -> None:
    """An unknown fault names the known ones."""
    with pytest.raises(RecoveryError, match="radius_drift"):
        inject(tmp_path, "meteor", True, DrillSettings())


def test_the_check_command_runs_on_the_active_profile(tmp_path: Path) -> None:
    """``kernelwatch check`` judges the profile the daemon runs, as ``baseline record``
    does, not the canonical one: after a radius drift drill the geometry check is critical,
    and labels its measurements with the drilled profile's id."""
    from checks.api import Status
    from daemon.config import load_config
    from daemon.oneshot import run_once

    config = load_config()
    status, _ = run_once(config, tmp_path / "fresh", "geometry")
    assert status == Status.OK
    drilled = inject(tmp_path / "drilled", "radius_drift", True, DrillSettings())
    status, payload = run_once(config, tmp_path / "drilled", "geometry")
    assert status == Status.CRITICAL
    (check,) = payload["checks"]
    assert [b.split("=")[0] for b in check["breaches"]] == ["geometric_ratio_drift"]
    assert {
        m["labels"]["profile_id"] for m in check["measurements"] if "profile_id" in m["labels"]
    } == {drilled.profile_id}
