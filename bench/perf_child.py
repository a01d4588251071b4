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
import sys
from pathlib import Path


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
