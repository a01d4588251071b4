"""Tests that guard the architecture: import direction, and no MLX in the daemon process."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_packages(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"), [("kernels", {"daemon", "checks"}), ("checks", {"daemon"})]
)
def test_imports_flow_one_way(package: str, forbidden: set[str]) -> None:
    """kernels ← checks ← daemon: kernels import neither, checks never import the daemon."""
    assert _imported_packages(package) & forbidden == set()


def test_daemon_process_never_imports_mlx() -> None:
    """Importing the whole daemon, its CLI and the check classes leaves mlx unloaded."""
    code = (
        "import sys, importlib, pkgutil, daemon\n"
        "for m in pkgutil.iter_modules(daemon.__path__):\n"
        "    if m.name not in {'child'}:\n"
        "        importlib.import_module('daemon.' + m.name)\n"
        "from daemon.config import load_config\n"
        "from daemon.execution import CheckCatalog\n"
        "catalog = CheckCatalog(load_config())\n"
        "for name in catalog.names():\n"
        "    catalog.load(name)\n"
        "print(sorted(m for m in sys.modules if m == 'mlx' or m.startswith('mlx.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stderr
