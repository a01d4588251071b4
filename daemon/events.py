"""Every fact the daemon reports, as a small frozen dataclass that serialises to one JSON line.

The bus stamps each event with its UTC time, sequence number and host (``Event.stamped``);
publishers build events with only their own fields. ``to_record`` gives the JSONL record,
``event_from_record`` reads it back (for `telemetry tail`, state rebuilds and policy tests).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar

import orjson

from checks.api import Measurement

SCHEMA_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BASE_FIELDS = frozenset({"at", "seq", "host"})


def _jsonable(value: Any) -> Any:
    """Turn event field values into JSON values; non-finite floats become strings."""
    kind = type(value)
    # Exact-type checks first: telemetry serialises every event, and ABC isinstance is slow.
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if kind is Measurement:
        return value.to_record()
    if kind is tuple or kind is list:
        return [_jsonable(v) for v in value]
    if kind is dict or kind is MappingProxyType:
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events; ``at``/``seq``/``host`` are set by the bus when published."""

    at: datetime = _EPOCH
    seq: int = 0
    host: str = ""

    type_name: ClassVar[str] = "Event"
    registry: ClassVar[dict[str, type[Event]]] = {}

    def __init_subclass__(cls) -> None:
        # No super() call: slots=True rebuilds each class, which breaks zero-argument super,
        # and object.__init_subclass__ does nothing. The rebuilt class registers last.
        cls.type_name = cls.__name__
        Event.registry[cls.__name__] = cls

    def stamped(self, *, at: datetime, seq: int, host: str) -> Event:
        """Return a copy carrying the bus's stamp."""
        return dataclasses.replace(self, at=at, seq=seq, host=host)

    def payload(self) -> dict[str, Any]:
        """The event's own fields, JSON-ready, without the stamp."""
        return {name: _jsonable(getattr(self, name)) for name in _payload_names(type(self))}

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "type": self.type_name,
            "seq": self.seq,
            "at": self.at.astimezone(UTC).isoformat(),
            "host": self.host,
        }
        record.update(self.payload())
        return record

    def to_json(self, *, newline: bool = False) -> bytes:
        """Return ``orjson.dumps(self.to_record())``, byte for byte, in a third of the time;
        with ``newline``, followed by ``\\n`` (the telemetry line, without another copy).

        Telemetry serialises every event, and building the record costs most of the sink's
        time per record. Each class gets a serialiser generated once from its annotations,
        as dataclasses generate ``__init__``: one dict display of its fields in record
        order, converting only the fields whose type needs it. A field holding a type its
        annotation does not promise takes the exact, slower way.
        """
        option = orjson.OPT_APPEND_NEWLINE if newline else 0
        try:
            return (_SERIALISERS.get(type(self)) or _serialiser(type(self)))(self, option)
        except (TypeError, ValueError, AttributeError):
            return orjson.dumps(self.to_record(), option=option)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else repr(value)


def _measurement_records(value: tuple[Measurement, ...]) -> list[dict[str, Any]]:
    return [m.to_record() for m in value]


def _plain_dict(value: Mapping[str, str]) -> Mapping[str, str]:
    # A MappingProxyType's copy() is a dict, several times faster than dict(proxy); anything
    # but a dict or a proxy takes the exact way (TypeError), as _jsonable would spell it.
    if type(value) is MappingProxyType:
        return value.copy()
    if type(value) is dict:
        return value
    raise TypeError(f"labels of type {type(value).__name__}")


# How a generated serialiser converts a field, by its annotation (None: orjson writes the
# value as it is, as _jsonable would). An annotation not listed here goes through _jsonable.
_JSON_CONVERTERS: dict[str, Callable[[Any], Any] | None] = {
    "str": None,
    "int": None,
    "bool": None,
    "int | None": None,
    "tuple[str, ...]": None,
    "datetime": _utc,
    "float": _finite_or_text,
    "Mapping[str, str]": _plain_dict,
    "tuple[Measurement, ...]": _measurement_records,
}

Serialiser = Callable[[Any, int], bytes]
_SERIALISERS: dict[type[Event], Serialiser] = {}


def _serialiser(cls: type[Event]) -> Serialiser:
    """The generated serialiser of ``cls``, compiled on first use."""
    serialiser = _SERIALISERS.get(cls)
    if serialiser is None:
        serialiser = _SERIALISERS[cls] = _compile_serialiser(cls)
    return serialiser


def _compile_serialiser(cls: type[Event]) -> Serialiser:
    """Generate ``def to_json(self, option): return dumps({...}, option=option)`` for ``cls``.

    The source holds only ``repr``s of the class's own field and type names (identifiers
    checked by dataclasses) and indices into a tuple of converter functions.
    """
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    converters: list[Callable[[Any], Any]] = []
    items = [
        f'"schema": {SCHEMA_VERSION!r}',
        f'"type": {cls.type_name!r}',
        '"seq": self.seq',
        '"at": at if at.tzinfo is UTC else at.astimezone(UTC)',
        '"host": self.host',
    ]
    for name in _payload_names(cls):
        convert = _JSON_CONVERTERS.get(types[name], _jsonable)
        if convert is None:
            items.append(f"{name!r}: self.{name}")
        else:
            items.append(f"{name!r}: convert[{len(converters)}](self.{name})")
            converters.append(convert)
    body = ",\n        ".join(items)
    source = (
        "def to_json(self, option):\n"
        "    at = self.at\n"
        f"    return dumps({{\n        {body},\n    }}, option=option)\n"
    )
    namespace: dict[str, Any] = {"dumps": orjson.dumps, "UTC": UTC, "convert": tuple(converters)}
    exec(compile(source, f"<to_json of {cls.type_name}>", "exec"), namespace)  # noqa: S102
    serialiser: Serialiser = namespace["to_json"]
    return serialiser


_PAYLOAD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _payload_names(cls: type[Event]) -> tuple[str, ...]:
    """The names of a class's own fields, computed once per class (``fields()`` is slow)."""
    names = _PAYLOAD_NAMES.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS)
        _PAYLOAD_NAMES[cls] = names
    return names


def event_from_record(record: Mapping[str, Any]) -> Event:
    """Rebuild an event from its JSONL record; raises ``ValueError`` naming what is wrong."""
    if record.get("schema") != SCHEMA_VERSION:
        raise ValueError(f"unsupported event schema {record.get('schema')!r}")
    cls = Event.registry.get(str(record.get("type")))
    if cls is None:
        raise ValueError(f"unknown event type {record.get('type')!r}")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in record:
            continue
        value = record[f.name]
        if f.name == "at":
            value = datetime.fromisoformat(value)
        elif f.name == "measurements":
            value = tuple(Measurement.from_record(m) for m in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


# --- daemon lifecycle -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonStarted(Event):
    """The daemon finished start-up and is scheduling."""

    version: str
    pid: int
    config_source: str
    state_dir: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonStopping(Event):
    """The daemon began a graceful shutdown."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReloaded(Event):
    """A new configuration was validated and swapped in."""

    source: str
    digest: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigRejected(Event):
    """A reload found the configuration invalid; the running one is kept."""

    source: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockJumped(Event):
    """Wall time moved unlike monotonic time (suspend, NTP step); the schedule was recomputed."""

    expected: str
    observed: str
    delta_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberFailed(Event):
    """A bus subscriber raised while handling an event; the others were unaffected."""

    subscriber: str
    event_type: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryRepaired(Event):
    """A torn last line (from a crash) was truncated from a telemetry file at start."""

    file: str
    bytes_truncated: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSetAside(Event):
    """A state file failed to load; it was renamed aside, never deleted."""

    path: str
    moved_to: str
    reason: str


# --- scheduling -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunScheduled(Event):
    """A tier run was queued. ``trigger``: cron, catch_up, manual, profile_change, verify."""

    run_id: str
    tier: str
    trigger: str
    scheduled_for: str
    window_end: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunMissed(Event):
    """A scheduled run could not be caught up (past its grace, or its window closed)."""

    tier: str
    scheduled_for: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunDropped(Event):
    """A run ended before all its checks ran. ``reason``: ``window_closed`` (its window
    closed first) or ``stopping`` (the daemon stopped; it is run again at the next start,
    within its grace); ``skipped``: the checks that never ran."""

    run_id: str
    tier: str
    window_end: str
    reason: str = "window_closed"
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    """A tier run began executing its checks."""

    run_id: str
    tier: str
    trigger: str
    checks: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCompleted(Event):
    """A tier run ended; ``succeeded`` means every check produced a result (no timeout/crash)."""

    run_id: str
    tier: str
    status: str
    succeeded: bool
    duration_s: float


# --- checks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckStarted(Event):
    """A check's child process started, with its deadline and input seed."""

    run_id: str
    tier: str
    check: str
    pid: int
    deadline_s: float
    seed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckCompleted(Event):
    """A check returned its measurements."""

    run_id: str
    tier: str
    check: str
    duration_s: float
    peak_rss_bytes: int
    measurements: tuple[Measurement, ...]
    notes: tuple[str, ...] = ()
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckTimedOut(Event):
    """A check was killed at its deadline (status UNKNOWN)."""

    run_id: str
    tier: str
    check: str
    deadline_s: float
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckCancelled(Event):
    """The daemon killed a check's process because it is stopping: no verdict, no crash."""

    run_id: str
    tier: str
    check: str
    duration_s: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckCrashed(Event):
    """A check's process exited abnormally or by a signal (status UNKNOWN)."""

    run_id: str
    tier: str
    check: str
    exit_code: int | None
    signal: int | None
    duration_s: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckEvaluated(Event):
    """The evaluator's verdict on one check run: ok, warning, critical or unknown.

    ``kernel_status`` gives the verdict per kernel (from the measurements' ``kernel`` label).
    """

    run_id: str
    tier: str
    check: str
    status: str
    kernel_status: Mapping[str, str] = dataclasses.field(default_factory=dict)


# --- evaluation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdCrossed(Event):
    """A rule's series raised an issue (or escalated it to critical)."""

    rule: str
    issue: str
    level: str
    measurement: str
    labels: Mapping[str, str]
    value: float
    threshold: float
    tier: str
    check: str
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdCleared(Event):
    """A rule's series passed enough times in a row; its issue is closed."""

    rule: str
    issue: str
    measurement: str
    labels: Mapping[str, str]
    value: float
    tier: str
    check: str
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FingerprintChanged(Event):
    """The host's stable environment fingerprint changed; baselines are stale."""

    previous: str
    current: str
    changed_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineRecorded(Event):
    """Performance baseline samples were stored for a fingerprint."""

    fingerprint: str
    samples: int
    reason: str


# --- recovery ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileChanged(Event):
    """The active kernel profile changed (by a person, a deployment or a procedure)."""

    profile_id: str
    previous_id: str
    cause: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointCreated(Event):
    """A checkpoint of the active profile was written."""

    checkpoint_id: str
    profile_id: str
    stable: bool
    score: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointCorrupt(Event):
    """A checkpoint failed its checksum; it is skipped."""

    checkpoint_id: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryStarted(Event):
    """A recovery procedure started for an open issue."""

    attempt_id: str
    procedure: str
    issue: str
    attempt: int
    trigger: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverySucceeded(Event):
    """A procedure ran and verification found its issue cleared."""

    attempt_id: str
    procedure: str
    issue: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryFailed(Event):
    """A procedure could not complete."""

    attempt_id: str
    procedure: str
    issue: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryIneffective(Event):
    """A procedure ran but verification found the issue still open."""

    attempt_id: str
    procedure: str
    issue: str
    attempts_in_window: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverySkipped(Event):
    """The policy declined to act: cooldown, attempts exhausted, or alert-only."""

    procedure: str
    issue: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyAborted(Event):
    """The last resort ran: forensic checkpoint, stop command, kernels marked aborted."""

    issue: str
    kernels: tuple[str, ...]
    checkpoint_id: str
    stop_command_exit: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelsResumed(Event):
    """Aborted kernels were resumed by a person (`kernelwatch resume`)."""

    kernels: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeRestored(Event):
    """Conservative mode ended after enough healthy runs; the previous mode is back."""

    mode: str
    healthy_runs: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillInjected(Event):
    """A drill deliberately corrupted the active profile."""

    fault: str
    profile_id: str


ALL_EVENT_TYPES: tuple[type[Event], ...] = tuple(Event.registry.values())
