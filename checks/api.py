"""The contract between the daemon and a check: Check, CheckContext, Measurement, CheckResult.

A check measures; it does not judge. Thresholds live in config rules and are applied by the
daemon's evaluator, so the same measurement can warn on one host and be fine on another.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, cast, runtime_checkable

TIERS: tuple[str, ...] = ("daily", "weekly", "monthly", "quarterly")

# Measurement names carry their unit as a suffix, as Prometheus metric names do.
UNIT_SUFFIXES: tuple[str, ...] = (
    "seconds",
    "bytes",
    "ratio",
    "radians",
    "count",
    "per_second",
    "total",
    "score",
    "distance",
    "pvalue",
    "bool",
)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")


class Status(IntEnum):
    """Nagios-style outcome of a run, also the CLI's exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One measured value: ``name`` ends with its unit (``latency_per_batch_seconds``)."""

    name: str
    value: float
    unit: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"measurement name {self.name!r} must match {_NAME.pattern}")
        if self.unit not in UNIT_SUFFIXES or not self.name.endswith(self.unit):
            raise ValueError(
                f"measurement {self.name!r} must end with its unit {self.unit!r}, "
                f"one of {UNIT_SUFFIXES}"
            )
        for key, val in self.labels.items():
            if not _LABEL.match(key) or not isinstance(val, str):
                raise ValueError(f"measurement {self.name!r}: bad label {key!r}={val!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "labels", MappingProxyType(dict(sorted(self.labels.items()))))

    def to_record(self) -> dict[str, Any]:
        value: float | str = self.value if math.isfinite(self.value) else repr(self.value)
        # labels is always a MappingProxyType (__post_init__): its copy() is a plain dict,
        # several times faster than dict(proxy), and telemetry serialises every measurement.
        # (A quoted cast: subscripting MappingProxyType on every call would double the cost.)
        labels = cast("MappingProxyType[str, str]", self.labels).copy()
        return {"name": self.name, "value": value, "unit": self.unit, "labels": labels}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Measurement:
        return cls(
            name=record["name"],
            value=float(record["value"]),
            unit=record["unit"],
            labels=dict(record.get("labels", {})),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """What a check hands back: its measurements, and notes a person may want to read."""

    check: str
    measurements: tuple[Measurement, ...]
    notes: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "measurements": [m.to_record() for m in self.measurements],
            "notes": list(self.notes),
            "details": dict(self.details),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> CheckResult:
        return cls(
            check=record["check"],
            measurements=tuple(Measurement.from_record(m) for m in record["measurements"]),
            notes=tuple(record.get("notes", ())),
            details=dict(record.get("details", {})),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckContext:
    """What a check is given in its child process.

    ``options`` are the check's own settings from config (``[checks.NAME]``); ``seed`` seeds
    every random input so a failure can be replayed; ``profile_path`` is the active kernel
    profile folder (``None`` when the daemon has none yet: checks use canonical defaults).
    """

    tier: str
    state_dir: Path
    seed: int
    run_id: str
    options: Mapping[str, Any] = field(default_factory=dict)
    profile_path: Path | None = None


@runtime_checkable
class Check(Protocol):
    """A named measurement procedure. The daemon calls ``run`` in a child process, once per run."""

    name: str
    tier: str
    timeout_s: float

    def run(self, context: CheckContext) -> CheckResult:
        """Measure and return; raise only for a bug (it is reported as a crash)."""
        ...
