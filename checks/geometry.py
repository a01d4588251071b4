"""The weekly ``geometry`` check: octahedron invariants and Fisher metric validation.

Measurements (labels ``kernel``, ``profile_id``, ``seed``; each invariant draws its random
inputs from ``numpy.random.default_rng([seed, i])``, so any value can be replayed):

kernel ``octahedron``
    ``geometric_ratio_drift_ratio`` (max |measured/canonical ratio − 1|),
    ``phase_drift_radians``, ``containment_violation_ratio`` (max ‖y_q‖₁/r_q − 1),
    ``idempotence_error_ratio``, ``symmetry_error_ratio`` (signed permutations),
    ``nonexpansiveness_violation_ratio`` and ``reference_error_distance`` (max |MLX − float64|).
kernel ``fisher``
    ``fisher_symmetry_error_ratio`` (max |G − Gᵀ|), ``fisher_min_eigenvalue_score``
    (smallest eigenvalue, float64), ``fisher_sparse_dense_error_ratio`` (relative quadratic
    form error of the CSR form), ``fisher_rao_axiom_violation_distance`` (largest violation
    of d(p, p) = 0, d ≥ 0, symmetry and the triangle inequality on random triples, radians),
    ``fisher_self_distance_radians``, ``fisher_disjoint_distance_error_radians``,
    ``reference_error_distance`` (max |MLX − float64| of the kernel's output, batch small)
    and ``fisher_metric_dense_fallback_bool``: 1 when the sparse form of some metric failed
    validation, so the dense form was used; each such reason is also a note of the result
    (and so of its ``CheckCompleted`` event).
any other kernel (user kernels)
    ``reference_error_distance`` (batch small), and ``invariant_value_score`` with an
    ``invariant`` label for each of its invariants.

Each invariant is measured on ``rounds`` (8) seeded draws and the worst value is reported
(the largest; the smallest for eigenvalues).

Options: ``rounds``, ``triples`` (64, Fisher–Rao triples), ``categories`` (32), and those of
:mod:`checks.common`; the monthly tier covers the ``quantum`` kernel instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, final

from checks.api import CheckContext, CheckResult, Measurement
from checks.common import labels, load_active_profile, option_int, select_kernels

if TYPE_CHECKING:
    import numpy as np

    from kernels.fisher import MetricValidation
    from kernels.profile import Profile
    from kernels.registry import Kernel

__all__ = [
    "OCTAHEDRON_NAMES",
    "GeometryCheck",
    "fisher_rao_axiom_violation",
    "metric_measurements",
]

#: Registry invariant name → measurement name, for the octahedron.
OCTAHEDRON_NAMES: dict[str, tuple[str, str]] = {
    "geometric_ratio_drift": ("geometric_ratio_drift_ratio", "ratio"),
    "phase_drift_radians": ("phase_drift_radians", "radians"),
    "containment_violation": ("containment_violation_ratio", "ratio"),
    "idempotence_error": ("idempotence_error_ratio", "ratio"),
    "symmetry_error": ("symmetry_error_ratio", "ratio"),
    "nonexpansiveness_violation": ("nonexpansiveness_violation_ratio", "ratio"),
    "reference_error": ("reference_error_distance", "distance"),
}
#: Registry invariant name → measurement name, for the Fisher kernel (QFI is monthly).
FISHER_NAMES: dict[str, tuple[str, str]] = {
    "self_distance_radians": ("fisher_self_distance_radians", "radians"),
    "disjoint_distance_error_radians": ("fisher_disjoint_distance_error_radians", "radians"),
}


def metric_measurements(
    validations: Sequence[MetricValidation],
) -> tuple[list[tuple[str, float, str]], list[str]]:
    """Return (name, value, unit) of the Fisher metric's validation figures, and notes.

    Each figure is the worst over ``validations`` (the smallest eigenvalue, the largest
    errors); ``fisher_metric_dense_fallback_bool`` is 1 when any sparse form failed
    validation, and each failure's reason becomes a note.
    """
    fell_back = [v for v in validations if v.fell_back]
    figures = [
        ("fisher_symmetry_error_ratio", max(v.symmetric_error for v in validations), "ratio"),
        ("fisher_min_eigenvalue_score", min(v.min_eigenvalue for v in validations), "score"),
        (
            "fisher_sparse_dense_error_ratio",
            max(v.quadratic_form_error for v in validations),
            "ratio",
        ),
        ("fisher_metric_dense_fallback_bool", 1.0 if fell_back else 0.0, "bool"),
    ]
    notes = [
        f"fisher metric: sparse form failed validation, dense used: {v.fallback_reason}"
        for v in fell_back
    ]
    return figures, notes


def fisher_rao_axiom_violation(
    distance: Callable[[Any, Any], Any], rng: np.random.Generator, *, triples: int, k: int
) -> float:
    """Return the largest violation of the metric axioms by ``distance`` on random triples.

    ``distance(p, q)`` is row-wise over (B, k) batches of distributions. Checked: d(p, p) = 0,
    d(p, q) ≥ 0, d(p, q) = d(q, p), and d(p, r) ≤ d(p, q) + d(q, r).
    """
    import numpy as np

    def dist() -> Any:
        e = rng.exponential(size=(triples, k))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    p, q, r = dist(), dist(), dist()
    pq, qp = np.asarray(distance(p, q)), np.asarray(distance(q, p))
    qr, pr = np.asarray(distance(q, r)), np.asarray(distance(p, r))
    pp = np.asarray(distance(p, p))
    violations = [
        np.abs(pp),
        np.maximum(-pq, 0),
        np.abs(pq - qp),
        np.maximum(pr - pq - qr, 0),
    ]
    return float(max(np.max(v) for v in violations))


def _reference_error(kernel: Kernel, profile: Profile, rng: np.random.Generator) -> float:
    """Return the kernel's error measure of its MLX output against float64 (smallest batch)."""
    import numpy as np

    rows = min(b.rows for b in kernel.batch_configs)
    inputs = kernel.make_inputs(rng, rows, profile)
    return float(
        kernel.max_error(
            kernel.run_mlx(inputs, profile), kernel.run_reference(inputs, profile, np.float64)
        )
    )


@final
class GeometryCheck:
    """Measures the octahedron's and Fisher kernel's invariants (see the module docstring)."""

    name = "geometry"
    tier = "weekly"
    timeout_s = 600.0

    def run(self, context: CheckContext) -> CheckResult:
        """Measure every invariant of every selected kernel once, with seeded inputs."""
        import numpy as np

        from kernels import fisher

        profile = load_active_profile(context)
        kernels, notes = select_kernels(context, default=("octahedron", "fisher"))
        triples = option_int(context.options, "triples", 64)
        categories = option_int(context.options, "categories", 32)
        rounds = option_int(context.options, "rounds", 8)
        measurements: list[Measurement] = []
        step = iter(range(1_000_000))

        def rng() -> np.random.Generator:
            return np.random.default_rng([context.seed, next(step)])

        for kernel in kernels.values():
            lab = labels(kernel.name, profile, context.seed)

            def add(
                name: str, value: float, unit: str, lab: dict[str, str] = lab, **extra: str
            ) -> None:
                measurements.append(
                    Measurement(name=name, value=value, unit=unit, labels={**lab, **extra})
                )

            def worst(key: str, k: Kernel = kernel) -> float:
                values = [k.invariants[key](rng(), profile) for _ in range(rounds)]
                return min(values) if "min_eigenvalue" in key else max(values)

            if kernel.name == "octahedron":
                for key, (name, unit) in OCTAHEDRON_NAMES.items():
                    add(name, worst(key), unit)
            elif kernel.name == "fisher":
                validations = [fisher.metric_validation(profile, rng()) for _ in range(rounds)]
                figures, metric_notes = metric_measurements(validations)
                for name, figure, unit in figures:
                    add(name, figure, unit)
                notes.extend(metric_notes)
                for key, (name, unit) in FISHER_NAMES.items():
                    add(name, worst(key), unit)
                add(
                    "fisher_rao_axiom_violation_distance",
                    fisher_rao_axiom_violation(
                        fisher.fisher_rao_mlx, rng(), triples=triples, k=categories
                    ),
                    "distance",
                )
                add(
                    "reference_error_distance", _reference_error(kernel, profile, rng()), "distance"
                )
            else:
                add(
                    "reference_error_distance", _reference_error(kernel, profile, rng()), "distance"
                )
                for key in kernel.invariants:
                    add("invariant_value_score", worst(key), "score", invariant=key)
        return CheckResult(
            check=self.name,
            measurements=tuple(measurements),
            notes=tuple(notes),
            details={"profile_id": profile.profile_id, "seed": context.seed},
        )
