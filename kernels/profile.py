"""The kernel profile: parameters and execution mode the kernels run with, saved atomically.

A :class:`Profile` is immutable and validated when built. On disk it is a folder
holding ``profile.json`` (scalars, mode, drill knobs, format version, and the
name and sha256 of the parameter file) and ``params-<sha12>.npz`` (the arrays
``radii``, ``phases`` and ``biases``), never a pickle. Writes are atomic: the
content-addressed ``.npz`` is written first, then ``profile.json`` is replaced
in one ``os.replace`` (the commit point), then stale ``params-*.npz`` files are
removed, so a reader sees either the old profile or the new one.

The ``drill`` mapping holds fault-injection knobs that the kernels honour, for
testing the daemon's detection and recovery:

``slow_factor`` (whole number ≥ 1, stored as a float)
    The kernel repeats its computation ``slow_factor`` times; 1.3 is refused (a kernel
    repeats whole passes, so it could not honour the fraction).
``hang`` (bool)
    The kernel blocks forever.
``crash`` (bool)
    The kernel calls ``os.abort()``.
``cache_thrash`` (bool)
    Every call misses the compiled-function cache and the QFI cache.
``batch_scale`` (int ≥ 1)
    The octahedron processes ``batch_scale``× the rows: in one pass in the aggressive and
    balanced modes, streamed in chunks of ``chunk_rows`` rows in conservative mode (which
    is how recovery's conservative mode bounds the memory of this drill).

The canonical radius ratios (9/8, 6/5, 9/8) of KERNELS.md are the module constant
:data:`CANONICAL_RATIOS`, not a profile field: the geometry checks measure a profile's radii
against them, so a profile must not be able to move the yardstick along with what it
measures. Profile files written before this change carry a ``canonical_ratios`` key; they
are refused with the unknown-field error, which is acceptable before the first release.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "CANONICAL_RATIOS",
    "DRILL_KEYS",
    "FORMAT_VERSION",
    "VECTORIZATION_MODES",
    "Profile",
    "ProfileError",
    "canonical_profile",
    "load_profile",
    "profile_to_dict",
    "save_profile",
]

FORMAT_VERSION = 1
#: The ratios r[q+1]/r[q] of consecutive quarter radii that KERNELS.md fixes; the geometric
#: ratio drift and recovery's geometric stabilisation use these, never the profile's radii.
CANONICAL_RATIOS: tuple[float, float, float] = (9 / 8, 6 / 5, 9 / 8)
VECTORIZATION_MODES = ("aggressive", "balanced", "conservative")
QUANTUM_PRECISIONS = ("float32", "float16")
DRILL_KEYS: Mapping[str, type] = MappingProxyType(
    {
        "slow_factor": float,
        "hang": bool,
        "crash": bool,
        "cache_thrash": bool,
        "batch_scale": int,
    }
)
_ARRAY_FIELDS = ("radii", "phases", "biases")
_JSON_NAME = "profile.json"


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file and the field."""


def _finite_tuple(name: str, values: Any, length: int) -> tuple[float, ...]:
    """Return ``values`` as a tuple of ``length`` finite floats or raise naming ``name``."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from exc
    if len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {out!r}")
    return out


def _check_drill(drill: Mapping[str, Any]) -> Mapping[str, Any]:
    """Validate the drill knobs and return a read-only copy."""
    out: dict[str, Any] = {}
    for key, value in drill.items():
        if key not in DRILL_KEYS:
            raise ValueError(f"drill has unknown key {key!r}; known: {sorted(DRILL_KEYS)}")
        kind = DRILL_KEYS[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"drill.{key} must be a bool, got {value!r}")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"drill.{key} must be an int >= 1, got {value!r}")
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"drill.{key} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 1:
                raise ValueError(f"drill.{key} must be finite and >= 1, got {value!r}")
            # The kernels repeat whole passes: a fractional factor would silently round.
            if key == "slow_factor" and not float(value).is_integer():
                raise ValueError(f"drill.{key} must be a whole number >= 1, got {value!r}")
            value = float(value)
        out[key] = value
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """Parameters and execution mode of the kernels (see KERNELS.md for the math).

    Parameters
    ----------
    radii : tuple of 4 floats
        L1-ball radius of each octahedron quarter; positive and finite. Their ratios are
        measured against the fixed :data:`CANONICAL_RATIOS`.
    base_radius : float
        The canonical r0 that recovery re-derives ``radii`` from (with ``CANONICAL_RATIOS``).
    phases : tuple of 4 floats
        Phase φ_q of the fluidity wave per quarter, in radians.
    amplitude, frequency : float
        Fluidity-wave amplitude a and angular frequency ω.
    biases : tuple of 4 floats
        Quarter bias b_q.
    vectorization : {"aggressive", "balanced", "conservative"}
        ``mx.compile``, plain MLX, or plain MLX over chunks of ``chunk_rows`` rows.
    chunk_rows : int
        Rows per chunk in conservative mode.
    quantum_precision : {"float32", "float16"}
        Precision of the quantum kernel's products; float16 is the downgrade drill.
    qfi_cache_size : int
        Capacity of the QFI LRU cache.
    drill : mapping
        Fault-injection knobs; see the module docstring.

    Examples
    --------
    >>> p = canonical_profile()
    >>> p.radii
    (1.0, 1.125, 1.35, 1.51875)
    >>> p.replace(vectorization="balanced").vectorization
    'balanced'
    >>> len(p.profile_id)
    12
    """

    radii: tuple[float, float, float, float] = (1.0, 1.125, 1.35, 1.51875)
    base_radius: float = 1.0
    phases: tuple[float, ...] = tuple(q * math.pi / 4 for q in range(4))
    amplitude: float = 0.1
    frequency: float = 1.0
    biases: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    vectorization: str = "aggressive"
    chunk_rows: int = 128
    quantum_precision: str = "float32"
    qfi_cache_size: int = 256
    drill: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        """Validate every field, raising ``ValueError`` that names it."""
        radii = _finite_tuple("radii", self.radii, 4)
        if any(r <= 0 for r in radii):
            raise ValueError(f"radii must be positive, got {radii!r}")
        set_ = object.__setattr__
        set_(self, "radii", radii)
        set_(self, "phases", _finite_tuple("phases", self.phases, 4))
        set_(self, "biases", _finite_tuple("biases", self.biases, 4))
        for name in ("base_radius", "amplitude", "frequency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
            set_(self, name, float(value))
        if self.base_radius <= 0:
            raise ValueError(f"base_radius must be positive, got {self.base_radius!r}")
        if self.amplitude < 0:
            raise ValueError(f"amplitude must be >= 0, got {self.amplitude!r}")
        if self.vectorization not in VECTORIZATION_MODES:
            raise ValueError(
                f"vectorization must be one of {VECTORIZATION_MODES}, got {self.vectorization!r}"
            )
        if self.quantum_precision not in QUANTUM_PRECISIONS:
            raise ValueError(
                f"quantum_precision must be one of {QUANTUM_PRECISIONS}, "
                f"got {self.quantum_precision!r}"
            )
        for name in ("chunk_rows", "qfi_cache_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.drill, Mapping):
            raise ValueError(f"drill must be a mapping, got {self.drill!r}")
        set_(self, "drill", _check_drill(self.drill))

    def __hash__(self) -> int:
        """Hash by content (the drill mapping itself is not hashable)."""
        return hash(self.profile_id)

    @property
    def profile_id(self) -> str:
        """A short stable content hash: 12 hex digits of sha256 of the canonical JSON."""
        blob = json.dumps(profile_to_dict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> Profile:
        """Return a validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def canonical_profile() -> Profile:
    """Return the canonical profile of KERNELS.md (all defaults)."""
    return Profile()


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """Return every field of ``profile`` as plain JSON-serialisable values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(profile):
        value = getattr(profile, f.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry to disk so a rename inside it is durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a 0600 temp file in the same folder, fsync and rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    _fsync_dir(path.parent)


def save_profile(profile: Profile, folder: Path) -> None:
    """Save ``profile`` into ``folder`` atomically (JSON + ``.npz``; see module docstring).

    Parameters
    ----------
    profile : Profile
        The profile to save.
    folder : Path
        Created with mode 0700 when missing; files are written with mode 0600.
    """
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    # Step 1: the arrays, into a content-addressed npz written before the commit point.
    buf = io.BytesIO()
    arrays = {name: np.asarray(getattr(profile, name), dtype=np.float64) for name in _ARRAY_FIELDS}
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    blob = buf.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    params_name = f"params-{digest[:12]}.npz"
    _atomic_write(folder / params_name, blob)
    # Step 2: the JSON document, whose replacement is the commit point.
    doc = profile_to_dict(profile)
    for name in _ARRAY_FIELDS:
        del doc[name]
    doc["format_version"] = FORMAT_VERSION
    doc["params_file"] = params_name
    doc["params_sha256"] = digest
    text = json.dumps(doc, sort_keys=True, indent=2) + "\n"
    _atomic_write(folder / _JSON_NAME, text.encode())
    # Step 3: stale parameter files are no longer referenced by any committed JSON.
    for stale in folder.glob("params-*.npz"):
        if stale.name != params_name:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def load_profile(folder: Path) -> Profile:
    """Load the profile saved in ``folder``, rejecting anything malformed.

    Raises
    ------
    ProfileError
        On unknown or missing JSON fields, a missing or mismatched ``.npz``,
        non-finite values, wrong array shapes or invalid field values; the
        message names the file and the field.
    """
    folder = Path(folder)
    json_path = folder / _JSON_NAME
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"{json_path}: cannot read profile JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProfileError(f"{json_path}: top level must be an object")
    scalar_fields = {f.name for f in dataclasses.fields(Profile)} - set(_ARRAY_FIELDS)
    known = scalar_fields | {"format_version", "params_file", "params_sha256"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ProfileError(f"{json_path}: unknown field(s) {unknown}")
    missing = sorted(known - set(doc))
    if missing:
        raise ProfileError(f"{json_path}: missing field(s) {missing}")
    if doc["format_version"] != FORMAT_VERSION:
        raise ProfileError(f"{json_path}: format_version {doc['format_version']!r} unsupported")
    params_name = doc["params_file"]
    if not isinstance(params_name, str) or Path(params_name).name != params_name:
        raise ProfileError(f"{json_path}: params_file must be a plain file name")
    params_path = folder / params_name
    try:
        blob = params_path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{params_path}: params_file missing: {exc}") from exc
    if hashlib.sha256(blob).hexdigest() != doc["params_sha256"]:
        raise ProfileError(f"{params_path}: params_sha256 does not match the file")
    kwargs: dict[str, Any] = {name: doc[name] for name in scalar_fields}
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            names = set(npz.files)
            if names != set(_ARRAY_FIELDS):
                raise ProfileError(f"{params_path}: arrays must be {list(_ARRAY_FIELDS)}")
            for name in _ARRAY_FIELDS:
                arr = npz[name]
                if arr.shape != (4,):
                    raise ProfileError(f"{params_path}: {name} has shape {arr.shape}, want (4,)")
                if not np.all(np.isfinite(arr)):
                    raise ProfileError(f"{params_path}: {name} contains NaN or Inf")
                kwargs[name] = tuple(float(v) for v in arr)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"{params_path}: cannot read arrays: {exc}") from exc
    try:
        return Profile(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{json_path}: {exc}") from exc
