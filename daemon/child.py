"""The child entry point (``python -m daemon.child``): load one check, run it, report on a pipe.

The request arrives as JSON on stdin, with the number of an inherited pipe in
``result_fd``. The result goes to that pipe only, as ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": "<traceback>"}`` (plus ``peak_rss_bytes``, the process's own peak
RSS, where the platform tells it); stdout and stderr belong to the check, which may
print freely. Exit status 0 means a result was written, 1 that the check failed, 2 that the
request itself was unusable.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from checks.api import CheckContext, CheckResult
from checks.registry import CheckSpec, load_check
from daemon.runner import ChildRequest, peak_rss_of


def _run_check(request: ChildRequest) -> dict[str, Any]:
    """Load and run the check; every failure becomes an ``ok: false`` record."""
    try:
        check = load_check(CheckSpec(name=request.check, target=request.target))
        context = CheckContext(
            tier=request.tier,
            state_dir=Path(request.state_dir),
            seed=request.seed,
            run_id=request.run_id,
            options=request.options,
            profile_path=None if request.profile_path is None else Path(request.profile_path),
        )
        result = check.run(context)
        if not isinstance(result, CheckResult):
            raise TypeError(
                f"check {request.check!r} returned {type(result).__name__}, not CheckResult"
            )
        record = {"ok": True, "result": result.to_record(), "peak_rss_bytes": peak_rss_of()}
        json.dumps(record, allow_nan=False)  # fail here, with a traceback, not in main
    except BaseException:  # noqa: BLE001 - any exit from a check, SystemExit too, is its failure
        return {"ok": False, "error": traceback.format_exc(), "peak_rss_bytes": peak_rss_of()}
    return record


def main() -> int:
    """Read the request, run the check, write the result record; return the exit status."""
    # A check that segfaults or aborts leaves a Python stack in the stderr tail.
    faulthandler.enable()
    try:
        envelope = json.loads(sys.stdin.buffer.read())
        result_fd = int(envelope["result_fd"])
        request = ChildRequest.from_record(envelope["request"])
    except (ValueError, KeyError, TypeError):
        traceback.print_exc()
        return 2
    with os.fdopen(result_fd, "wb") as out:
        record = _run_check(request)
        out.write(json.dumps(record, allow_nan=False).encode())
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the result is delivered, and a thread the check left
    # running must not hold the child open until its deadline.
    os._exit(status)
