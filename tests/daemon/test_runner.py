"""The runner against real child processes: deadlines, signals, crashes, printing, grandchildren."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from daemon.runner import (
    CheckRunner,
    ChildCompleted,
    ChildCrashed,
    ChildRequest,
    ChildTimedOut,
)
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = "tests.fixtures.checks"


@pytest.fixture(autouse=True)
def _child_can_import_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the child import ``tests.fixtures`` whatever directory pytest was started from."""
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), existing])))


@pytest.fixture
def runner() -> CheckRunner:
    """A runner with a short kill grace, so SIGKILL escalation is quick to observe."""
    return CheckRunner(kill_grace_s=0.5)


def request(tmp_path: Path, name: str, attribute: str, *, seed: int = 7) -> ChildRequest:
    return ChildRequest(
        check=name,
        target=f"{FIXTURES}:{attribute}",
        tier="daily",
        run_id="run-1",
        seed=seed,
        state_dir=str(tmp_path),
        options={},
        profile_path=None,
    )


def gone(pid: int) -> bool:
    """Return True if ``pid`` no longer runs (a zombie waiting for init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def wait_until_gone(pid: int, within_s: float = 5.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def test_quick_check_completes(runner: CheckRunner, tmp_path: Path) -> None:
    """A check that returns at once yields its result, a duration and a positive peak RSS."""
    outcome = runner.run(request(tmp_path, "quick", "Quick", seed=11), deadline_s=30)
    assert isinstance(outcome, ChildCompleted), outcome
    assert outcome.result.check == "quick"
    assert [m.value for m in outcome.result.measurements] == [11.0]
    assert outcome.duration_s > 0
    assert outcome.peak_rss_bytes > 0


def test_sleep_forever_is_killed_at_deadline_and_next_run_completes(
    runner: CheckRunner, tmp_path: Path
) -> None:
    """A hung check times out at its deadline, and the same runner then runs the next check."""
    hung = runner.run(request(tmp_path, "sleep_forever", "SleepForever"), deadline_s=1.5)
    assert isinstance(hung, ChildTimedOut), hung
    assert hung.deadline_s == 1.5
    assert hung.duration_s >= 1.5  # never killed before its deadline
    assert runner.running_pid is None
    after = runner.run(request(tmp_path, "quick", "Quick"), deadline_s=30)
    assert isinstance(after, ChildCompleted), after


def test_sigterm_is_escalated_to_sigkill(runner: CheckRunner, tmp_path: Path) -> None:
    """A check that ignores SIGTERM is SIGKILLed after the grace and still reported as a timeout."""
    outcome = runner.run(request(tmp_path, "ignores_term", "IgnoresTerm"), deadline_s=1.5)
    assert (tmp_path / "ready").exists()
    assert isinstance(outcome, ChildTimedOut), outcome
    assert outcome.duration_s >= 1.5 + 0.5


def test_abort_is_a_crash_by_sigabrt(runner: CheckRunner, tmp_path: Path) -> None:
    """A check that calls ``os.abort()`` is reported as crashed by SIGABRT, with a stack trace."""
    outcome = runner.run(request(tmp_path, "abort", "Abort"), deadline_s=30)
    assert isinstance(outcome, ChildCrashed), outcome
    assert outcome.signal == signal.SIGABRT
    assert outcome.exit_code is None
    assert "SIGABRT" in outcome.error
    assert "fixtures/checks.py" in outcome.error  # faulthandler's stack in the stderr tail


def test_printing_does_not_corrupt_the_result(runner: CheckRunner, tmp_path: Path) -> None:
    """A check that floods stdout and stderr with junk and fake JSON still returns its result."""
    outcome = runner.run(request(tmp_path, "printer", "Printer"), deadline_s=30)
    assert isinstance(outcome, ChildCompleted), outcome
    assert [(m.name, m.value) for m in outcome.result.measurements] == [("answer_count", 42.0)]


def test_grandchild_does_not_outlive_the_run(runner: CheckRunner, tmp_path: Path) -> None:
    """A grandchild left running by a check (holding its stdout) is killed with its group."""
    outcome = runner.run(request(tmp_path, "grandchild", "Grandchild"), deadline_s=30)
    # Completed, not timed out: the grandchild's open stdout did not hold the run open.
    assert isinstance(outcome, ChildCompleted), outcome
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert wait_until_gone(grandchild), f"grandchild {grandchild} still runs"


def test_raising_check_is_a_crash_with_its_traceback(runner: CheckRunner, tmp_path: Path) -> None:
    """A check that raises is reported as crashed with exit code 1 and the Python traceback."""
    outcome = runner.run(request(tmp_path, "raises", "Raises"), deadline_s=30)
    assert isinstance(outcome, ChildCrashed), outcome
    assert outcome.exit_code == 1
    assert outcome.signal is None
    assert "Traceback (most recent call last)" in outcome.error
    assert "RuntimeError: deliberate failure from the Raises check" in outcome.error
    assert outcome.peak_rss_bytes > 0


def test_non_result_return_is_a_crash(runner: CheckRunner, tmp_path: Path) -> None:
    """A check that returns something other than a CheckResult is reported as crashed."""
    outcome = runner.run(request(tmp_path, "wrong_result", "WrongResult"), deadline_s=30)
    assert isinstance(outcome, ChildCrashed), outcome
    assert "not CheckResult" in outcome.error


def test_unknown_target_is_a_crash_naming_the_target(runner: CheckRunner, tmp_path: Path) -> None:
    """A target that cannot be imported is reported as a crash whose error names the target."""
    outcome = runner.run(request(tmp_path, "quick", "Missing"), deadline_s=30)
    assert isinstance(outcome, ChildCrashed), outcome
    assert f"{FIXTURES}:Missing" in outcome.error


def test_peak_rss_is_the_childs_own(runner: CheckRunner, tmp_path: Path) -> None:
    """The child's peak RSS does not include the memory of the (larger) parent it forked from."""
    ballast = bytearray(b"\x01" * (256 * 1024 * 1024))  # touched, so resident in this process
    outcome = runner.run(request(tmp_path, "quick", "Quick"), deadline_s=30)
    del ballast
    assert isinstance(outcome, ChildCompleted), outcome
    assert 0 < outcome.peak_rss_bytes < 200 * 1024 * 1024


def test_cancel_from_another_thread_ends_the_child(tmp_path: Path) -> None:
    """``cancel`` from another thread kills the running child, and ``run`` reports a cancel."""
    started = threading.Event()
    runner = CheckRunner(kill_grace_s=0.5, on_start=lambda pid: started.set())
    outcomes: list[object] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(
            runner.run(request(tmp_path, "sleep_forever", "SleepForever"), deadline_s=60)
        )
    )
    worker.start()
    try:
        assert started.wait(30)
        pid = runner.running_pid
        assert pid is not None
        runner.cancel()
    finally:
        worker.join(30)
    [outcome] = outcomes
    assert isinstance(outcome, ChildCrashed), outcome
    assert outcome.signal == signal.SIGTERM
    assert "cancelled" in outcome.error
    assert runner.running_pid is None
    assert gone(pid)


def test_cancel_is_sticky_and_starts_no_more_children(tmp_path: Path) -> None:
    """After ``cancel`` (even while idle) a run returns a cancelled outcome without a child."""
    started: list[int] = []
    runner = CheckRunner(kill_grace_s=0.5, on_start=started.append)
    runner.cancel()
    outcome = runner.run(request(tmp_path, "quick", "Quick"), deadline_s=30)
    assert isinstance(outcome, ChildCrashed), outcome
    assert outcome.cancelled
    assert "cancelled" in outcome.error
    assert started == []
    assert runner.cancelled


def test_kill_now_sigkills_the_group_at_once(tmp_path: Path) -> None:
    """``kill_now`` SIGKILLs a child that ignores SIGTERM, without waiting for the grace."""
    ready = tmp_path / "ready"
    runner = CheckRunner(kill_grace_s=3600)  # the grace would outlast the test's hang guard
    outcomes: list[object] = []
    worker = threading.Thread(
        target=lambda: outcomes.append(
            runner.run(request(tmp_path, "ignores_term", "IgnoresTerm"), deadline_s=3600)
        )
    )
    worker.start()
    try:
        wait_until(ready.exists, timeout=30, what="the child to ignore SIGTERM and say so")
        pid = runner.running_pid
        assert pid is not None
        runner.kill_now()
    finally:
        worker.join(60)
    [outcome] = outcomes
    assert isinstance(outcome, ChildCrashed), outcome
    assert outcome.cancelled
    assert outcome.signal == signal.SIGKILL
    assert gone(pid)


def test_overdue_bound_covers_deadline_and_kill_grace(tmp_path: Path) -> None:
    """While a child runs, the runner reports it overdue only after deadline plus kill grace."""
    seen: list[tuple[float | None, float]] = []
    runner = CheckRunner(kill_grace_s=50.0)
    assert runner.overdue_in() is None
    t0 = time.monotonic()

    def on_start(pid: int) -> None:
        bound = runner.overdue_in()
        seen.append((bound, time.monotonic() - t0))

    outcome = runner.run(request(tmp_path, "quick", "Quick"), deadline_s=100, on_start=on_start)
    assert isinstance(outcome, ChildCompleted), outcome
    [(bound, elapsed)] = seen
    assert bound is not None
    # Counted from the run's start (after t0): at least deadline + grace from t0, and only
    # the runner's own short waits on top.
    assert bound + elapsed >= 100 + 50
    assert bound <= 100 + 50 + 30
    assert runner.overdue_in() is None


def test_missing_interpreter_is_a_crash(tmp_path: Path) -> None:
    """An interpreter that cannot be started is reported as a crash, not raised."""
    runner = CheckRunner(kill_grace_s=0.5, python=str(tmp_path / "no-such-python"))
    outcome = runner.run(request(tmp_path, "quick", "Quick"), deadline_s=30)
    assert isinstance(outcome, ChildCrashed), outcome
    assert "no-such-python" in outcome.error


def test_unserialisable_options_are_a_crash_without_a_child(tmp_path: Path) -> None:
    """Options that JSON cannot carry are reported as a crash before any process starts."""
    started: list[int] = []
    runner = CheckRunner(kill_grace_s=0.5, on_start=started.append)
    bad = ChildRequest(
        check="quick",
        target=f"{FIXTURES}:Quick",
        tier="daily",
        run_id="run-1",
        seed=1,
        state_dir=str(tmp_path),
        options={"when": object()},
        profile_path=None,
    )
    outcome = runner.run(bad, deadline_s=30)
    assert isinstance(outcome, ChildCrashed), outcome
    assert "JSON" in outcome.error
    assert started == []


def test_request_round_trips_through_its_record(tmp_path: Path) -> None:
    """A ChildRequest read back from its record equals the original."""
    original = request(tmp_path, "quick", "Quick")
    assert ChildRequest.from_record(original.to_record()) == original


def test_failing_on_start_callback_leaves_no_child(tmp_path: Path) -> None:
    """If the ``on_start`` callback raises, the error propagates and the child is killed."""
    pids: list[int] = []

    def explode(pid: int) -> None:
        pids.append(pid)
        raise RuntimeError("callback failed")

    runner = CheckRunner(kill_grace_s=0.5, on_start=explode)
    with pytest.raises(RuntimeError, match="callback failed"):
        runner.run(request(tmp_path, "sleep_forever", "SleepForever"), deadline_s=60)
    assert runner.running_pid is None
    assert wait_until_gone(pids[0])


def test_per_run_on_start_is_called_with_the_pid(runner: CheckRunner, tmp_path: Path) -> None:
    """A per-run ``on_start`` callback receives the pid of that run's child."""
    pids: list[int] = []
    outcome = runner.run(request(tmp_path, "quick", "Quick"), deadline_s=30, on_start=pids.append)
    assert isinstance(outcome, ChildCompleted), outcome
    assert len(pids) == 1
    assert pids[0] > 0
