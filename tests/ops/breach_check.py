"""A user check for the end-to-end alert test: it always reports a critical measurement.

Configured with ``[checks.ops_breach] module = "tests.ops.breach_check:BreachCheck"`` and a
rule on ``ops_drill_deviation_distance`` whose critical threshold the value exceeds, so a real
daemon raises a real ThresholdCrossed and exports ``kernelwatch_tier_status{tier="daily"} 2``.
"""

from __future__ import annotations

from typing import final

from checks.api import CheckContext, CheckResult, Measurement

MEASUREMENT = "ops_drill_deviation_distance"
VALUE = 1.0  # far above the test rule's crit = 0.5


@final
class BreachCheck:
    """Reports ``ops_drill_deviation_distance = 1.0`` for kernel ``ops_drill``."""

    name = "ops_breach"
    tier = "daily"
    timeout_s = 60.0

    def run(self, context: CheckContext) -> CheckResult:
        """Return the breaching measurement; touches no kernel."""
        return CheckResult(
            check=self.name,
            measurements=(
                Measurement(
                    name=MEASUREMENT, value=VALUE, unit="distance", labels={"kernel": "ops_drill"}
                ),
            ),
            notes=(f"ops test breach for run {context.run_id}",),
        )
