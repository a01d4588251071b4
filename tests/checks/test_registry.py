"""The check registry: discovery by entry point and config, loading, and refusing non-checks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from checks.api import Check
from checks.registry import (
    CheckRegistryError,
    CheckSpec,
    discover_checks,
    load_check,
    resolve_target,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = "tests.fixtures.checks"


def test_entry_point_discovery_finds_runtime() -> None:
    """The installed entry-point group names the built-in runtime check and its target."""
    specs = discover_checks({})
    assert specs["runtime"] == CheckSpec(name="runtime", target="checks.runtime:RuntimeCheck")


def test_configured_target_overrides_entry_point() -> None:
    """A configured target for a name that an entry point also declares wins."""
    specs = discover_checks({"runtime": f"{FIXTURES}:Quick", "quick": f"{FIXTURES}:Quick"})
    assert specs["runtime"].target == f"{FIXTURES}:Quick"
    assert specs["quick"] == CheckSpec(name="quick", target=f"{FIXTURES}:Quick")


def test_discovery_refuses_a_malformed_configured_target() -> None:
    """A configured target without ``module:attribute`` form is refused, naming the target."""
    with pytest.raises(CheckRegistryError, match="'no_colon_here'"):
        discover_checks({"broken": "no_colon_here"})


def test_resolve_instantiates_a_class() -> None:
    """A target naming a class yields an instance that satisfies the Check protocol."""
    check = resolve_target(f"{FIXTURES}:Quick")
    assert isinstance(check, Check)
    assert (check.name, check.tier, check.timeout_s) == ("quick", "daily", 10.0)


@pytest.mark.parametrize(
    ("target", "complaint"),
    [
        ("tests.fixtures.no_such_module:Quick", "cannot import module"),
        (f"{FIXTURES}:NoSuchAttribute", "has no attribute"),
        (f"{FIXTURES}:", "must have the form"),
        (":Quick", "must have the form"),
    ],
)
def test_bad_targets_raise_naming_the_target(target: str, complaint: str) -> None:
    """Unimportable modules, missing attributes and malformed targets name the target."""
    with pytest.raises(CheckRegistryError, match=complaint) as info:
        resolve_target(target)
    assert repr(target) in str(info.value)


def test_non_check_attribute_is_refused() -> None:
    """An attribute that is not a Check (here an int) is refused, naming what is missing."""
    with pytest.raises(CheckRegistryError, match="is not a Check") as info:
        resolve_target(f"{FIXTURES}:NOT_A_CHECK")
    assert f"'{FIXTURES}:NOT_A_CHECK'" in str(info.value)


def test_class_without_tier_is_refused() -> None:
    """A class missing ``tier`` is refused with a message that names ``tier``."""
    with pytest.raises(CheckRegistryError, match="'tier' must be one of"):
        resolve_target(f"{FIXTURES}:NoTier")


def test_load_check_refuses_a_name_mismatch() -> None:
    """A check registered under one name that calls itself another is refused."""
    with pytest.raises(CheckRegistryError, match="names itself 'quick'"):
        load_check(CheckSpec(name="runtime", target=f"{FIXTURES}:Quick"))


def test_discovery_imports_nothing_and_loading_runtime_does_not_import_mlx() -> None:
    """In a fresh interpreter, discovery imports no check module and loading runtime no MLX."""
    script = textwrap.dedent(
        """
        import sys
        from checks.registry import discover_checks, load_check
        specs = discover_checks({})
        assert "checks.runtime" not in sys.modules, "discovery imported checks.runtime"
        check = load_check(specs["runtime"])
        assert check.tier == "daily" and check.timeout_s > 0
        assert "mlx" not in sys.modules, "loading the runtime check imported mlx"
        print("clean")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"
