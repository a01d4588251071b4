"""Tests for the active profile API and its watcher."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.errors import StateError
from daemon.profile_store import ProfileWatcher, read_active, write_active
from kernels.profile import canonical_profile, load_profile, save_profile


def test_read_active_defaults_to_canonical(tmp_path: Path) -> None:
    """With no active profile, readers get the canonical one."""
    assert read_active(tmp_path) == canonical_profile()


def test_write_then_read_round_trips_with_private_modes(tmp_path: Path) -> None:
    """A written profile reads back equal; the folder is 0700 and files 0600."""
    profile = canonical_profile().replace(vectorization="conservative")
    assert write_active(tmp_path, profile, "test") is True
    assert read_active(tmp_path) == profile
    assert load_profile(tmp_path / "active") == profile  # the documented application path
    assert (tmp_path / "active").stat().st_mode & 0o777 == 0o700
    for f in (tmp_path / "active").iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f


def test_write_same_profile_is_a_no_op(tmp_path: Path) -> None:
    """Writing the profile already active changes nothing and says so."""
    write_active(tmp_path, canonical_profile(), "a")
    assert write_active(tmp_path, canonical_profile(), "b") is False


def test_corrupt_active_profile_raises_state_error(tmp_path: Path) -> None:
    """A malformed active profile is an error naming the file, never silently canonical."""
    write_active(tmp_path, canonical_profile(), "a")
    (tmp_path / "active" / "profile.json").write_text("{")
    with pytest.raises(StateError, match=r"profile\.json"):
        read_active(tmp_path)


def test_watcher_reports_each_change_once_with_its_cause(tmp_path: Path) -> None:
    """The watcher reports a change once, attributed to its writer."""
    watcher = ProfileWatcher(tmp_path)
    assert watcher.poll() is None
    write_active(tmp_path, canonical_profile(), "initial")
    change = watcher.poll()
    assert change is not None
    assert (change.previous_id, change.cause) == ("", "initial")
    assert watcher.poll() is None
    drifted = canonical_profile().replace(phases=(0.0, 1.0, 2.0, 3.0))
    write_active(tmp_path, drifted, "drill:phase_shift")
    change = watcher.poll()
    assert change is not None
    assert change.profile_id == drifted.profile_id
    assert change.previous_id == canonical_profile().profile_id
    assert change.cause == "drill:phase_shift"


def test_watcher_attributes_foreign_writes_to_external(tmp_path: Path) -> None:
    """A deployment writing with save_profile directly is seen as an external change."""
    write_active(tmp_path, canonical_profile(), "initial")
    watcher = ProfileWatcher(tmp_path, last_id=canonical_profile().profile_id)
    assert watcher.poll() is None
    save_profile(canonical_profile().replace(amplitude=0.2), tmp_path / "active")
    change = watcher.poll()
    assert change is not None
    assert change.cause == "external"


def test_watcher_ignores_touch_without_content_change(tmp_path: Path) -> None:
    """Touching profile.json without changing the content reports nothing."""
    write_active(tmp_path, canonical_profile(), "initial")
    watcher = ProfileWatcher(tmp_path, last_id=canonical_profile().profile_id)
    assert watcher.poll() is None
    path = tmp_path / "active" / "profile.json"
    os.utime(path, ns=(1, 1))
    assert watcher.poll() is None
