"""Find the real external programs a test needs, or skip (laptop) / fail (CI) without them.

`.ci/run` installs the programs and sets ``REQUIRE_REAL_COMPONENTS=1``; under it a missing
program fails the test instead of skipping it, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(name: str, *, package: str) -> str:
    """Return the path of ``name`` on PATH, or skip/fail naming the Debian package to install."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} not found on PATH (Debian package {package!r}; .ci/run installs it)"
    if os.environ.get("REQUIRE_REAL_COMPONENTS") == "1":
        pytest.fail(f"REQUIRE_REAL_COMPONENTS=1 but {reason}")
    pytest.skip(reason)
