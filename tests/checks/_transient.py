"""A user kernel slowed for a set number of calls only: a host state that passes.

``SLOW_CALLS["left"]`` calls from now on each take ``SLOW_CALLS["factor"]`` times their own
CPU time (spinning, as extra work would); later calls run at full speed. The performance
check imports it through ``extra_kernels = ["tests.checks._transient:transient_fisher"]``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

SLOW_CALLS: dict[str, float] = {"left": 0, "factor": 2.0}


def transient_fisher() -> Any:
    """Return ``fisher_transient``: the Fisher kernel, slowed while ``SLOW_CALLS`` says so."""
    from kernels.registry import builtin_kernels

    base = builtin_kernels()["fisher"]

    def run_mlx(inputs: Any, profile: Any) -> Any:
        start = time.process_time()
        out = base.run_mlx(inputs, profile)
        if SLOW_CALLS["left"] > 0:
            SLOW_CALLS["left"] -= 1
            end = time.process_time() + (time.process_time() - start) * (SLOW_CALLS["factor"] - 1)
            while time.process_time() < end:
                pass
        return out

    return dataclasses.replace(base, name="fisher_transient", run_mlx=run_mlx)
