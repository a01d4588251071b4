"""The state directory's layout, created with private permissions, and path confinement."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.errors import StateError

DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class StateLayout:
    """Where everything lives under one state directory."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "kernelwatch.sqlite3"

    @property
    def telemetry(self) -> Path:
        return self.root / "telemetry"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def active(self) -> Path:
        return self.root / "active"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def create(self) -> None:
        """Create the folders (0700); an existing folder keeps its contents."""
        try:
            for folder in (self.root, self.telemetry, self.checkpoints, self.active, self.reports):
                folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                folder.chmod(DIR_MODE)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.root}: {exc}") from exc


def confined(base: Path, name: str) -> Path:
    """Return ``base / name``, refusing any name that would escape ``base``.

    Names come from users and files (checkpoint ids, report names); a name with a path
    separator, ``..``, or that resolves outside ``base`` through a link is refused.
    """
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name:
        raise StateError(f"refusing unsafe name {name!r} under {base}")
    candidate = (base / name).resolve()
    if candidate.parent != base.resolve():
        raise StateError(f"refusing {name!r}: it resolves outside {base}")
    return candidate
