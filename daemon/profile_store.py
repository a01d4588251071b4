"""The active kernel profile under ``STATE/active/``: read, replace atomically, watch for changes.

File format (for applications): ``STATE/active/`` is a profile folder as written by
``kernels.profile.save_profile`` — ``profile.json`` (scalars, mode, drill knobs,
``format_version``, ``params_file``, ``params_sha256``) and ``params-<sha12>.npz`` (arrays
``radii``, ``phases``, ``biases``). Applications read it with
``kernels.profile.load_profile(STATE / "active")`` or :func:`read_active`; only
:func:`write_active` (or ``save_profile``) may change it, and the replacement of
``profile.json`` is the commit point, so a reader sees the old profile or the new one.

``cause.json`` beside it says who made the last change (``{"profile_id", "cause"}``); the
daemon's :class:`ProfileWatcher` reports a change whose id does not match it as ``external``
(a person or a deployment). Writers serialise on ``.lock`` (``flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

from daemon.errors import StateError
from daemon.state_dir import StateLayout
from kernels.profile import Profile, ProfileError, canonical_profile, load_profile, save_profile

__all__ = [
    "ProfileChange",
    "ProfileWatcher",
    "active_dir",
    "active_exists",
    "read_active",
    "write_active",
]

_CAUSE: Final = "cause.json"
_LOCK: Final = ".lock"
EXTERNAL: Final = "external"


def active_exists(state_dir: Path) -> bool:
    """True when ``STATE/active/profile.json`` exists."""
    return (StateLayout(Path(state_dir)).active / "profile.json").exists()


def active_dir(state_dir: Path) -> Path | None:
    """The active profile's folder, which checks are given to load it, or None while there
    is none (they then run on the canonical profile)."""
    return StateLayout(Path(state_dir)).active if active_exists(state_dir) else None


def read_active(state_dir: Path) -> Profile:
    """Return the active profile, or the canonical one while none has been written.

    Raises
    ------
    StateError
        The active profile exists but is malformed (the message names file and field).
    """
    folder = StateLayout(Path(state_dir)).active
    if not (folder / "profile.json").exists():
        return canonical_profile()
    try:
        return load_profile(folder)
    except ProfileError as exc:
        raise StateError(f"active profile: {exc}") from exc


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_active(state_dir: Path, profile: Profile, cause: str) -> bool:
    """Replace the active profile atomically; return False when it was already ``profile``.

    ``cause`` (``procedure:NAME``, ``drill:FAULT``, ``checkpoint:ID``, ``initial``) is
    recorded first, so the watcher attributes the change; a crash in between leaves a cause
    that names a profile id that is not active, which the watcher ignores.
    """
    folder = StateLayout(Path(state_dir)).active
    with _locked(folder):
        if (folder / "profile.json").exists():
            with contextlib.suppress(ProfileError):
                if load_profile(folder).profile_id == profile.profile_id:
                    return False
        note = json.dumps({"profile_id": profile.profile_id, "cause": cause}, sort_keys=True)
        _write_small(folder / _CAUSE, note.encode())
        try:
            save_profile(profile, folder)
        except OSError as exc:
            raise StateError(f"{folder}: cannot write the active profile: {exc}") from exc
    return True


def _write_small(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def _read_cause(folder: Path, profile_id: str) -> str:
    try:
        doc = json.loads((folder / _CAUSE).read_text())
    except (OSError, ValueError):
        return EXTERNAL
    if isinstance(doc, dict) and doc.get("profile_id") == profile_id:
        return str(doc.get("cause", EXTERNAL))
    return EXTERNAL


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """The active profile changed from ``previous_id`` to ``profile_id``, by ``cause``."""

    profile_id: str
    previous_id: str
    cause: str


@final
class ProfileWatcher:
    """Notices changes to the active profile by anyone, cheaply: stat first, then the content id.

    ``poll()`` stats ``profile.json`` (mtime_ns, size, inode); only when that changes does it
    load the profile and compare ``profile_id`` with the last one seen, so touching the file
    without changing it reports nothing. ``last_id`` seeds the comparison (the daemon keeps
    it in its store, so a change made while it was down is noticed at start).
    """

    def __init__(self, state_dir: Path, last_id: str = "") -> None:
        self._folder = StateLayout(Path(state_dir)).active
        self._stat: tuple[int, int, int] | None = None
        self.last_id = last_id
        self.error = ""

    def poll(self) -> ProfileChange | None:
        try:
            st = (self._folder / "profile.json").stat()
        except FileNotFoundError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._stat:
            return None
        self._stat = key
        try:
            profile = load_profile(self._folder)
        except ProfileError as exc:
            # Possibly caught mid-replace: look again next poll, and say what is wrong.
            self._stat = None
            self.error = str(exc)
            return None
        self.error = ""
        if profile.profile_id == self.last_id:
            return None
        change = ProfileChange(
            profile.profile_id, self.last_id, _read_cause(self._folder, profile.profile_id)
        )
        self.last_id = profile.profile_id
        return change
