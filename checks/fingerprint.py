"""The environment fingerprint: stable fields only, so baselines match the same machine setup.

Only fields that change when timings may legitimately change go in (CPU model, core count,
OS, architecture, Python and numerical library versions); hostnames, load, uptime or
frequency do not, because unstable fingerprints turn noise into false "new machine" events.
Library versions come from package metadata: MLX is never imported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_ABSENT = "absent"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fingerprint:
    """Stable facts about the machine and software that the measurements depend on."""

    cpu_model: str
    cpu_count: int
    os_name: str
    os_release: str
    machine: str
    python_version: str
    mlx_version: str
    numpy_version: str
    scipy_version: str

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Fingerprint:
        return cls(**{f.name: record[f.name] for f in fields(cls)})

    def digest(self) -> str:
        """Return a short (16 hex digits) sha256 of the canonical JSON record."""
        canonical = json.dumps(self.to_record(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _package_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return _ABSENT


def _cpu_model() -> str:
    """Return the CPU's marketing name, or the best stable stand-in the platform offers."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        # x86 says "model name"; many ARM kernels say "Hardware", "Processor" or "CPU part".
        wanted = ("model name", "hardware", "processor", "cpu model", "cpu part")
        found: dict[str, str] = {}
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            key = key.strip().lower()
            if sep and key in wanted and key not in found and value.strip():
                found[key] = value.strip()
        for key in wanted:
            # "processor" on x86 is just an index; only trust it when it is not a number.
            if key in found and not found[key].isdigit():
                return found[key]
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["/usr/sbin/sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            if out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or platform.machine() or "unknown"


def collect_fingerprint() -> Fingerprint:
    """Read the current environment's fingerprint (cheap; imports no numerical library)."""
    return Fingerprint(
        cpu_model=_cpu_model(),
        cpu_count=os.cpu_count() or 0,
        os_name=platform.system(),
        os_release=platform.release(),
        machine=platform.machine(),
        python_version=platform.python_version(),
        mlx_version=_package_version("mlx"),
        numpy_version=_package_version("numpy"),
        scipy_version=_package_version("scipy"),
    )
