"""Helpers shared by the check-tier tests: run a check in-process, read what it raised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from checks.api import Check, CheckContext, CheckResult
from daemon.config import load_config
from daemon.evaluator import Evaluator
from daemon.events import ThresholdCrossed
from kernels.profile import Profile, save_profile


def saved_profile(tmp_path: Path, profile: Profile | None) -> Path | None:
    """Save ``profile`` under ``tmp_path`` (one folder per profile id); None stays None."""
    if profile is None:
        return None
    folder = tmp_path / f"profile-{profile.profile_id}"
    save_profile(profile, folder)
    return folder


def run_in_process(
    check: Check,
    tmp_path: Path,
    *,
    tier: str,
    seed: int,
    options: dict[str, Any],
    profile: Profile | None = None,
) -> CheckResult:
    """Run ``check`` in this process on ``profile`` (the canonical one when None)."""
    context = CheckContext(
        tier=tier,
        state_dir=tmp_path,
        seed=seed,
        run_id="test",
        options=options,
        profile_path=saved_profile(tmp_path, profile),
    )
    return check.run(context)


def raised_issues(result: CheckResult, *, tier: str) -> set[str]:
    """Return the issues the embedded config's default rules raise on ``result``."""
    evaluation = Evaluator(load_config().rules).evaluate(
        run_id="test", tier=tier, check=result.check, measurements=result.measurements
    )
    return {e.issue for e in evaluation.events if isinstance(e, ThresholdCrossed)}


def single_value(result: CheckResult, name: str) -> float:
    """Return the one value of measurement ``name`` (fails when there are none or several)."""
    (found,) = [m.value for m in result.measurements if m.name == name]
    return found
