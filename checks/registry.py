"""Which checks exist: names mapped to ``module:attribute`` targets, and loading them.

Discovery reads only names and targets (the entry-point group ``kernelwatch.checks`` and the
config's ``[checks.NAME] module``), so it imports nothing. Loading imports the target's
module; check modules must not import MLX at import time, because the daemon loads them to
read ``tier`` and ``timeout_s`` and the daemon never imports MLX.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from checks.api import TIERS, Check

ENTRY_POINT_GROUP = "kernelwatch.checks"


class CheckRegistryError(ValueError):
    """A check target could not be parsed, imported, or is not a Check.

    Defined here rather than in the daemon's error tree because checks never import the daemon;
    the daemon wraps it in its own ``RegistryError`` where it needs to.
    """


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A check's name and where to find it: ``target`` is ``"package.module:attribute"``."""

    name: str
    target: str


def _split_target(target: str) -> tuple[str, str]:
    """Split ``module:attribute`` or raise naming the target."""
    module, sep, attribute = target.partition(":")
    if not sep or not module.strip() or not attribute.strip():
        raise CheckRegistryError(
            f"check target {target!r} must have the form 'package.module:attribute'"
        )
    return module.strip(), attribute.strip()


def _validate(check: object, target: str) -> Check:
    """Return ``check`` typed as a Check, or raise naming the target and the missing piece."""
    problems: list[str] = []
    name = getattr(check, "name", None)
    if not isinstance(name, str) or not name:
        problems.append(f"'name' must be a non-empty str, got {name!r}")
    tier = getattr(check, "tier", None)
    if tier not in TIERS:
        problems.append(f"'tier' must be one of {TIERS}, got {tier!r}")
    timeout = getattr(check, "timeout_s", None)
    # bool is an int; a timeout of True is a bug, not one second.
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        problems.append(f"'timeout_s' must be a positive number, got {timeout!r}")
    if not callable(getattr(check, "run", None)):
        problems.append("'run' must be a method taking a CheckContext")
    if problems or not isinstance(check, Check):
        detail = "; ".join(problems) or "it does not satisfy the Check protocol"
        raise CheckRegistryError(f"check target {target!r} is not a Check: {detail}")
    return check


def resolve_target(target: str) -> Check:
    """Import ``module:attribute`` and return the Check it names.

    A class (or any callable that is not already a Check) is called with no arguments; the
    result must satisfy :class:`checks.api.Check`. Every failure raises
    :class:`CheckRegistryError` naming the target.
    """
    module_name, attribute = _split_target(target)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # any error while importing user code is the target's fault
        raise CheckRegistryError(
            f"check target {target!r}: cannot import module {module_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise CheckRegistryError(
                f"check target {target!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from exc
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, Check)):
        try:
            obj = obj()
        except Exception as exc:  # a constructor that needs arguments is a wrong target
            raise CheckRegistryError(
                f"check target {target!r}: calling {attribute!r} with no arguments failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return _validate(obj, target)


def discover_checks(configured: Mapping[str, str]) -> dict[str, CheckSpec]:
    """Return every known check by name: entry points, then ``configured`` (which wins).

    ``configured`` maps check names to ``module:attribute`` targets from the config. Nothing is
    imported; targets are only checked for their form.
    """
    specs: dict[str, CheckSpec] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        specs[ep.name] = CheckSpec(name=ep.name, target=ep.value)
    for name, target in configured.items():
        _split_target(target)
        specs[name] = CheckSpec(name=name, target=target)
    return dict(sorted(specs.items()))


def load_check(spec: CheckSpec) -> Check:
    """Import and return the check ``spec`` names; its ``name`` must equal ``spec.name``."""
    check = resolve_target(spec.target)
    if check.name != spec.name:
        # Results and events carry check.name; a silent rename would split its history.
        raise CheckRegistryError(
            f"check target {spec.target!r} is registered as {spec.name!r} "
            f"but names itself {check.name!r}"
        )
    return check
