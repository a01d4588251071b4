"""Tests of the kernel registry: built-ins, entry points, module:attribute names, errors."""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest

from kernels import registry
from kernels.registry import BATCH_CONFIGS, BatchConfig, Kernel, KernelRegistryError

PLUGIN = """
import numpy as np
from kernels.registry import Kernel

def _run(inputs, profile):
    return np.asarray(inputs, dtype=np.float32) * 2

def _ref(inputs, profile, dtype):
    return np.asarray(inputs, dtype=dtype) * 2

DOUBLER = Kernel(
    name="doubler",
    make_inputs=lambda rng, rows, profile: rng.standard_normal((rows, 4)),
    run_mlx=_run,
    run_reference=_ref,
    max_error=lambda a, b: float(np.max(np.abs(a - b))),
)

def factory():
    return DOUBLER

NOT_A_KERNEL = 42
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module ``kw_plugin_doubler`` defining a Kernel, on sys.path."""
    (tmp_path / "kw_plugin_doubler.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "kw_plugin_doubler"


def test_builtins_are_the_three_kernels() -> None:
    """The built-ins are the octahedron, Fisher and quantum kernels."""
    kernels = registry.builtin_kernels()
    assert sorted(kernels) == ["fisher", "octahedron", "quantum"]
    assert all(isinstance(k, Kernel) and k.name == name for name, k in kernels.items())


def test_batch_configs_follow_design() -> None:
    """small/medium/large: 256/512/1024 rows, 100/200/400 MB, aggressive/balanced/conservative."""
    assert (
        BatchConfig(
            name="small", rows=256, memory_limit_bytes=100 * 10**6, vectorization="aggressive"
        ),
        BatchConfig(
            name="medium", rows=512, memory_limit_bytes=200 * 10**6, vectorization="balanced"
        ),
        BatchConfig(
            name="large", rows=1024, memory_limit_bytes=400 * 10**6, vectorization="conservative"
        ),
    ) == BATCH_CONFIGS


def test_batch_config_validates() -> None:
    """A batch config with an unknown mode is rejected."""
    with pytest.raises(ValueError, match="vectorization"):
        BatchConfig(name="x", rows=1, memory_limit_bytes=1, vectorization="turbo")


def test_kernel_character_picks_a_known_calibration() -> None:
    """Built-ins declare what bounds their speed; an unknown character is rejected by name."""
    kernels = registry.builtin_kernels()
    assert {name: k.character for name, k in kernels.items()} == {
        "octahedron": "dispatch",
        "fisher": "dispatch",
        "quantum": "compute",
    }
    with pytest.raises(ValueError, match="character"):
        dataclasses.replace(kernels["quantum"], character="gpu")


@pytest.mark.parametrize("attribute", ["DOUBLER", "factory"])
def test_module_attribute_names_load(plugin: str, attribute: str) -> None:
    """A ``module:attribute`` name loads a Kernel object or a zero-argument factory."""
    kernels = registry.load_kernels([f"{plugin}:{attribute}"])
    assert kernels["doubler"].name == "doubler"
    assert "octahedron" in kernels


@pytest.mark.parametrize(
    "spec",
    [
        "no_colon",
        "kw_plugin_doubler:MISSING",
        "no_such_module_xyz:K",
        "kw_plugin_doubler:NOT_A_KERNEL",
        ":x",
    ],
)
def test_bad_names_raise_naming_the_spec(plugin: str, spec: str) -> None:
    """A bad name raises KernelRegistryError (a ValueError) naming the spec."""
    with pytest.raises(KernelRegistryError, match=spec.split(":")[0] or "expected"):
        registry.load_kernels([spec])
    assert issubclass(KernelRegistryError, ValueError)


def test_duplicate_name_is_rejected(plugin: str) -> None:
    """A kernel reusing a registered name with a different object is rejected."""
    with pytest.raises(KernelRegistryError, match="already registered"):
        registry.load_kernels(["kernels.registry:_octahedron"])


def _entry_points(group: str, value: str) -> Any:
    """Return a fake entry_points() with one entry point in ``group``."""
    ep = importlib.metadata.EntryPoint(name="doubler", value=value, group=group)

    def entry_points(*, group: str) -> Any:
        return [ep] if group == ep.group else []

    return entry_points


def test_entry_points_are_loaded(plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels advertised in the ``kernelwatch.kernels`` entry-point group are registered."""
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        _entry_points(registry.ENTRY_POINT_GROUP, f"{plugin}:DOUBLER"),
    )
    assert "doubler" in registry.load_kernels()


def test_broken_entry_point_names_itself(plugin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry point that cannot load raises KernelRegistryError naming it."""
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        _entry_points(registry.ENTRY_POINT_GROUP, f"{plugin}:GONE"),
    )
    with pytest.raises(KernelRegistryError, match="doubler"):
        registry.load_kernels()
