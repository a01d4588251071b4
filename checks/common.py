"""Helpers the tier checks share: the active profile, the kernels to run, labels and options.

Options every tier understands (``[checks.NAME.options]`` in config, or set by the daemon):

``skip_kernels`` (list of str)
    Kernels the daemon marked aborted; they are not run, and a note says so.
``kernels`` (list of str)
    Run only these kernels (default: every registered kernel the tier covers).
``extra_kernels`` (list of str)
    ``module:attribute`` names of user kernels, as in ``[kernels] extra``.
``batches`` (list of str)
    Run only these batch configs by name (``small``, ``medium``, ``large``).

Nothing here imports MLX at module import time; :func:`load_kernels` does, when called.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from checks.api import CheckContext

if TYPE_CHECKING:
    from kernels.profile import Profile
    from kernels.registry import BatchConfig, Kernel

__all__ = [
    "MODE_ORDER",
    "batch_profile",
    "labels",
    "load_active_profile",
    "option_float",
    "option_int",
    "option_names",
    "select_batches",
    "select_kernels",
]

#: Execution modes from fastest to most conservative.
MODE_ORDER: tuple[str, ...] = ("aggressive", "balanced", "conservative")


def option_names(options: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    """Return the option ``key`` as a tuple of str, or None when it is absent."""
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"option {key!r} must be a list of names, got {value!r}")
    return tuple(str(v) for v in value)


def option_int(options: Mapping[str, Any], key: str, default: int, *, minimum: int = 1) -> int:
    """Return the int option ``key`` (default ``default``), refusing values below ``minimum``."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"option {key!r} must be an int >= {minimum}, got {value!r}")
    return value


def option_bool(options: Mapping[str, Any], key: str, default: bool) -> bool:
    """Return the boolean option ``key`` (default ``default``), refusing anything but a bool."""
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"option {key!r} must be true or false, got {value!r}")
    return value


def option_float(
    options: Mapping[str, Any],
    key: str,
    default: float,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
) -> float:
    """Return the numeric option ``key`` as a float (default ``default``), refusing values
    outside [``low``, ``high``] (``(low, high]`` when ``low_open``), NaN and infinities.

    An out-of-range statistical option is refused rather than clamped: a NaN ``alpha``, say,
    would otherwise silently turn a test off.
    """
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"option {key!r} must be a number, got {value!r}")
    number = float(value)
    above_low = number > low if low_open else number >= low
    if not (math.isfinite(number) and above_low and number <= high):
        above = f"{'>' if low_open else '>='} {low:g}"
        allowed = f"a finite number {above}" + ("" if math.isinf(high) else f" and <= {high:g}")
        raise ValueError(f"option {key!r} must be {allowed}, got {value!r}")
    return number


def load_active_profile(context: CheckContext) -> Profile:
    """Return the profile at ``context.profile_path``, or the canonical one when there is none."""
    from kernels.profile import canonical_profile, load_profile

    if context.profile_path is None:
        return canonical_profile()
    return load_profile(context.profile_path)


def select_kernels(
    context: CheckContext, *, default: Sequence[str] | None = None
) -> tuple[dict[str, Kernel], list[str]]:
    """Return the kernels to run (honouring the options above) and notes about skipped ones.

    ``default`` limits the built-in kernels a tier covers when ``kernels`` is not set; user
    kernels from ``extra_kernels`` are always included.
    """
    from kernels.registry import builtin_kernels, load_kernels

    options = context.options
    extra = option_names(options, "extra_kernels") or ()
    every = load_kernels(extra)
    wanted = option_names(options, "kernels")
    builtin = set(builtin_kernels())
    notes: list[str] = []
    if wanted is None:
        names = [n for n in every if n not in builtin or default is None or n in default]
    else:
        unknown = sorted(set(wanted) - set(every))
        if unknown:
            notes.append(f"unknown kernels ignored: {', '.join(unknown)}")
        names = [n for n in wanted if n in every]
    skip = set(option_names(options, "skip_kernels") or ())
    skipped = [n for n in names if n in skip]
    if skipped:
        notes.append(f"skipped (marked aborted): {', '.join(skipped)}")
    return {n: every[n] for n in names if n not in skip}, notes


def select_batches(kernel: Kernel, options: Mapping[str, Any]) -> tuple[BatchConfig, ...]:
    """Return the kernel's batch configs, limited to ``options["batches"]`` when set."""
    wanted = option_names(options, "batches")
    if wanted is None:
        return kernel.batch_configs
    return tuple(b for b in kernel.batch_configs if b.name in wanted)


def batch_profile(profile: Profile, batch: BatchConfig) -> Profile:
    """Return ``profile`` in the batch config's mode, unless the profile's is more conservative.

    The batch configs set the mode each size is checked in; a profile switched to a more
    conservative mode (by recovery's ``enable_conservative_mode``) wins over them.
    """
    mode = max(profile.vectorization, batch.vectorization, key=MODE_ORDER.index)
    return profile if mode == profile.vectorization else profile.replace(vectorization=mode)


def labels(
    kernel: str, profile: Profile, seed: int, *, batch: str | None = None, **extra: str
) -> dict[str, str]:
    """Return the labels every measurement carries: kernel, batch, profile id and seed."""
    out = {"kernel": kernel, "profile_id": profile.profile_id, "seed": str(seed)}
    if batch is not None:
        out["batch"] = batch
    out.update(extra)
    return out
