"""Timed repetitions of a kernel interleaved with a fixed calibration workload, in one process.

Shared machines drift: a host that gets busier slows the kernel and the calibration alike,
so the per-pair ratio kernel ÷ calibration cancels most of that drift while a kernel that
got slower still moves it. The ratio is taken on process CPU time, which time-slicing with
other processes does not inflate (measured here: under two busy neighbours wall time doubled
while CPU time grew about 20 %); wall time is kept for latency. Each repetition times the
kernel, then the calibration, back to back; MLX work is forced with ``mx.eval`` (the
kernels' ``run_mlx`` force their own graphs). MLX is imported when a workload is built,
never when this module is imported.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DISPATCH_STEPS", "Calibration", "TimedSamples", "peak_mlx_memory", "time_interleaved"]

#: Operation pairs in one call of the ``dispatch`` calibration workload.
DISPATCH_STEPS = 6


@dataclass(frozen=True, slots=True)
class Calibration:
    """Three fixed MLX workloads: bound by arithmetic, by memory traffic, and by dispatch.

    ``compute``: elementwise work and row reductions on (256, ``size``), compiled, a few ms,
    held in cache. ``memory``: one compiled streaming pass (multiply-add, row sums) over a
    ``memory_mb`` MB array, far larger than the caches. ``dispatch``: a chain of small
    uncompiled MLX operations (absolute value, row means, a sort of 64 columns, a
    broadcast) over a (256, ``size``) array copied in from NumPy and back, about 8 ms: its
    time goes to launching operations and moving a cache-resident megabyte, as the array
    kernels' does. A kernel's time is divided by the workload of its own character
    (:attr:`kernels.registry.Kernel.character`), the one a neighbour slows alike. Measured
    on the 2-core reference host over 12 runs with no, CPU-bound and memory-streaming
    neighbours: the run-to-run spread (sd) of the octahedron's median ratio was 3.5–5.9 %
    against ``compute`` and 2.9–4.7 % against ``memory``; the Fisher kernel's 7.7–10 % and
    4.3–5.8 %; the quantum kernel's 7.9–8.1 % and 10–11 %. Over 125 quiet fresh-process
    runs in 25 minutes, the spread of the per-run level (:func:`checks.stats.fastest_share_ratio`)
    against ``memory`` and ``dispatch`` was 4.7 and 3.8 % (octahedron small), 3.6 and
    3.0 % (octahedron large), 3.8 and 3.5 % (Fisher small), 3.1 and 3.2 % (Fisher large),
    and the 99th percentile above the median 15 / 12 / 11 / 7.1 % against ``memory``,
    10 / 11 / 9.7 / 4.8 % against ``dispatch``. Its ``spec`` names every workload and its
    size; ratios are only comparable between runs with the same spec, so baselines store it.
    """

    size: int = 1024
    rounds: int = 2
    memory_mb: int = 32

    @property
    def spec(self) -> str:
        """A short identifier of the workloads and their sizes."""
        return (
            f"mlx-compiled-elementwise-256x{self.size}x{self.rounds}"
            f"+stream-{self.memory_mb}MB+dispatch-256x{self.size}x{DISPATCH_STEPS}"
        )

    def build(self, kind: str = "compute") -> Callable[[], None]:
        """Return a zero-argument callable that runs workload ``kind`` once (imports MLX)."""
        import mlx.core as mx

        rng = np.random.default_rng(12345)
        if kind == "memory":
            columns = 2048
            rows = max(1, self.memory_mb * 2**20 // (4 * columns))
            big = mx.array(rng.standard_normal((rows, columns)).astype(np.float32))

            def stream(a: Any) -> Any:
                return mx.sum(a * 0.5 + 1.0, axis=1)

            compiled = mx.compile(stream)
            a0 = big
        elif kind == "compute":
            a0 = mx.array(rng.standard_normal((256, self.size)).astype(np.float32))
            rounds = self.rounds

            def graph(a: Any) -> Any:
                for _ in range(rounds):
                    a = mx.sin(a) * 0.9 + mx.abs(a) * 0.1
                    a = a - mx.mean(a, axis=-1, keepdims=True)
                return a

            compiled = mx.compile(graph)
        elif kind == "dispatch":
            return _dispatch_workload(
                rng.standard_normal((256, self.size)).astype(np.float32), DISPATCH_STEPS
            )
        else:
            raise ValueError(
                f"calibration kind must be 'compute', 'memory' or 'dispatch', got {kind!r}"
            )

        def workload() -> None:
            out = compiled(a0)
            mx.eval(out)
            np.asarray(out)  # the host copy, as kernels hand back NumPy arrays

        return workload


def _dispatch_workload(host: npt.NDArray[np.float32], steps: int) -> Callable[[], None]:
    """Return the ``dispatch`` workload over ``host``: see :class:`Calibration`."""
    import mlx.core as mx

    def workload() -> None:
        a = mx.array(host)
        for _ in range(steps):
            a = mx.abs(a) - mx.mean(a, axis=-1, keepdims=True)
            # A sort of a slice, folded back as zero: one more kernel launch and reduction.
            a = mx.sort(a[:, :64], axis=-1).sum() * 0 + a
        mx.eval(a)
        np.asarray(a)

    return workload


@dataclass(frozen=True, slots=True)
class TimedSamples:
    """Per-repetition times (seconds) of the kernel and of the calibration after it.

    ``kernel`` and ``calibration`` are wall times; ``kernel_cpu`` and ``calibration_cpu``
    are this process's CPU times (all threads) over the same calls. CPU time does not grow
    while other processes hold the cores, so the CPU-time ratio is the one that cancels a
    busy host best; wall time is what a caller waits.
    """

    kernel: tuple[float, ...]
    calibration: tuple[float, ...]
    kernel_cpu: tuple[float, ...]
    calibration_cpu: tuple[float, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        """Kernel ÷ calibration CPU time per repetition."""
        return tuple(
            k / c if c > 0 else float("inf")
            for k, c in zip(self.kernel_cpu, self.calibration_cpu, strict=True)
        )


def time_interleaved(
    kernel: Callable[[], Any],
    calibration: Callable[[], None] | None,
    *,
    repetitions: int,
    warmup: int = 2,
    after_warmup: Callable[[], None] | None = None,
) -> TimedSamples:
    """Time ``repetitions`` runs of ``kernel``, each followed by one of ``calibration``.

    ``warmup`` untimed runs of both come first (they absorb MLX compilation and first-touch
    costs); ``after_warmup`` is called between warm-up and timing (to reset cache counters).
    The garbage collector is paused while timing. Without a calibration, its times are 1.0.
    """
    if repetitions < 1:
        raise ValueError(f"repetitions must be >= 1, got {repetitions}")
    for _ in range(max(0, warmup)):
        kernel()
        if calibration is not None:
            calibration()
    if after_warmup is not None:
        after_warmup()
    wall, cpu = time.perf_counter, time.process_time
    k_wall: list[float] = []
    c_wall: list[float] = []
    k_cpu: list[float] = []
    c_cpu: list[float] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repetitions):
            w0, c0 = wall(), cpu()
            kernel()
            w1, c1 = wall(), cpu()
            k_wall.append(w1 - w0)
            k_cpu.append(c1 - c0)
            if calibration is None:
                c_wall.append(1.0)
                c_cpu.append(1.0)
                continue
            calibration()
            w2, c2 = wall(), cpu()
            c_wall.append(w2 - w1)
            c_cpu.append(c2 - c1)
    finally:
        if was_enabled:
            gc.enable()
    return TimedSamples(
        kernel=tuple(k_wall),
        calibration=tuple(c_wall),
        kernel_cpu=tuple(k_cpu),
        calibration_cpu=tuple(c_cpu),
    )


def peak_mlx_memory(fn: Callable[[], Any], *, calls: int = 5) -> int:
    """Run ``fn`` ``calls`` times; return MLX's largest peak over one call above its start (bytes).

    The memory MLX already holds when a call starts is subtracted, so the figure is the
    call's own. Arrays left alive by earlier code can be released during a call and hide
    part of its peak, so the largest of a few calls is reported.
    """
    import mlx.core as mx

    peak = 0
    for _ in range(max(1, calls)):
        gc.collect()
        mx.synchronize()
        mx.clear_cache()
        mx.reset_peak_memory()
        before = int(mx.get_active_memory())
        fn()
        mx.synchronize()
        peak = max(peak, int(mx.get_peak_memory()) - before)
    return peak
