"""Run the kernel modules' doctests under ``make test`` (pytest's testpaths hold only tests/)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "kernels._compiled",
    "kernels._drill",
    "kernels.fisher",
    "kernels.octahedron",
    "kernels.profile",
    "kernels.quantum",
    "kernels.registry",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests_pass(name: str) -> None:
    """Every example in the module's docstrings runs and prints what it shows."""
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
