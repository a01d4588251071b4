"""Tests for the CLI → daemon request inbox, the state lock, and the CLI without a daemon."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.bus import EventBus
from daemon.cli_recovery import main
from daemon.clock import FakeClock, SystemClock
from daemon.control import (
    Inbox,
    Request,
    StateLock,
    ask_daemon,
    new_request,
    requests_dir,
    submit,
    wait_result,
)
from daemon.errors import RecoveryError
from daemon.events import Event
from daemon.procedures import ABORTED_NAMESPACE, builtin_procedures, resume_kernels
from daemon.recovery import InlineWorker, RecoveryEngine
from daemon.recovery_config import RecoverySettings
from daemon.store import StateStore
from tests.helpers import telemetry_records, types_of


class Daemon:
    """The daemon's side, in process: a real store, bus, engine (inline worker) and inbox."""

    def __init__(self, state: Path, pending: tuple[str, ...] = ()) -> None:
        self.state = state
        self.clock = FakeClock(datetime(2026, 1, 4, 1, 0, tzinfo=UTC))
        self.store = StateStore.open(state / "state.sqlite3", clock=self.clock)
        self.bus = EventBus(self.clock, host="test")
        self.events: list[Event] = []
        self.bus.subscribe("record", self.events.append)
        self.engine = RecoveryEngine(
            bus=self.bus,
            clock=self.clock,
            store=self.store,
            state_dir=state,
            settings=RecoverySettings(),
            procedures=builtin_procedures(),
            enqueue=lambda *_a: None,
            tiers=dict,
            worker=InlineWorker(),
            watch_profile=False,
        )
        self.inbox = Inbox(
            state,
            clock=self.clock,
            recover=lambda procedure, attempt_id: self.engine.run_manual(
                procedure, attempt_id=attempt_id
            ),
            resume=lambda kernels: resume_kernels(self.store, kernels),
            pending=pending,
        )
        self.bus.subscribe("control", self.inbox)
        self.bus.subscribe("recovery", self.engine)
        self.engine.start()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    d.engine.close()
    d.store.close()


def answer(state: Path, request_id: str) -> dict[str, object]:
    result = wait_result(state, request_id, timeout_s=0.0, clock=SystemClock())
    assert result is not None, "no answer"
    return result


def test_recover_request_runs_through_the_engine_and_is_answered(daemon: Daemon) -> None:
    """A recover request is claimed on a tick, run as a manual attempt, answered with its
    events; the answer is read once, and no request file stays behind."""
    request = new_request("recover", procedure="emergency_abort")
    submit(daemon.state, request)
    folder = requests_dir(daemon.state)
    assert stat.S_IMODE((folder / f"{request.id}.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    daemon.inbox.tick()
    result = answer(daemon.state, request.id)
    assert result["ok"] is True
    events = result["events"]
    assert isinstance(events, list)
    assert [e["type"] for e in events] == ["RecoveryStarted", "RecoverySucceeded"]
    assert events[0]["attempt_id"] == request.id
    assert events[0]["trigger"] == "manual"
    assert "EmergencyAborted" in types_of([e.to_record() for e in daemon.events])
    assert list(folder.iterdir()) == []


def test_malformed_request_is_answered_with_an_error_naming_the_field(daemon: Daemon) -> None:
    """A request with a bad field is answered with an error naming the file and the field."""
    folder = requests_dir(daemon.state)
    (folder / "0123456789ab.json").write_text(json.dumps({"id": "0123456789ab", "kind": "nap"}))
    daemon.inbox.tick()
    result = answer(daemon.state, "0123456789ab")
    assert result["ok"] is False
    assert "0123456789ab.json: kind must be one of" in str(result["error"])


def test_request_claimed_before_a_crash_is_answered_as_interrupted(tmp_path: Path) -> None:
    """A claimed request whose attempt the engine did not keep is answered, not lost."""
    request = new_request("recover", procedure="emergency_abort")
    folder = requests_dir(tmp_path)
    (folder / f"{request.id}.taken").write_text(json.dumps(request.to_json()))
    d = Daemon(tmp_path)
    result = answer(tmp_path, request.id)
    assert result["ok"] is False
    assert f"see the telemetry for attempt {request.id}" in str(result["error"])
    d.store.close()


def test_request_of_an_attempt_resumed_after_a_restart_is_answered_at_its_end(
    tmp_path: Path,
) -> None:
    """A claimed request whose attempt is pending is answered when that attempt ends."""
    request = new_request("recover", procedure="emergency_abort")
    (requests_dir(tmp_path) / f"{request.id}.taken").write_text(json.dumps(request.to_json()))
    d = Daemon(tmp_path, pending=(request.id,))
    assert wait_result(tmp_path, request.id, timeout_s=0.0, clock=SystemClock()) is None
    d.engine.run_manual("emergency_abort", attempt_id=request.id)
    assert answer(tmp_path, request.id)["ok"] is True
    d.store.close()


def test_resume_request_unmarks_aborted_kernels(daemon: Daemon) -> None:
    """A resume request unmarks the aborted kernels and answers which ones."""
    daemon.store.put_json(ABORTED_NAMESPACE, "quantum", {"issue": "coherence_loss"})
    request = new_request("resume")
    submit(daemon.state, request)
    daemon.inbox.tick()
    assert answer(daemon.state, request.id)["resumed"] == ["quantum"]
    assert daemon.store.items(ABORTED_NAMESPACE) == {}


def test_request_nobody_takes_is_withdrawn_with_a_clear_error(tmp_path: Path) -> None:
    """With no daemon taking requests, asking times out, withdraws the request and says so."""
    request = Request(id="00000000abcd", kind="resume")
    with pytest.raises(RecoveryError, match="did not take request 00000000abcd"):
        ask_daemon(tmp_path, request, timeout_s=0.0, clock=SystemClock())
    assert list(requests_dir(tmp_path).iterdir()) == []


def test_state_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    """Only one holder at a time; the holder is named in the file; release frees it."""
    first = StateLock(tmp_path, "kernelwatch run")
    second = StateLock(tmp_path, "kernelwatch recover")
    assert first.try_acquire()
    assert not second.try_acquire()
    assert second.holder().endswith(" kernelwatch run")
    first.release()
    assert second.try_acquire()
    second.release()


def test_recover_without_a_daemon_writes_its_events_to_the_telemetry(tmp_path: Path) -> None:
    """With no daemon, `recover` runs locally and its events land in the telemetry JSONL,
    and `resume` publishes KernelsResumed there too."""
    state = tmp_path / "state"
    assert main(["recover", "emergency_abort", "--state-dir", str(state)]) == 0
    assert main(["resume", "--state-dir", str(state)]) == 0
    records = telemetry_records(state)
    assert types_of(records) == [
        "RecoveryStarted",
        "EmergencyAborted",
        "RecoverySucceeded",
        "KernelsResumed",
    ]
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["kernels"] == ["*"]
