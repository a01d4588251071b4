"""Checkpoints of the active profile under ``STATE/checkpoints/<id>/``, verified by sha256.

A checkpoint folder holds the profile files (``profile.json`` + ``params-*.npz``, as
``kernels.profile.save_profile`` writes them) and ``manifest.json``: id, created (UTC),
the profile as a dict and its id, the environment fingerprint, the tiers passed, whether it
is *stable*, the health score (smallest relative margin to any threshold; higher is
better) and the sha256 of every other file. Creation is atomic: everything is written into
``checkpoints/.tmp-*``, fsynced, and the folder renamed into place. Ids are checked by
pattern and by ``state_dir.confined``, so no id can name a path outside the folder.
Folders are 0700, files 0600. A checkpoint whose files do not match their sha256 is
*corrupt*: it is reported and skipped, and restore falls back to the previous good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, final

from daemon.clock import Clock, SystemClock, ensure_utc
from daemon.errors import CorruptStateError, StateError
from daemon.state_dir import confined
from kernels.profile import Profile, ProfileError, load_profile, profile_to_dict, save_profile

MANIFEST: Final = "manifest.json"
MANIFEST_VERSION: Final = 1
_ID = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{12}(-[0-9]+)?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What ``manifest.json`` says about one checkpoint."""

    id: str
    created: str
    profile: Mapping[str, Any]
    profile_id: str
    fingerprint: str
    tiers_passed: tuple[str, ...]
    stable: bool
    score: float | None
    reason: str
    files: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "id": self.id,
            "created": self.created,
            "profile": dict(self.profile),
            "profile_id": self.profile_id,
            "fingerprint": self.fingerprint,
            "tiers_passed": list(self.tiers_passed),
            "stable": self.stable,
            "score": self.score,
            "reason": self.reason,
            "files": dict(self.files),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> Manifest:
        try:
            if doc["manifest_version"] != MANIFEST_VERSION:
                raise CorruptStateError(f"{where}: unsupported manifest_version")
            score = doc["score"]
            return cls(
                id=str(doc["id"]),
                created=str(doc["created"]),
                profile=dict(doc["profile"]),
                profile_id=str(doc["profile_id"]),
                fingerprint=str(doc["fingerprint"]),
                tiers_passed=tuple(str(t) for t in doc["tiers_passed"]),
                stable=bool(doc["stable"]),
                score=None if score is None else float(score),
                reason=str(doc["reason"]),
                files={str(k): str(v) for k, v in dict(doc["files"]).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptStateError(f"{where}: malformed manifest: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Listed:
    """One row of ``list()``: a verified manifest, or the error that makes it corrupt."""

    id: str
    manifest: Manifest | None
    error: str = ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@final
class CheckpointStore:
    """Create, list, verify, restore and prune checkpoints in one folder."""

    def __init__(self, root: Path, clock: Clock | None = None) -> None:
        self.root = Path(root)
        self._clock = clock or SystemClock()

    def _ensure_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)

    def path_of(self, checkpoint_id: str) -> Path:
        """The folder of ``checkpoint_id``; refuses anything that is not a plain checkpoint id."""
        if not _ID.match(checkpoint_id):
            raise StateError(f"refusing checkpoint id {checkpoint_id!r}: not a checkpoint id")
        return confined(self.root, checkpoint_id)

    # --- create ------------------------------------------------------------------------

    def create(
        self,
        profile: Profile,
        *,
        stable: bool,
        reason: str,
        tiers_passed: Sequence[str] = (),
        score: float | None = None,
        fingerprint: str = "",
        created: datetime | None = None,
    ) -> Manifest:
        """Write a checkpoint of ``profile`` atomically and return its manifest."""
        self._ensure_root()
        when = ensure_utc(created or self._clock.now())
        base = f"{when:%Y%m%dT%H%M%S%f}Z-{profile.profile_id}"
        checkpoint_id, n = base, 1
        while (self.root / checkpoint_id).exists():
            checkpoint_id, n = f"{base}-{n}", n + 1
        final_path = self.path_of(checkpoint_id)
        tmp = self.root / f".tmp-{secrets.token_hex(6)}"
        tmp.mkdir(mode=0o700)
        try:
            save_profile(profile, tmp)  # 0600 files, fsynced
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            manifest = Manifest(
                id=checkpoint_id,
                created=when.isoformat(),
                profile=profile_to_dict(profile),
                profile_id=profile.profile_id,
                fingerprint=fingerprint,
                tiers_passed=tuple(tiers_passed),
                stable=stable,
                score=score,
                reason=reason,
                files=files,
            )
            text = json.dumps(manifest.to_json(), sort_keys=True, indent=2) + "\n"
            fd = os.open(tmp / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(tmp)
            tmp.rename(final_path)  # the commit point
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        return manifest

    # --- read --------------------------------------------------------------------------

    def verify(self, checkpoint_id: str) -> Manifest:
        """Return the manifest after checking every file's sha256; raise ``CorruptStateError``."""
        folder = self.path_of(checkpoint_id)
        where = str(folder / MANIFEST)
        try:
            doc = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            raise StateError(f"no checkpoint {checkpoint_id!r}") from None
        except (OSError, ValueError) as exc:
            raise CorruptStateError(f"{where}: unreadable manifest: {exc}") from exc
        if not isinstance(doc, dict):
            raise CorruptStateError(f"{where}: manifest must be an object")
        manifest = Manifest.from_json(doc, where)
        if manifest.id != checkpoint_id:
            raise CorruptStateError(f"{where}: id {manifest.id!r} does not match its folder")
        present = {p.name for p in folder.iterdir() if p.name != MANIFEST}
        if present != set(manifest.files):
            raise CorruptStateError(
                f"{folder}: files {sorted(present)} differ from the manifest's "
                f"{sorted(manifest.files)}"
            )
        for name, digest in manifest.files.items():
            path = confined(folder, name)
            if _sha256(path) != digest:
                raise CorruptStateError(f"{path}: sha256 does not match the manifest")
        return manifest

    def load(self, checkpoint_id: str) -> Profile:
        """The verified profile of a checkpoint."""
        self.verify(checkpoint_id)
        try:
            return load_profile(self.path_of(checkpoint_id))
        except ProfileError as exc:
            raise CorruptStateError(f"checkpoint {checkpoint_id}: {exc}") from exc

    def ids(self) -> list[str]:
        """Every checkpoint id, oldest first (ids sort by creation time)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _ID.match(p.name))

    def entries(self) -> list[Listed]:
        """Every checkpoint, oldest first, verified; corrupt ones carry their error."""
        rows: list[Listed] = []
        for checkpoint_id in self.ids():
            try:
                rows.append(Listed(checkpoint_id, self.verify(checkpoint_id)))
            except StateError as exc:
                rows.append(Listed(checkpoint_id, None, str(exc)))
        return rows

    def newest_good(
        self, *, stable_only: bool = True, before: str | None = None
    ) -> tuple[Manifest | None, Profile | None, list[tuple[str, str]]]:
        """The newest verified checkpoint (optionally older than ``before``) and its profile.

        Returns ``(manifest, profile, corrupt)`` where ``corrupt`` lists ``(id, error)`` of
        the newer checkpoints skipped because they failed verification.
        """
        corrupt: list[tuple[str, str]] = []
        for checkpoint_id in reversed(self.ids()):
            if before is not None and checkpoint_id >= before:
                continue
            try:
                manifest = self.verify(checkpoint_id)
                if stable_only and not manifest.stable:
                    continue
                return manifest, self.load(checkpoint_id), corrupt
            except StateError as exc:
                corrupt.append((checkpoint_id, str(exc)))
        return None, None, corrupt

    def resolve_for_restore(
        self, checkpoint_id: str | None
    ) -> tuple[Manifest | None, Profile | None, list[tuple[str, str]]]:
        """The checkpoint to restore: ``checkpoint_id`` if good, else the previous good stable
        one; with no id, the newest good stable one."""
        if checkpoint_id is None:
            return self.newest_good(stable_only=True)
        try:
            return self.verify(checkpoint_id), self.load(checkpoint_id), []
        except CorruptStateError as exc:
            manifest, profile, corrupt = self.newest_good(stable_only=True, before=checkpoint_id)
            return manifest, profile, [(checkpoint_id, str(exc)), *corrupt]

    # --- prune -------------------------------------------------------------------------

    def prune(
        self, *, keep_stable: int, keep_best: int, include_unstable: bool = False
    ) -> list[str]:
        """Remove stable checkpoints outside the newest ``keep_stable`` and the best
        ``keep_best`` by score. Non-stable ones (forensic, manual) are evidence: they go only
        when a person asks (``include_unstable``, and then only outside the best by score);
        corrupt ones are always kept for a person to look at. Returns the ids removed."""
        good = [row.manifest for row in self.entries() if row.manifest is not None]
        stable = [m for m in good if m.stable]
        keep = {m.id for m in stable[-keep_stable:]} if keep_stable > 0 else set()
        scored = sorted(
            (m for m in good if m.score is not None),
            key=lambda m: (m.score if m.score is not None else 0.0, m.id),
            reverse=True,
        )
        keep |= {m.id for m in scored[:keep_best]}
        if not include_unstable:
            keep |= {m.id for m in good if not m.stable}
        removed: list[str] = []
        for manifest in good:
            if manifest.id in keep:
                continue
            folder = self.path_of(manifest.id)
            # Rename out of the listing first, so a crash never leaves a half-deleted checkpoint.
            trash = self.root / f".del-{secrets.token_hex(6)}"
            folder.rename(trash)
            with contextlib.suppress(OSError):
                shutil.rmtree(trash)
            removed.append(manifest.id)
        return removed


@dataclass(frozen=True, slots=True)
class Restored:
    """What ``restore`` did: the checkpoint used, whether the active profile changed, and the
    corrupt checkpoints it skipped."""

    manifest: Manifest
    changed: bool
    corrupt: tuple[tuple[str, str], ...]


def restore(
    store: CheckpointStore, state_dir: Path, checkpoint_id: str | None = None
) -> tuple[Restored | None, list[tuple[str, str]]]:
    """Make a checkpoint's profile the active one (see ``resolve_for_restore`` for fallback).

    Returns ``(None, corrupt)`` when no good checkpoint exists.
    """
    from daemon.profile_store import write_active  # one-way: profile_store never imports us

    manifest, profile, corrupt = store.resolve_for_restore(checkpoint_id)
    if manifest is None or profile is None:
        return None, corrupt
    changed = write_active(state_dir, profile, f"checkpoint:{manifest.id}")
    return Restored(manifest, changed, tuple(corrupt)), corrupt
