"""The monthly ``coherence`` check: quantum evolution against float64, and QFI against 4·Var(H).

For each state size n in ``sizes`` (16, 32, 64) it evolves a seeded batch of random density
matrices with the MLX kernel at the profile's precision and with the float64 oracle.
Measurements (labels ``kernel``, ``size`` such as ``n16``, ``profile_id``, ``seed``; the
batch is drawn from ``numpy.random.default_rng([seed, n])``):

kernel ``quantum``
    ``quantum_state_deviation_distance`` (max trace distance to float64),
    ``trace_error_ratio`` (max |tr ρ' − 1|), ``hermiticity_error_ratio`` (max |ρ' − ρ'†|),
    ``min_eigenvalue_score`` (MLX output), ``reference_min_eigenvalue_score`` (float64),
    ``purity_error_ratio`` (max |tr ρ'² − tr ρ²|), ``l1_coherence_score`` (mean C(ρ') of
    the MLX output) and ``l1_coherence_error_score`` (max |C_mlx − C_float64|).
kernel ``fisher`` (no ``size`` label)
    ``qfi_error_ratio``: the worst |F_Q − 4·Var_ψ(H)| / max(1, 4·Var) over ``qfi_states``
    random pure states.

Options: ``sizes`` (list of int), ``batch`` (32 states), ``qfi_states`` (16), and
``skip_kernels`` / ``kernels`` of :mod:`checks.common`.
"""

from __future__ import annotations

from typing import final

from checks.api import CheckContext, CheckResult, Measurement
from checks.common import labels, load_active_profile, option_int, select_kernels

__all__ = ["QUANTUM_NAMES", "CoherenceCheck"]

#: Key of ``kernels.quantum.coherence_measurements`` → (measurement name, unit).
QUANTUM_NAMES: dict[str, tuple[str, str]] = {
    "state_deviation": ("quantum_state_deviation_distance", "distance"),
    "trace_error": ("trace_error_ratio", "ratio"),
    "hermiticity_error": ("hermiticity_error_ratio", "ratio"),
    "min_eigenvalue": ("min_eigenvalue_score", "score"),
    "reference_min_eigenvalue": ("reference_min_eigenvalue_score", "score"),
    "purity_change": ("purity_error_ratio", "ratio"),
    "l1_coherence": ("l1_coherence_score", "score"),
    "l1_coherence_error": ("l1_coherence_error_score", "score"),
}
DEFAULT_SIZES: tuple[int, ...] = (16, 32, 64)


@final
class CoherenceCheck:
    """Measures quantum evolution against its float64 oracle, and QFI (see the module)."""

    name = "coherence"
    tier = "monthly"
    timeout_s = 900.0

    def run(self, context: CheckContext) -> CheckResult:
        """Measure each state size once and the QFI on random pure states."""
        import numpy as np

        from kernels import fisher, quantum

        options = context.options
        profile = load_active_profile(context)
        kernels, notes = select_kernels(context, default=("quantum", "fisher"))
        raw_sizes = options.get("sizes", DEFAULT_SIZES)
        sizes = tuple(int(n) for n in raw_sizes)
        if not sizes or any(n < 1 for n in sizes):
            raise ValueError(f"option 'sizes' must be positive ints, got {raw_sizes!r}")
        batch = option_int(options, "batch", 32)
        qfi_states = option_int(options, "qfi_states", 16)
        measurements: list[Measurement] = []
        if "quantum" in kernels:
            for n in sizes:
                lab = labels("quantum", profile, context.seed, size=f"n{n}")
                rng = np.random.default_rng([context.seed, n])
                values = quantum.coherence_measurements(profile, rng, batch=batch, n=n)
                for key, (name, unit) in QUANTUM_NAMES.items():
                    measurements.append(
                        Measurement(name=name, value=values[key], unit=unit, labels=lab)
                    )
        if "fisher" in kernels:
            worst = max(
                fisher.pure_state_qfi_error(profile, np.random.default_rng([context.seed, 0, i]))
                for i in range(qfi_states)
            )
            measurements.append(
                Measurement(
                    name="qfi_error_ratio",
                    value=worst,
                    unit="ratio",
                    labels=labels("fisher", profile, context.seed),
                )
            )
        return CheckResult(
            check=self.name,
            measurements=tuple(measurements),
            notes=tuple(notes),
            details={"profile_id": profile.profile_id, "seed": context.seed, "sizes": sizes},
        )
