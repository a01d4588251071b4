"""The quarterly ``benchmark`` check: every kernel × batch config, scaling with rows, a report.

For each kernel it times the MLX implementation and its NumPy float32 peer side by side
(same inputs, same process) at every batch config (in that config's mode) and at every
size in ``sizes`` (in the profile's mode), then fits the log-log slope of latency against
rows (1 is linear growth). Measurements (labels ``kernel``, ``batch`` or ``rows``, ``impl``
= ``mlx`` | ``numpy``, ``profile_id``, ``seed``):

``benchmark_latency_seconds``
    Median latency of one batch (labels ``batch`` for configs, ``rows`` for the sweep).
``benchmark_ci_half_width_ratio``
    Half-width of the median's 95 % interval over the median (batch configs only).
``mlx_speedup_ratio``
    NumPy float32 median over MLX median at each batch config (> 1: MLX is faster).
``scaling_slope_score``
    Log-log slope of latency against rows over the sweep (labels ``kernel``, ``impl``).

The report goes to ``<state_dir>/reports/benchmark-<run_id>.{json,md,png}`` (folder 0700,
files 0600): JSON with every figure, Markdown with a table per kernel, and a PNG of latency
against batch size per kernel, MLX and NumPy with their fitted slopes; a slope above
``SUPERLINEAR_SLOPE`` is marked "worse than linear" in both (a presentation, not an alert).

Options: ``repetitions`` (100, against the daily tier's 40: one run of the tier took 42 s
with 30 on the 2-core reference host, so 100 stays well inside its 15-minute budget),
``warmup`` (3), ``sizes`` (128, 256, 512, 1024, 2048), ``input_seed`` (0), and those of
:mod:`checks.common`.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, final

from checks.api import CheckContext, CheckResult, Measurement
from checks.common import (
    batch_profile,
    labels,
    load_active_profile,
    option_int,
    select_batches,
    select_kernels,
)

__all__ = ["SUPERLINEAR_SLOPE", "BenchmarkCheck", "write_report"]

#: A log-log slope above this is growth worse than linear in the report.
SUPERLINEAR_SLOPE = 1.1
DEFAULT_SIZES: tuple[int, ...] = (128, 256, 512, 1024, 2048)
IMPLS: tuple[str, ...] = ("mlx", "numpy")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) through a temp file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _markdown(report: Mapping[str, Any]) -> str:
    """Return the report as Markdown: one section per kernel."""
    lines = [
        f"# kernelwatch benchmark {report['run_id']}",
        "",
        f"Profile `{report['profile_id']}`, input seed {report['seed']}, "
        f"{report['repetitions']} timed repetitions per point.",
        "",
    ]
    for name, kernel in report["kernels"].items():
        lines += [f"## {name}", "", "| batch | rows | mode | MLX (ms) | NumPy f32 (ms) | speedup |"]
        lines.append("|---|---:|---|---:|---:|---:|")
        for row in kernel["batches"]:
            lines.append(
                f"| {row['batch']} | {row['rows']} | {row['mode']} | "
                f"{row['mlx_seconds'] * 1e3:.3f} | {row['numpy_seconds'] * 1e3:.3f} | "
                f"{row['speedup']:.2f}× |"
            )
        lines += ["", "| scaling | slope (log-log) | growth |", "|---|---:|---|"]
        for impl in IMPLS:
            slope = kernel["slopes"][impl]
            growth = "worse than linear" if slope > SUPERLINEAR_SLOPE else "linear or better"
            lines.append(f"| {impl} | {slope:.2f} | {growth} |")
        lines.append("")
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {note}" for note in report["notes"]] + [""]
    return "\n".join(lines)


def _plot(report: Mapping[str, Any], path: Path) -> None:
    """Draw latency against rows per kernel (log-log), MLX and NumPy with fitted slopes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernels = list(report["kernels"].items())
    cols = max(1, len(kernels))
    fig, axes = plt.subplots(1, cols, figsize=(4.8 * cols, 4.2), squeeze=False)
    try:
        for ax, (name, kernel) in zip(axes[0], kernels, strict=False):
            for impl, style in zip(IMPLS, ("o-", "s--"), strict=True):
                rows = [p["rows"] for p in kernel["sweep"]]
                secs = [p[f"{impl}_seconds"] * 1e3 for p in kernel["sweep"]]
                slope = kernel["slopes"][impl]
                flag = " (worse than linear)" if slope > SUPERLINEAR_SLOPE else ""
                ax.plot(rows, secs, style, label=f"{impl}: slope {slope:.2f}{flag}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(name)
            ax.set_xlabel("batch rows")
            ax.set_ylabel("median latency (ms)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"kernelwatch benchmark {report['run_id']}")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    _write_private(path, buf.getvalue())


def write_report(report: Mapping[str, Any], folder: Path) -> dict[str, str]:
    """Write the JSON, Markdown and PNG report into ``folder`` (0700); return their paths."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    stem = f"benchmark-{report['run_id']}"
    paths = {
        "json": folder / f"{stem}.json",
        "markdown": folder / f"{stem}.md",
        "png": folder / f"{stem}.png",
    }
    _write_private(paths["json"], (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    _write_private(paths["markdown"], _markdown(report).encode())
    _plot(report, paths["png"])
    return {kind: str(path) for kind, path in paths.items()}


def _time_pair(
    mlx_call: Callable[[], Any], numpy_call: Callable[[], Any], repetitions: int, warmup: int
) -> tuple[Sequence[float], Sequence[float]]:
    """Time MLX and NumPy alternately (one after the other each repetition)."""
    from checks.timing import time_interleaved

    timed = time_interleaved(mlx_call, numpy_call, repetitions=repetitions, warmup=warmup)
    return timed.kernel, timed.calibration


@final
class BenchmarkCheck:
    """Benchmarks every kernel × batch config and writes a report (see the module)."""

    name = "benchmark"
    tier = "quarterly"
    timeout_s = 1800.0

    def run(self, context: CheckContext) -> CheckResult:
        """Time every kernel, fit its scaling, write the report, return the measurements."""
        import numpy as np

        from checks.stats import loglog_slope, median_ci

        options = context.options
        repetitions = option_int(options, "repetitions", 100, minimum=2)
        warmup = option_int(options, "warmup", 3)
        input_seed = option_int(options, "input_seed", 0, minimum=0)
        sizes = tuple(int(n) for n in options.get("sizes", DEFAULT_SIZES))
        if len(sizes) < 2 or any(n < 1 for n in sizes):
            raise ValueError(f"option 'sizes' needs two or more positive ints, got {sizes!r}")
        profile = load_active_profile(context)
        kernels, notes = select_kernels(context)
        measurements: list[Measurement] = []
        report: dict[str, Any] = {
            "run_id": context.run_id,
            "profile_id": profile.profile_id,
            "seed": input_seed,
            "repetitions": repetitions,
            "sizes": list(sizes),
            "kernels": {},
            "notes": notes,
        }
        for kernel in kernels.values():
            base = labels(kernel.name, profile, input_seed)

            def add(
                name: str, value: float, unit: str, base: dict[str, str] = base, **extra: str
            ) -> None:
                measurements.append(
                    Measurement(name=name, value=value, unit=unit, labels={**base, **extra})
                )

            def calls(prof: Any, rows: int, k: Any = kernel) -> tuple[Any, Any]:
                rng = np.random.default_rng([input_seed, zlib.crc32(k.name.encode()), rows])
                inputs = k.make_inputs(rng, rows, prof)
                return (
                    lambda: k.run_mlx(inputs, prof),
                    lambda: k.run_reference(inputs, prof, np.float32),
                )

            batches = []
            for batch in select_batches(kernel, options):
                prof = batch_profile(profile, batch)
                mlx_t, np_t = _time_pair(*calls(prof, batch.rows), repetitions, warmup)
                mlx_s, np_s = median_ci(mlx_t), median_ci(np_t)
                for impl, summary in (("mlx", mlx_s), ("numpy", np_s)):
                    add(
                        "benchmark_latency_seconds",
                        summary.median,
                        "seconds",
                        batch=batch.name,
                        impl=impl,
                    )
                    add(
                        "benchmark_ci_half_width_ratio",
                        summary.half_width_ratio,
                        "ratio",
                        batch=batch.name,
                        impl=impl,
                    )
                speedup = np_s.median / mlx_s.median
                add("mlx_speedup_ratio", speedup, "ratio", batch=batch.name)
                batches.append(
                    {
                        "batch": batch.name,
                        "rows": batch.rows,
                        "mode": prof.vectorization,
                        "mlx_seconds": mlx_s.median,
                        "mlx_ci_seconds": [mlx_s.low, mlx_s.high],
                        "numpy_seconds": np_s.median,
                        "numpy_ci_seconds": [np_s.low, np_s.high],
                        "speedup": speedup,
                    }
                )
            sweep = []
            for rows in sizes:
                mlx_t, np_t = _time_pair(*calls(profile, rows), repetitions, warmup)
                point = {
                    "rows": rows,
                    "mlx_seconds": float(np.median(mlx_t)),
                    "numpy_seconds": float(np.median(np_t)),
                }
                sweep.append(point)
                for impl in IMPLS:
                    add(
                        "benchmark_latency_seconds",
                        point[f"{impl}_seconds"],
                        "seconds",
                        rows=str(rows),
                        impl=impl,
                    )
            slopes = {
                impl: loglog_slope(sizes, [p[f"{impl}_seconds"] for p in sweep]) for impl in IMPLS
            }
            for impl, slope in slopes.items():
                add("scaling_slope_score", slope, "score", impl=impl)
                if slope > SUPERLINEAR_SLOPE:
                    notes.append(
                        f"{kernel.name} ({impl}): latency grows worse than linear, "
                        f"slope {slope:.2f}"
                    )
            report["kernels"][kernel.name] = {
                "description": kernel.description,
                "batches": batches,
                "sweep": sweep,
                "slopes": slopes,
            }
        paths = write_report(report, Path(context.state_dir) / "reports")
        return CheckResult(
            check=self.name,
            measurements=tuple(measurements),
            notes=(*notes, f"report: {paths['markdown']}"),
            details={"report": paths, "profile_id": profile.profile_id, "seed": input_seed},
        )
