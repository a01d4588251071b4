"""The quarterly benchmark: every kernel timed, scaling fitted, and a report that renders."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.image

from checks.api import CheckContext
from checks.benchmark import BenchmarkCheck, write_report


def test_report_renders_and_lists_every_kernel(tmp_path: Path) -> None:
    """JSON, Markdown and PNG are written privately; the PNG opens and every kernel is listed."""
    context = CheckContext(
        tier="quarterly",
        state_dir=tmp_path,
        seed=1,
        run_id="run42",
        options={"repetitions": 2, "warmup": 1, "sizes": [16, 32], "batches": ["small"]},
    )
    result = BenchmarkCheck().run(context)
    reports = tmp_path / "reports"
    assert stat.S_IMODE(reports.stat().st_mode) == 0o700
    paths = {kind: Path(p) for kind, p in result.details["report"].items()}
    for path in paths.values():
        assert path.parent == reports
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    image = matplotlib.image.imread(paths["png"])
    assert image.shape[0] > 100
    assert image.shape[1] > 100
    markdown = paths["markdown"].read_text()
    report = json.loads(paths["json"].read_text())
    assert set(report["kernels"]) == {"octahedron", "fisher", "quantum"}
    for kernel in report["kernels"]:
        assert f"## {kernel}" in markdown
    slopes = [m for m in result.measurements if m.name == "scaling_slope_score"]
    assert {(m.labels["kernel"], m.labels["impl"]) for m in slopes} == {
        (k, i) for k in report["kernels"] for i in ("mlx", "numpy")
    }
    assert {m.labels["impl"] for m in result.measurements if "impl" in m.labels} == {
        "mlx",
        "numpy",
    }


def test_growth_worse_than_linear_is_flagged(tmp_path: Path) -> None:
    """A kernel whose latency grows with slope 2 is marked worse than linear in the Markdown."""
    sweep = [{"rows": r, "mlx_seconds": r * r * 1e-9, "numpy_seconds": r * 1e-6} for r in (8, 16)]
    report: dict[str, Any] = {
        "run_id": "synthetic",
        "profile_id": "p",
        "seed": 0,
        "repetitions": 1,
        "notes": [],
        "kernels": {
            "square": {
                "batches": [],
                "sweep": sweep,
                "slopes": {"mlx": 2.0, "numpy": 1.0},
            }
        },
    }
    paths = write_report(report, tmp_path / "reports")
    markdown = Path(paths["markdown"]).read_text()
    assert "| mlx | 2.00 | worse than linear |" in markdown
    assert "| numpy | 1.00 | linear or better |" in markdown
