"""Run the performance check once in a fresh process, as the daemon's child does.

The daemon runs each daily check in a new process, so consecutive runs share nothing but
the host; the regression power study and the tests that judge a rerun against a baseline
do the same, through this module:

    python -m bench.perf_child REQUEST_JSON RESULT_JSON

The request holds ``options``, ``profile_path`` (or null), ``slowdown``, the share of extra
CPU time the ``bench.checks`` slowed kernels spin after each call, and ``seed`` (7 when
absent); the result file receives the check's result record, details included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from checks.api import CheckResult

ROOT = Path(__file__).resolve().parents[1]


def run_in_fresh_process(
    folder: Path,
    options: dict[str, Any],
    *,
    slowdown: float = 0.0,
    seed: int = 7,
    profile_path: Path | None = None,
) -> CheckResult:
    """Run the check through this module in a new process; request and result go in
    ``folder``. Raises ``RuntimeError`` with the child's stderr when it fails."""
    from checks.api import CheckResult

    request, out = folder / "request.json", folder / "result.json"
    request.write_text(
        json.dumps(
            {
                "options": options,
                "profile_path": None if profile_path is None else str(profile_path),
                "slowdown": slowdown,
                "seed": seed,
            }
        )
    )
    argv = [sys.executable, "-m", "bench.perf_child", str(request), str(out)]
    # The timeout is a hang guard only.
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"perf_child exited {done.returncode}: {done.stderr}")
    return CheckResult.from_record(json.loads(out.read_text()))


def main(argv: list[str]) -> int:
    """Run the check as ``argv`` (request path, result path) says; return 0."""
    from bench import checks as bench_checks
    from checks.api import CheckContext
    from checks.performance import PerformanceCheck

    request = json.loads(Path(argv[0]).read_text())
    bench_checks.INJECTED["slowdown"] = float(request.get("slowdown", 0.0))
    profile_path = request.get("profile_path")
    context = CheckContext(
        tier="daily",
        state_dir=Path(argv[0]).parent,
        seed=int(request.get("seed", 7)),
        run_id="perf-child",
        options=request["options"],
        profile_path=None if profile_path is None else Path(profile_path),
    )
    result = PerformanceCheck().run(context)
    Path(argv[1]).write_text(json.dumps(result.to_record()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
