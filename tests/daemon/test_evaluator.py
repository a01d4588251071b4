"""Tests for the evaluator: levels, hysteresis, escalation, persistence across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from checks.api import Measurement, Status
from daemon.config import Rule
from daemon.evaluator import Evaluation, Evaluator, level_of
from daemon.events import ThresholdCleared, ThresholdCrossed

DRIFT = Rule(
    name="drift",
    measurement="geometric_ratio_drift_ratio",
    issue="geometric_drift",
    warn=0.001,
    crit=0.01,
    raise_after=2,
    clear_after=2,
)
CACHE = Rule(
    name="cache",
    measurement="cache_efficiency_ratio",
    issue="cache_miss",
    direction="below",
    warn=0.9,
    crit=0.5,
)


class MemoryStore:
    """The evaluator's key/value seam, in memory, standing in for a reopened StateStore."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def items(self, namespace: str) -> dict[str, Any]:
        return dict(self.data.get(namespace, {}))

    def put_json(self, namespace: str, key: str, value: Any) -> None:
        self.data.setdefault(namespace, {})[key] = value

    def delete(self, namespace: str, key: str) -> None:
        self.data.get(namespace, {}).pop(key, None)


def drift(value: float, seed: str = "1") -> Measurement:
    return Measurement(
        name="geometric_ratio_drift_ratio",
        value=value,
        unit="ratio",
        labels={"kernel": "octahedron", "seed": seed},
    )


def run(ev: Evaluator, *values: float) -> list[Evaluation]:
    return [
        ev.evaluate(run_id=str(i), tier="weekly", check="geometry", measurements=[drift(v, str(i))])
        for i, v in enumerate(values)
    ]


def test_levels_follow_direction_and_thresholds() -> None:
    """Above-rules breach above, below-rules below; non-finite values are critical."""
    assert level_of(DRIFT, 0.0005) is None
    assert level_of(DRIFT, 0.005) == "warning"
    assert level_of(DRIFT, 0.05) == "critical"
    assert level_of(CACHE, 0.95) is None
    assert level_of(CACHE, 0.8) == "warning"
    assert level_of(CACHE, 0.4) == "critical"
    assert level_of(DRIFT, float("nan")) == "critical"


def test_raises_only_after_consecutive_breaches() -> None:
    """One breach is not enough when raise_after is 2; the second raises."""
    results = run(Evaluator([DRIFT]), 0.005, 0.005)
    assert results[0].events == ()
    assert results[0].status == Status.OK
    (event,) = results[1].events
    assert isinstance(event, ThresholdCrossed)
    assert (event.issue, event.level, event.threshold) == ("geometric_drift", "warning", 0.001)
    assert results[1].status == Status.WARNING
    assert results[1].kernel_status == {"octahedron": Status.WARNING}


def test_flapping_never_raises() -> None:
    """Alternating breach and pass never reaches raise_after=2."""
    results = run(Evaluator([DRIFT]), 0.005, 0.0, 0.005, 0.0, 0.005)
    assert all(r.events == () for r in results)


def test_clears_after_consecutive_passes_and_escalates_once() -> None:
    """A warning escalates to critical once, and clears only after clear_after passes."""
    results = run(Evaluator([DRIFT]), 0.005, 0.005, 0.05, 0.05, 0.0, 0.0)
    kinds = [[(type(e).__name__, getattr(e, "level", "")) for e in r.events] for r in results]
    assert kinds == [
        [],
        [("ThresholdCrossed", "warning")],
        [("ThresholdCrossed", "critical")],
        [],
        [],
        [("ThresholdCleared", "")],
    ]
    assert results[4].status == Status.CRITICAL  # still open until cleared
    assert results[5].status == Status.OK


def test_state_survives_a_restart(tmp_path: Path) -> None:
    """Counters and open issues are restored from the store by a new evaluator."""
    store = MemoryStore()
    run(Evaluator([DRIFT], store), 0.005)
    restarted = Evaluator([DRIFT], store)
    (second,) = run(restarted, 0.005)
    assert [type(e) for e in second.events] == [ThresholdCrossed]
    again = Evaluator([DRIFT], store)
    assert again.open_issues() == {"geometric_drift": 1}
    cleared = run(again, 0.0, 0.0)
    assert isinstance(cleared[1].events[0], ThresholdCleared)


def test_volatile_labels_do_not_split_series() -> None:
    """A different seed per run is the same series; a different kernel is another series."""
    ev = Evaluator([DRIFT])
    run(ev, 0.005, 0.005)
    assert ev.open_issues() == {"geometric_drift": 1}
    other = Measurement(
        name="geometric_ratio_drift_ratio", value=0.005, unit="ratio", labels={"kernel": "k2"}
    )
    ev.evaluate(run_id="x", tier="weekly", check="g", measurements=[other])
    assert len(ev.open_series()) == 1


def test_stateless_evaluation_judges_by_level_and_keeps_no_state() -> None:
    """The one-shot CLI sees the current level at once and leaves no counters behind."""
    store = MemoryStore()
    ev = Evaluator([DRIFT], store)
    result = ev.evaluate(
        run_id="1", tier="weekly", check="g", measurements=[drift(0.05)], stateless=True
    )
    assert result.status == Status.CRITICAL
    assert result.events == ()
    assert store.items("evaluator") == {}


def test_rule_label_selectors_restrict_matches() -> None:
    """A rule with labels only judges measurements carrying those labels."""
    rule = Rule(
        name="only_large",
        measurement="geometric_ratio_drift_ratio",
        issue="i",
        warn=0.001,
        labels={"kernel": "other"},
    )
    (result,) = run(Evaluator([rule]), 0.5)
    assert result.status == Status.OK


def test_removed_rules_drop_their_state() -> None:
    """After a reload without a rule, its open series no longer count as open issues."""
    store = MemoryStore()
    ev = Evaluator([DRIFT], store)
    run(ev, 0.005, 0.005)
    ev.set_rules([CACHE])
    assert ev.open_issues() == {}
    assert store.items("evaluator") == {}


def test_open_series_remember_their_tier_and_check_across_a_restart() -> None:
    """An open series names the tier and check that measured it, after a restart too."""
    store = MemoryStore()
    run(Evaluator([DRIFT], store), 0.002, 0.002)
    (series,) = Evaluator([DRIFT], store).open_series()
    assert (series.issue, series.tier, series.check) == ("geometric_drift", "weekly", "geometry")


def test_series_saved_without_tier_and_check_learn_them_at_the_next_run() -> None:
    """State written before tier and check were kept loads, and the next run fills them in."""
    store = MemoryStore()
    run(Evaluator([DRIFT], store), 0.002, 0.002)
    for doc in store.data["evaluator"].values():
        del doc["tier"], doc["check"]
    ev = Evaluator([DRIFT], store)
    assert [(s.tier, s.check) for s in ev.open_series()] == [("", "")]
    run(ev, 0.002)
    assert [(s.tier, s.check) for s in ev.open_series()] == [("weekly", "geometry")]
