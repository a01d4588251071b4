"""The kernel table of ``make bench``: MLX vs NumPy float32 time, error vs float64, bandwidth.

Run it as ``python -m bench.kernels`` from the repository root (running the file
directly would shadow the ``kernels`` package with this module).

For every built-in kernel × batch (256, 512, 1024) × size (D = 1024, 4096
features; n = 16, 32 for the quantum kernel's matrices) it times the MLX
kernel and the NumPy float32 peer side by side in this process (the medians of
``REPS`` alternating runs after one warm-up that absorbs ``mx.compile``), their ratio, the
MLX kernel's error against the float64 oracle (``Kernel.max_error``: absolute
for the octahedron and distances, trace distance for states), and, for the
octahedron, the share of the machine's copy bandwidth it reaches (the bytes
it must move, one read of x and one write of y, ÷ time, over a measured
``np.copyto`` bandwidth). Stage rows at batch 1024 time the pieces the
performance targets name: the projection, the wave, row-wise Fisher–Rao and
batched ``eigh``.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BenchRow", "copy_bandwidth", "format_table", "kernel_rows", "kernel_table"]

REPS = 7
BATCHES = (256, 512, 1024)
FEATURES = (1024, 4096)
MATRIX_SIZES = (16, 32)


@dataclass(frozen=True, slots=True)
class BenchRow:
    """One line of the kernel table (times in seconds, bandwidth as a fraction or None)."""

    kernel: str
    batch: int
    size: str
    mlx_seconds: float
    numpy_seconds: float
    max_error: float | None
    bandwidth_fraction: float | None = None

    @property
    def ratio(self) -> float:
        """MLX time over NumPy float32 time (below 1: MLX is faster)."""
        return self.mlx_seconds / self.numpy_seconds


def _median_seconds(fn: Callable[[], Any], reps: int = REPS) -> float:
    """Run ``fn`` once to warm up, then return the median wall time of ``reps`` runs."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _max_abs(a: Any, b: Any) -> float:
    """Return max |a − b| in float64."""
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b)))


def copy_bandwidth(nbytes: int = 64 * 2**20) -> float:
    """Return the machine's copy bandwidth in bytes/s (read + write) from ``np.copyto``."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    seconds = _median_seconds(lambda: np.copyto(dst, src), reps=7)
    return 2 * nbytes / seconds


def _paired_seconds(
    mlx_fn: Callable[[], Any], numpy_fn: Callable[[], Any], reps: int
) -> tuple[float, float]:
    """Return median wall times of two functions timed alternately after one warm-up each.

    Alternating MLX, NumPy, MLX, NumPy, … lets a burst of load from another
    process hit both sides alike, so their ratio is steadier than their times.
    """
    mlx_fn()
    numpy_fn()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for side, fn in enumerate((mlx_fn, numpy_fn)):
            start = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def kernel_rows(*, reps: int = REPS) -> list[BenchRow]:
    """Measure every kernel × batch × size, then the stage rows; return the table's rows."""
    import mlx.core as mx

    from kernels import fisher, octahedron, quantum
    from kernels.profile import canonical_profile
    from kernels.registry import builtin_kernels

    profile = canonical_profile()  # aggressive: MLX's fastest mode
    kernels = builtin_kernels()
    # The modules' own make_inputs take the size keyword (features or n).
    makers: dict[str, Callable[..., Any]] = {
        "octahedron": octahedron.make_inputs,
        "fisher": fisher.make_inputs,
        "quantum": quantum.make_inputs,
    }
    bandwidth = copy_bandwidth()
    rows: list[BenchRow] = []
    for name, kernel in kernels.items():
        sizes = MATRIX_SIZES if name == "quantum" else FEATURES
        for batch in BATCHES:
            for size in sizes:
                rng = np.random.default_rng(batch * 10_000 + size)
                keyword = "n" if name == "quantum" else "features"
                inputs = makers[name](rng, batch, profile, **{keyword: size})
                out = kernel.run_mlx(inputs, profile)
                error = kernel.max_error(out, kernel.run_reference(inputs, profile, np.float64))
                t_mlx, t_np = _paired_seconds(
                    functools.partial(kernel.run_mlx, inputs, profile),
                    functools.partial(kernel.run_reference, inputs, profile, np.float32),
                    reps,
                )
                fraction = None
                if name == "octahedron":
                    fraction = 2 * batch * size * 4 / t_mlx / bandwidth
                label = f"n={size}" if name == "quantum" else f"D={size}"
                rows.append(BenchRow(name, batch, label, t_mlx, t_np, error, fraction))
    # Stage rows at batch 1024, the shapes of the performance targets.
    rng = np.random.default_rng(0)
    x = octahedron.make_inputs(rng, 1024, profile, features=4096)
    z = octahedron.wave_reference(x, profile, np.float32)
    radii = profile.radii
    stages: list[tuple[str, str, Callable[[], Any], Callable[[], Any], float | None]] = [
        (
            "octahedron:projection",
            "D=4096",
            lambda: octahedron.project_mlx(z, profile),
            lambda: octahedron.project_reference(z, radii, np.float32),
            _max_abs(octahedron.project_mlx(z, profile), octahedron.project_reference(z, radii)),
        ),
        (
            "octahedron:wave",
            "D=4096",
            lambda: octahedron.wave_mlx(x, profile),
            lambda: octahedron.wave_reference(x, profile, np.float32),
            _max_abs(octahedron.wave_mlx(x, profile), octahedron.wave_reference(x, profile)),
        ),
    ]
    f_inputs = fisher.make_inputs(rng, 1024, profile, features=4096)
    p, q = f_inputs.p, f_inputs.q
    stages.append(
        (
            "fisher:rao-rowwise",
            "D=4096",
            lambda: fisher.fisher_rao_mlx(p, q),
            lambda: fisher.fisher_rao_reference(p, q, np.float32),
            _max_abs(fisher.fisher_rao_mlx(p, q), fisher.fisher_rao_reference(p, q)),
        )
    )
    for n in MATRIX_SIZES:
        ham = quantum.random_hamiltonians(rng, 1024, n).astype(np.complex64)
        ham_mx = mx.array(ham)
        stages.append(
            (
                "quantum:eigh",
                f"n={n}",
                functools.partial(_eigh_mlx, ham_mx),
                functools.partial(np.linalg.eigh, ham),
                None,
            )
        )
    for stage, size_label, mlx_fn, numpy_fn, stage_error in stages:
        t_mlx, t_np = _paired_seconds(mlx_fn, numpy_fn, reps)
        rows.append(BenchRow(stage, 1024, size_label, t_mlx, t_np, stage_error))
    return rows


def _eigh_mlx(hamiltonians: Any) -> None:
    """MLX's batched eigh on the CPU stream, forced."""
    import mlx.core as mx

    mx.eval(*mx.linalg.eigh(hamiltonians, stream=mx.cpu))


def format_table(rows: list[BenchRow]) -> str:
    """Return the rows as a fixed-width text table (milliseconds)."""
    header = (
        f"{'kernel':<22} {'batch':>5} {'size':>7} {'MLX ms':>9} {'NumPy32 ms':>10} "
        f"{'ratio':>6} {'max err f64':>11} {'copy bw':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        err = "" if r.max_error is None else f"{r.max_error:.1e}"
        bw = "" if r.bandwidth_fraction is None else f"{100 * r.bandwidth_fraction:.1f}%"
        lines.append(
            f"{r.kernel:<22} {r.batch:>5} {r.size:>7} {1e3 * r.mlx_seconds:>9.2f} "
            f"{1e3 * r.numpy_seconds:>10.2f} {r.ratio:>6.2f} {err:>11} {bw:>7}"
        )
    lines.append(
        f"median of {REPS} runs each, MLX and NumPy alternating, after one warm-up; ratio = "
        "MLX / NumPy float32 (below 1: MLX faster); copy bw = (read x + write y) / time over "
        "the np.copyto bandwidth"
    )
    return "\n".join(lines)


def kernel_table() -> str:
    """Measure and format the kernel table (about a minute on a 2-core machine)."""
    return format_table(kernel_rows())


if __name__ == "__main__":
    print(kernel_table())
