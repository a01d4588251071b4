"""Tests for event records: schema version, stamps, JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from checks.api import Measurement
from daemon.events import (
    ALL_EVENT_TYPES,
    SCHEMA_VERSION,
    CheckCompleted,
    ThresholdCrossed,
    event_from_record,
)

AT = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)


def test_record_carries_schema_type_seq_time_and_host() -> None:
    """Every record has the schema version, type name, sequence number, UTC time and host."""
    event = CheckCompleted(
        run_id="r1",
        tier="daily",
        check="runtime",
        duration_s=1.5,
        peak_rss_bytes=1024,
        measurements=(Measurement(name="child_startup_seconds", value=0.2, unit="seconds"),),
    ).stamped(at=AT, seq=7, host="h")
    record = event.to_record()
    assert record["schema"] == SCHEMA_VERSION
    assert record["type"] == "CheckCompleted"
    assert (record["seq"], record["host"]) == (7, "h")
    assert record["at"] == "2026-03-01T01:00:00+00:00"
    assert record["measurements"][0]["name"] == "child_startup_seconds"
    json.dumps(record, allow_nan=False)


def test_record_round_trips_through_json() -> None:
    """A record read back from JSON rebuilds an equal event."""
    event = ThresholdCrossed(
        rule="r",
        issue="geometric_drift",
        level="warning",
        measurement="geometric_ratio_drift_ratio",
        labels={"kernel": "octahedron"},
        value=0.01,
        threshold=0.001,
        tier="weekly",
        check="geometry",
        run_id="abc",
    ).stamped(at=AT, seq=3, host="h")
    back = event_from_record(json.loads(json.dumps(event.to_record())))
    assert back.to_record() == event.to_record()


def test_non_finite_values_serialise_as_strings() -> None:
    """NaN and infinity never produce invalid JSON."""
    event = ThresholdCrossed(
        rule="r",
        issue="i",
        level="critical",
        measurement="m_ratio",
        labels={},
        value=float("nan"),
        threshold=float("inf"),
        tier="t",
        check="c",
        run_id="x",
    )
    text = json.dumps(event.to_record(), allow_nan=False)
    assert '"nan"' in text
    assert '"inf"' in text


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda c: c.__name__)
def test_every_event_is_frozen_slotted_and_keyword_only(cls: type) -> None:
    """Events are immutable facts: frozen, slotted, keyword-only dataclasses."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen
    assert hasattr(cls, "__slots__")
    assert all(f.kw_only for f in dataclasses.fields(cls))


def test_unknown_schema_or_type_is_refused() -> None:
    """Reading back refuses records it does not understand instead of guessing."""
    with pytest.raises(ValueError, match="schema"):
        event_from_record({"schema": 99, "type": "CheckCompleted"})
    with pytest.raises(ValueError, match="unknown event type"):
        event_from_record({"schema": SCHEMA_VERSION, "type": "Nope"})


_SAMPLES: dict[str, object] = {
    "str": 'a "quoted" text',
    "int": 42,
    "bool": True,
    "int | None": None,
    "float": 0.1,
    "datetime": datetime(2026, 3, 1, 2, 30, 0, 123456, tzinfo=UTC),
    "tuple[str, ...]": ("octahedron", "quantum"),
    "Mapping[str, str]": {"kernel": "octahedron", "batch": "256"},
    "Mapping[str, Any]": {"nested": {"x": [1, 2.5]}, "at": datetime(2026, 3, 1, tzinfo=UTC)},
    "tuple[Measurement, ...]": (
        Measurement(name="a_seconds", value=0.5, unit="seconds", labels={"kernel": "k"}),
        Measurement(name="b_ratio", value=float("nan"), unit="ratio"),
    ),
}


def _sample(cls: type, **overrides: object) -> object:
    fields = [f for f in dataclasses.fields(cls) if f.name not in ("at", "seq", "host")]
    kwargs = {f.name: _SAMPLES[str(f.type)] for f in fields}
    kwargs.update(overrides)
    return cls(**kwargs).stamped(at=AT, seq=9, host="h")


@pytest.mark.parametrize("cls", ALL_EVENT_TYPES, ids=lambda c: c.__name__)
def test_to_json_is_the_compact_json_of_to_record(cls: type) -> None:
    """The telemetry fast path writes exactly the bytes of the record, for every event type."""
    event = _sample(cls)
    assert event.to_json() == orjson.dumps(event.to_record())  # type: ignore[attr-defined]


@pytest.mark.parametrize("mistyped", [False, True], ids=["exact types", "mistyped field"])
def test_to_json_with_newline_is_the_line_telemetry_writes(mistyped: bool) -> None:
    """newline=True appends exactly one newline, on the generated and the exact path alike."""
    event = _sample(ThresholdCrossed, **({"labels": {1: "int key"}} if mistyped else {}))
    line = event.to_json(newline=True)  # type: ignore[attr-defined]
    assert line == orjson.dumps(event.to_record()) + b"\n"  # type: ignore[attr-defined]


def test_to_json_writes_non_finite_floats_and_other_zones_as_the_record_does() -> None:
    """NaN, infinity and a non-UTC stamp come out as to_record spells them."""
    event = ThresholdCrossed(
        rule="r",
        issue="i",
        level="critical",
        measurement="m_ratio",
        labels={},
        value=float("nan"),
        threshold=float("-inf"),
        tier="t",
        check="c",
        run_id="x",
    ).stamped(at=datetime(2026, 3, 1, 3, 0, tzinfo=timezone(timedelta(hours=2))), seq=1, host="h")
    assert event.to_json() == orjson.dumps(event.to_record())
    assert b'"nan"' in event.to_json()
    assert b'"at":"2026-03-01T01:00:00+00:00"' in event.to_json()


def test_to_json_of_a_mistyped_field_falls_back_to_the_record() -> None:
    """A value of a type its annotation does not promise is still written exactly."""
    event = _sample(ThresholdCrossed, labels={1: "int key"}, run_id=("tuple", "not", "str"))
    assert event.to_json() == orjson.dumps(event.to_record())  # type: ignore[attr-defined]
    for mistyped in ({"value": "0.5"}, {"labels": [("kernel", "k")]}):
        event = _sample(ThresholdCrossed, **mistyped)
        assert event.to_json() == orjson.dumps(event.to_record())  # type: ignore[attr-defined]
