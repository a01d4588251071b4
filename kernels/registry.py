"""The kernel registry: ``Kernel`` descriptors from built-ins, entry points and named objects.

Importing this module does not import MLX; :func:`builtin_kernels` and
:func:`load_kernels` do (they import the kernel modules), so call them only in
the process that runs kernels.

A :class:`Kernel` bundles what a check needs to exercise one kernel: seeded
inputs, the MLX implementation, the NumPy reference (float64 oracle or float32
peer), the error measure between them, its cache counters, its batch configs
and its invariants. Each invariant takes ``(rng, profile)`` and returns one
float; ``invariant_limits`` gives the bound a healthy kernel stays within, in
the direction given by the name (``min_eigenvalue`` ≥ limit, the others ≤).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from kernels.profile import VECTORIZATION_MODES, Profile

__all__ = [
    "BATCH_CONFIGS",
    "CHARACTERS",
    "ENTRY_POINT_GROUP",
    "BatchConfig",
    "Kernel",
    "KernelRegistryError",
    "builtin_kernels",
    "load_kernels",
]

ENTRY_POINT_GROUP = "kernelwatch.kernels"
#: What bounds a kernel's speed: arithmetic, streaming memory, or launching small operations.
CHARACTERS = ("compute", "memory", "dispatch")
Invariant = Callable[[np.random.Generator, Profile], float]


class KernelRegistryError(ValueError):
    """A kernel name, entry point or ``module:attribute`` spec cannot be loaded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchConfig:
    """One batch configuration of DESIGN.md: rows, memory limit (bytes) and execution mode."""

    name: str
    rows: int
    memory_limit_bytes: int
    vectorization: str

    def __post_init__(self) -> None:
        """Validate the rows, the limit and the mode."""
        if self.rows < 1:
            raise ValueError(f"BatchConfig.rows must be >= 1, got {self.rows}")
        if self.memory_limit_bytes < 1:
            raise ValueError(f"BatchConfig.memory_limit_bytes must be >= 1, got {self.rows}")
        if self.vectorization not in VECTORIZATION_MODES:
            raise ValueError(f"BatchConfig.vectorization unknown: {self.vectorization!r}")


_MB = 10**6
#: small / medium / large of DESIGN.md (100, 200, 400 MB = 10⁶ bytes each).
BATCH_CONFIGS: tuple[BatchConfig, ...] = (
    BatchConfig(name="small", rows=256, memory_limit_bytes=100 * _MB, vectorization="aggressive"),
    BatchConfig(name="medium", rows=512, memory_limit_bytes=200 * _MB, vectorization="balanced"),
    BatchConfig(
        name="large", rows=1024, memory_limit_bytes=400 * _MB, vectorization="conservative"
    ),
)


@dataclass(frozen=True, kw_only=True)
class Kernel:
    """Everything a check needs to run and judge one kernel.

    Attributes
    ----------
    name : str
        Registry key, also used in metric labels.
    description : str
        One line for humans.
    make_inputs : callable(rng, rows, profile) -> inputs
        Seeded inputs for a batch of ``rows``; the feature size is a keyword of
        the kernel module's ``make_inputs`` with a sensible default.
    run_mlx : callable(inputs, profile) -> ndarray
        The MLX implementation in the profile's mode; evaluation is forced.
    run_reference : callable(inputs, profile, dtype) -> ndarray
        The NumPy reference: float64 is the oracle, float32 the peer.
    max_error : callable(mlx_out, ref64_out) -> float
        The kernel's error measure against the oracle.
    error_limit : float
        The largest healthy ``max_error`` of the MLX kernel.
    cache_stats, reset_cache_stats : callables
        (hits, misses) of the kernel's caches in this process, and their reset:
        the compiled-function cache (octahedron), the QFI LRU (fisher); (0, 0)
        for a kernel without caches (quantum), whose cache efficiency is undefined.
    batch_configs : tuple of BatchConfig
        The batch sizes, memory limits and modes the kernel is checked with.
    invariants : mapping of name to callable(rng, profile) -> float
        Measurements that follow from the definition (see the module docstring).
    invariant_limits : mapping of name to float
        The healthy bound of each invariant.
    character : {"compute", "memory", "dispatch"}
        What bounds the kernel's speed, and so which calibration workload of the daily
        performance check its time is divided by (one that a busy neighbour slows alike,
        :class:`checks.timing.Calibration`): arithmetic, streaming memory far larger than
        the caches, or launching many small operations on cache-resident arrays.
    """

    name: str
    description: str = ""
    make_inputs: Callable[[np.random.Generator, int, Profile], Any]
    run_mlx: Callable[[Any, Profile], npt.NDArray[Any]]
    run_reference: Callable[[Any, Profile, npt.DTypeLike], npt.NDArray[Any]]
    max_error: Callable[[Any, Any], float]
    error_limit: float = 1e-5
    cache_stats: Callable[[], tuple[int, int]] = lambda: (0, 0)
    reset_cache_stats: Callable[[], None] = lambda: None
    batch_configs: tuple[BatchConfig, ...] = BATCH_CONFIGS
    invariants: Mapping[str, Invariant] = field(default_factory=lambda: MappingProxyType({}))
    invariant_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    character: str = "compute"

    def __post_init__(self) -> None:
        """Validate the character (the other fields are checked where they are used)."""
        if self.character not in CHARACTERS:
            raise ValueError(
                f"Kernel.character must be one of {CHARACTERS}, got {self.character!r}"
            )


def _invariant(measure: Callable[[Profile, np.random.Generator], float]) -> Invariant:
    """Adapt a kernel module's ``measure(profile, rng)`` to the ``(rng, profile)`` order."""

    def invariant(rng: np.random.Generator, profile: Profile) -> float:
        return float(measure(profile, rng))

    invariant.__doc__ = measure.__doc__
    invariant.__name__ = getattr(measure, "__name__", "invariant")
    return invariant


def _max_abs_error(mlx_out: Any, ref64_out: Any) -> float:
    """Return max |mlx − float64| over all entries."""
    diff = np.abs(np.asarray(mlx_out, dtype=np.float64) - np.asarray(ref64_out))
    return float(np.max(diff, initial=0.0))


def _octahedron() -> Kernel:
    """Build the octahedron activation's descriptor."""
    from kernels import octahedron as o

    return Kernel(
        name="octahedron",
        character="dispatch",
        description="fluidity wave + per-quarter L1-ball projection, (B, D) float32",
        make_inputs=o.make_inputs,
        run_mlx=o.activate_mlx,
        run_reference=o.activate_reference,
        max_error=_max_abs_error,
        error_limit=1e-5,
        cache_stats=o.cache_stats,
        reset_cache_stats=o.reset_cache_stats,
        invariants=MappingProxyType(
            {
                "geometric_ratio_drift": _invariant(o.geometric_ratio_drift),
                "phase_drift_radians": lambda rng, profile: o.phase_drift(profile),
                "containment_violation": _invariant(o.containment_violation),
                "idempotence_error": _invariant(o.idempotence_error),
                "symmetry_error": _invariant(o.symmetry_error),
                "nonexpansiveness_violation": _invariant(o.nonexpansiveness_violation),
                "reference_error": _invariant(o.reference_error),
            }
        ),
        invariant_limits=MappingProxyType(
            {
                "geometric_ratio_drift": 1e-3,
                "phase_drift_radians": 1e-3,
                "containment_violation": 1e-6,
                "idempotence_error": 1e-6,
                "symmetry_error": 1e-6,
                "nonexpansiveness_violation": 1e-6,
                "reference_error": 1e-5,
            }
        ),
    )


def _fisher() -> Kernel:
    """Build the Fisher geometry kernel's descriptor."""
    from kernels import fisher as f

    return Kernel(
        name="fisher",
        character="dispatch",
        description="row-wise Fisher–Rao distances (B, K) float32, then cached QFI of 4 states",
        make_inputs=f.make_inputs,
        run_mlx=f.run_mlx,
        run_reference=f.run_reference,
        max_error=f.max_error,
        error_limit=1e-4,
        cache_stats=f.cache_stats,
        reset_cache_stats=f.reset_cache_stats,
        invariants=MappingProxyType(
            {
                "self_distance_radians": _invariant(f.self_distance),
                "disjoint_distance_error_radians": _invariant(f.disjoint_distance_error),
                "pure_state_qfi_error": _invariant(f.pure_state_qfi_error),
                "metric_symmetric_error": _invariant(f.metric_symmetric_error),
                "metric_min_eigenvalue": _invariant(f.metric_min_eigenvalue),
                "metric_quadratic_form_error": _invariant(f.metric_quadratic_form_error),
            }
        ),
        invariant_limits=MappingProxyType(
            {
                "self_distance_radians": 1e-6,
                "disjoint_distance_error_radians": 1e-5,
                "pure_state_qfi_error": 1e-4,
                "metric_symmetric_error": 1e-12,
                "metric_min_eigenvalue": -1e-8,
                "metric_quadratic_form_error": 1e-9,
            }
        ),
    )


def _quantum() -> Kernel:
    """Build the quantum evolution kernel's descriptor."""
    from kernels import quantum as q

    keys = {
        "state_deviation": 1e-5,
        "trace_error": 1e-6,
        "hermiticity_error": 1e-6,
        "min_eigenvalue": -1e-6,
        "reference_min_eigenvalue": -1e-8,
        "purity_change": 1e-5,
        "l1_coherence_error": 1e-4,
    }
    return Kernel(
        name="quantum",
        character="compute",
        description="density-matrix evolution U ρ U†, (B, n, n) complex64, n = 16 by default",
        make_inputs=q.make_inputs,
        run_mlx=q.run_mlx,
        run_reference=q.run_reference,
        max_error=q.max_error,
        error_limit=1e-5,
        invariants=MappingProxyType({key: q.coherence_invariant(key) for key in keys}),
        invariant_limits=MappingProxyType(keys),
    )


_BUILTINS: dict[str, Callable[[], Kernel]] = {
    "octahedron": _octahedron,
    "fisher": _fisher,
    "quantum": _quantum,
}


def builtin_kernels() -> dict[str, Kernel]:
    """Return the built-in kernels by name (imports MLX).

    >>> sorted(builtin_kernels())
    ['fisher', 'octahedron', 'quantum']
    """
    return {name: build() for name, build in _BUILTINS.items()}


def _as_kernel(obj: Any, spec: str) -> Kernel:
    """Return ``obj`` as a Kernel: a Kernel itself, or a zero-argument factory of one."""
    if not isinstance(obj, Kernel) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise KernelRegistryError(f"kernel {spec!r}: factory raised {exc!r}") from exc
    if not isinstance(obj, Kernel):
        raise KernelRegistryError(f"kernel {spec!r}: not a Kernel, got {type(obj).__name__}")
    return obj


def _load_spec(spec: str) -> Kernel:
    """Import ``module:attribute`` and return its Kernel."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise KernelRegistryError(f"kernel {spec!r}: expected 'module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise KernelRegistryError(f"kernel {spec!r}: cannot import: {exc}") from exc
    return _as_kernel(obj, spec)


def load_kernels(extra: Sequence[str] = ()) -> dict[str, Kernel]:
    """Return built-ins, then kernels of the ``kernelwatch.kernels`` entry points, then ``extra``.

    Parameters
    ----------
    extra : sequence of str
        ``module:attribute`` names of Kernel objects (or zero-argument factories).

    Raises
    ------
    KernelRegistryError
        When a spec or entry point cannot be loaded, is not a Kernel, or
        reuses the name of a different kernel.
    """
    kernels = builtin_kernels()

    def add(kernel: Kernel, spec: str) -> None:
        if kernel.name in kernels and kernels[kernel.name] is not kernel:
            raise KernelRegistryError(f"kernel {spec!r}: name {kernel.name!r} already registered")
        kernels[kernel.name] = kernel

    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        spec = f"{ep.name} = {ep.value}"
        try:
            loaded = ep.load()
        except Exception as exc:
            raise KernelRegistryError(f"entry point {spec!r}: cannot load: {exc!r}") from exc
        add(_as_kernel(loaded, spec), spec)
    for spec in extra:
        add(_load_spec(spec), spec)
    return kernels
