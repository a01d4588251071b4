"""Timed repetitions of a kernel interleaved with a fixed calibration workload, in one process.

Shared machines drift: a host that gets busier slows the kernel and the calibration alike,
so the per-pair ratio kernel ÷ calibration cancels most of that drift while a kernel that
got slower still moves it. Each repetition times the kernel, then the calibration, back to
back; MLX work is forced with ``mx.eval`` (the kernels' ``run_mlx`` force their own graphs).
MLX is imported when a workload is built, never when this module is imported.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Calibration", "TimedSamples", "peak_mlx_memory", "time_interleaved"]


@dataclass(frozen=True, slots=True)
class Calibration:
    """A fixed MLX matmul + elementwise and NumPy elementwise workload of a few milliseconds.

    Its ``spec`` names the workload; ratios are only comparable between runs with the same
    spec, so baselines store it.
    """

    size: int = 192
    rounds: int = 3

    @property
    def spec(self) -> str:
        """A short identifier of the workload and its size."""
        return f"mlx-matmul-tanh+numpy-{self.size}x{self.rounds}"

    def build(self) -> Callable[[], None]:
        """Return a zero-argument callable that runs the workload once (imports MLX)."""
        import mlx.core as mx

        rng = np.random.default_rng(12345)
        a0 = rng.standard_normal((self.size, self.size)).astype(np.float32)
        b = mx.array(rng.standard_normal((self.size, self.size)).astype(np.float32) / self.size)
        host = rng.standard_normal(self.size * self.size * 2).astype(np.float32)
        rounds = self.rounds

        def workload() -> None:
            a = mx.array(a0)
            for _ in range(rounds):
                a = mx.tanh(a @ b) * 0.5 + a * 0.5
            mx.eval(a)
            out = np.asarray(a)
            np.sin(host, out=host)  # host-side elementwise work, as kernels convert outputs
            host[:1] += float(out[0, 0])

        return workload


@dataclass(frozen=True, slots=True)
class TimedSamples:
    """Per-repetition wall times (seconds) of the kernel and of the calibration after it."""

    kernel: tuple[float, ...]
    calibration: tuple[float, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        """Kernel ÷ calibration per repetition."""
        return tuple(k / c for k, c in zip(self.kernel, self.calibration, strict=True))


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
    clock = time.perf_counter
    k_times: list[float] = []
    c_times: list[float] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repetitions):
            start = clock()
            kernel()
            mid = clock()
            if calibration is not None:
                calibration()
                c_times.append(clock() - mid)
            else:
                c_times.append(1.0)
            k_times.append(mid - start)
    finally:
        if was_enabled:
            gc.enable()
    return TimedSamples(kernel=tuple(k_times), calibration=tuple(c_times))


def peak_mlx_memory(fn: Callable[[], Any]) -> int:
    """Run ``fn`` once and return MLX's peak memory counter (bytes) over that run."""
    import mlx.core as mx

    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()
    fn()
    return int(mx.get_peak_memory())
