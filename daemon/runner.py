"""Run one check in a child process with a hard deadline, and report how it ended.

The child (``python -m daemon.child``) leads a new process group, reads a JSON request on
stdin and writes its JSON result to a dedicated pipe whose number is in the request, so a
check that prints (even JSON) cannot corrupt its result; its stdout is drained and dropped,
the last 4 KiB of its stderr are kept for crash reports. At the deadline, or on ``cancel``,
the whole group gets SIGTERM, then SIGKILL after ``kill_grace_s``; after a normal exit the
group gets SIGKILL too, so grandchildren never outlive a run. The child is reaped with
``os.wait4`` for its peak RSS. Callers serialise runs: one ``CheckRunner`` runs one child at
a time. A failing check never escapes: every way a child can end is a ``ChildOutcome``.

``cancel`` is sticky: it is for shutdown, so once called the runner starts no more children
(a later ``run`` returns a cancelled ``ChildCrashed`` at once), and a cancel that lands
between two runs, or while a child is being started, is never lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, final

from checks.api import CheckResult

STDERR_TAIL_BYTES = 4096
_READ_CHUNK = 65536
# How long to wait for pipes to reach EOF once the group is dead: only a process that left
# the group (setsid) can still hold them, and we will not wait on it.
_DRAIN_S = 1.0
# How long to wait for a SIGKILLed child to be reapable (it can only be slower in D state).
_REAP_S = 10.0
# How often the child's peak RSS is sampled while it runs (a timed-out child reports none).
_SAMPLE_S = 0.2
# Slack on top of the bounds above before a run counts as overdue (scheduling, pipe reads).
_OVERDUE_SLACK_S = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildRequest:
    """What the child needs to load and run one check; travels as JSON on its stdin."""

    check: str
    target: str
    tier: str
    run_id: str
    seed: int
    state_dir: str
    options: Mapping[str, Any] = field(default_factory=dict)
    profile_path: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def to_record(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "target": self.target,
            "tier": self.tier,
            "run_id": self.run_id,
            "seed": self.seed,
            "state_dir": self.state_dir,
            "options": dict(self.options),
            "profile_path": self.profile_path,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ChildRequest:
        return cls(
            check=str(record["check"]),
            target=str(record["target"]),
            tier=str(record["tier"]),
            run_id=str(record["run_id"]),
            seed=int(record["seed"]),
            state_dir=str(record["state_dir"]),
            options=dict(record.get("options", {})),
            profile_path=record.get("profile_path"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildCompleted:
    """The check returned a valid result and its process exited 0."""

    result: CheckResult
    duration_s: float
    peak_rss_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildTimedOut:
    """The check was still running at its deadline; its process group was killed."""

    duration_s: float
    deadline_s: float
    peak_rss_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildCrashed:
    """The check raised, exited abnormally, died by a signal, or returned no valid result.

    ``cancelled``: it did not fail on its own; ``CheckRunner.cancel`` ended it (or kept it from
    starting), so it says nothing about the check's health.
    """

    duration_s: float
    exit_code: int | None
    signal: int | None
    error: str
    peak_rss_bytes: int
    cancelled: bool = False


ChildOutcome = ChildCompleted | ChildTimedOut | ChildCrashed


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    """Signal every process in the group; an already empty group is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_parts(status: int | None) -> tuple[int | None, int | None]:
    """Split a wait status into (exit code, signal); both None when it is unknown."""
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def _rss_bytes(ru_maxrss: int) -> int:
    # Linux reports KiB, macOS bytes.
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024


def peak_rss_of(pid: int | str = "self") -> int | None:
    """Return the process's own peak RSS in bytes (Linux ``VmHWM``), or None where unknown.

    Preferred to ``ru_maxrss`` from ``wait4``: Linux carries the address space the child was
    forked (or vforked) from into ``ru_maxrss`` at exec, so it reports at least the daemon's
    RSS. ``VmHWM`` belongs to the address space created by exec, i.e. the check process only.
    """
    try:
        with Path(f"/proc/{pid}/status").open("rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


@final
class _Run:
    """The pipes and bookkeeping of one child, so ``CheckRunner.run`` reads as a sequence."""

    def __init__(self, proc: subprocess.Popen[bytes], result_fd: int, request: bytes) -> None:
        self.proc = proc
        self.result = bytearray()
        self.stderr_tail = bytearray()
        self.exited = threading.Event()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)  # a full wake pipe is awake enough; never block
        self._closed = False
        self._wake_lock = threading.Lock()  # no write to wake_w after close (fd reuse)
        self.selector = selectors.DefaultSelector()
        self._pending = memoryview(request)
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        os.set_blocking(proc.stdin.fileno(), False)
        self.selector.register(proc.stdin.fileno(), selectors.EVENT_WRITE, "stdin")
        self.selector.register(result_fd, selectors.EVENT_READ, "result")
        self.selector.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
        self.selector.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.result_fd = result_fd
        self.peak_rss: int | None = None  # sampled VmHWM; None until a sample succeeds
        # Waits without reaping (WNOWAIT): the zombie keeps the pid and group id reserved
        # until we have killed the group, so the group kill can never hit a recycled id.
        self.waiter = threading.Thread(target=self._wait_exit, name="kernelwatch-child-wait")
        self.waiter.daemon = True
        self.waiter.start()

    def _wait_exit(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        self.exited.set()
        self.wake()

    def wake(self) -> None:
        """Make a ``pump`` in progress return early (from any thread)."""
        with self._wake_lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):  # a full wake pipe is already awake
                os.write(self.wake_w, b"x")

    def pump(self, timeout: float) -> None:
        """Move data between the child's pipes and our buffers for at most ``timeout`` s."""
        self._sample_rss()
        for key, _ in self.selector.select(timeout=min(max(timeout, 0.0), _SAMPLE_S)):
            fd = int(key.fd)
            if key.data == "stdin":
                self._write_stdin(fd)
                continue
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            if key.data == "wake":
                continue
            if not data:
                self.selector.unregister(fd)
            elif key.data == "result":
                self.result += data
            elif key.data == "stderr":
                self.stderr_tail += data
                del self.stderr_tail[:-STDERR_TAIL_BYTES]

    def _sample_rss(self) -> None:
        if self.exited.is_set():
            return  # a zombie has no address space left to read
        sample = peak_rss_of(self.proc.pid)
        if sample is not None:
            self.peak_rss = max(sample, self.peak_rss or 0)

    def note_reported_rss(self, reported: object) -> int | None:
        """Fold in the peak RSS the child measured itself just before it wrote its result."""
        if isinstance(reported, int) and not isinstance(reported, bool) and reported > 0:
            self.peak_rss = max(reported, self.peak_rss or 0)
        return self.peak_rss

    def _write_stdin(self, fd: int) -> None:
        try:
            written = os.write(fd, self._pending)
        except BlockingIOError:
            return
        except BrokenPipeError:
            written = len(self._pending)  # the child is gone; its exit tells the story
        self._pending = self._pending[written:]
        if not self._pending:
            self.selector.unregister(fd)
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def pipes_open(self) -> bool:
        """Return True while result, stdout or stderr may still deliver data."""
        return any(
            k.data in ("result", "stdout", "stderr") for k in self.selector.get_map().values()
        )

    def drain(self, bound_s: float) -> None:
        """Read what is left in the pipes, for at most ``bound_s`` seconds."""
        end = time.monotonic() + bound_s
        while self.pipes_open() and time.monotonic() < end:
            self.pump(end - time.monotonic())

    def reap(self) -> tuple[int | None, int]:
        """Reap the exited child; return its wait status (None if it would not die) and RSS."""
        if not self.exited.is_set():
            return None, 0  # stuck in the kernel even after SIGKILL; do not block on it
        try:
            _, status, rusage = os.wait4(self.proc.pid, 0)
        except ChildProcessError:
            self.proc.returncode = -1  # reaped elsewhere; keep Popen from waiting on it
            return None, 0
        # Tell Popen the child is reaped, so it neither waits again nor warns in __del__.
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.peak_rss is not None:
            return status, self.peak_rss
        return status, _rss_bytes(rusage.ru_maxrss)  # no /proc: the best figure there is

    def close(self) -> None:
        with self._wake_lock:
            self._closed = True
        self.selector.close()
        for fd in (self.result_fd, self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@final
class CheckRunner:
    """Runs one check at a time in a child process and turns every ending into an outcome.

    ``on_start`` is called with the child's pid once it runs; ``cancel`` may be called from
    any thread (at shutdown) to end the running child early.
    """

    def __init__(
        self,
        *,
        kill_grace_s: float,
        python: str = sys.executable,
        on_start: Callable[[int], None] | None = None,
    ) -> None:
        self.kill_grace_s = kill_grace_s
        self._python = python
        self._on_start = on_start
        self._lock = threading.Lock()
        self._current: _Run | None = None
        self._cancelled = False
        self._overdue_at: float | None = None  # time.monotonic() bound of the run in progress
        self._idle_since = time.monotonic()

    @property
    def kill_grace_s(self) -> float:
        """Seconds between SIGTERM and SIGKILL; settable (config reload), for the next run."""
        return self._kill_grace_s

    @kill_grace_s.setter
    def kill_grace_s(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"kill_grace_s must be >= 0, got {value!r}")
        self._kill_grace_s = value

    @property
    def running_pid(self) -> int | None:
        """The pid of the running child, or None between runs."""
        with self._lock:
            return None if self._current is None else self._current.proc.pid

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel`` was called (this runner then starts no more children)."""
        with self._lock:
            return self._cancelled

    def overdue_in(self) -> float | None:
        """Seconds until the child in progress is overdue, or None between runs.

        A run ends by its deadline plus the kill grace plus the bounded waits for the exit and
        the pipes; past that, the runner itself is stuck (a watchdog should notice).
        """
        with self._lock:
            if self._overdue_at is None:
                return None
            return self._overdue_at - time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last child ended (or since this runner was made); 0 while running."""
        with self._lock:
            if self._overdue_at is not None:
                return 0.0
            return time.monotonic() - self._idle_since

    def cancel(self) -> None:
        """End the running child now (SIGTERM, then SIGKILL after the grace), start no more.

        Returns at once; the ``run`` in progress does the killing and returns a
        ``ChildCrashed`` with ``cancelled=True``. Sticky: every later ``run`` returns one at
        once without starting a child.
        """
        with self._lock:
            self._cancelled = True
            if self._current is not None:
                self._current.wake()

    def kill_now(self) -> None:
        """SIGKILL the running child's whole group at once (forced exit); no-op when idle.

        Also cancels, so nothing more starts. Safe from any thread: the child is not reaped
        until ``run`` has killed its group, so its group id cannot have been reused.
        """
        with self._lock:
            self._cancelled = True
            if self._current is None:
                return
            _kill_group(self._current.proc.pid, signal.SIGKILL)
            self._current.wake()

    def run(
        self,
        request: ChildRequest,
        *,
        deadline_s: float,
        on_start: Callable[[int], None] | None = None,
    ) -> ChildOutcome:
        """Run ``request`` in a fresh child, killing its group after ``deadline_s`` seconds.

        ``on_start``, when given, is called for this run instead of the constructor's.
        """
        notify = on_start if on_start is not None else self._on_start
        start = time.monotonic()
        if self.cancelled:
            return ChildCrashed(
                duration_s=0.0,
                exit_code=None,
                signal=None,
                error="cancelled before it started (the runner was cancelled: shutting down)",
                peak_rss_bytes=0,
                cancelled=True,
            )
        try:
            body = json.dumps(request.to_record(), allow_nan=False)
        except (TypeError, ValueError) as exc:
            return ChildCrashed(
                duration_s=0.0,
                exit_code=None,
                signal=None,
                error=f"request for check {request.check!r} is not JSON-serialisable: {exc}",
                peak_rss_bytes=0,
            )
        result_r, result_w = os.pipe()
        payload = f'{{"result_fd": {result_w}, "request": {body}}}'
        try:
            proc = subprocess.Popen(
                [self._python, "-m", "daemon.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(result_w,),
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(result_r)
            return ChildCrashed(
                duration_s=time.monotonic() - start,
                exit_code=None,
                signal=None,
                error=f"cannot start {self._python!r} -m daemon.child: {exc}",
                peak_rss_bytes=0,
            )
        finally:
            os.close(result_w)  # only the child may hold the write end, or EOF never comes
        child = _Run(proc, result_r, payload.encode())
        with self._lock:
            self._current = child
            grace = self._kill_grace_s
            self._overdue_at = start + deadline_s + grace + _REAP_S + 2 * _DRAIN_S
            self._overdue_at += _OVERDUE_SLACK_S
        try:
            if notify is not None:
                notify(proc.pid)
            return self._supervise(
                child, request, start=start, deadline_s=deadline_s, grace_s=grace
            )
        finally:
            if proc.returncode is None:
                # Only reached when on_start or supervision raised: never leave the child.
                _kill_group(proc.pid, signal.SIGKILL)
                child.exited.wait(_REAP_S)
                child.reap()
            with self._lock:
                self._current = None
                self._overdue_at = None
                self._idle_since = time.monotonic()
            child.close()

    def _supervise(
        self,
        child: _Run,
        request: ChildRequest,
        *,
        start: float,
        deadline_s: float,
        grace_s: float,
    ) -> ChildOutcome:
        """Pump pipes until the child exits, the deadline passes or we are cancelled."""
        deadline = start + deadline_s
        while not child.exited.is_set() and not self.cancelled:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            child.pump(remaining)
        if child.exited.is_set():
            _kill_group(child.proc.pid, signal.SIGKILL)  # leave no grandchild behind
            child.drain(_DRAIN_S)
            status, rss = child.reap()
            outcome = self._judge(child, request, status, rss, time.monotonic() - start)
            if isinstance(outcome, ChildCrashed) and self.cancelled:
                # It died as (or after) we cancelled, e.g. by kill_now's SIGKILL: not its fault.
                error = f"cancelled by the runner (daemon shutting down): {outcome.error}"
                return dataclasses.replace(outcome, error=error, cancelled=True)
            return outcome
        cancelled = self.cancelled
        self._terminate(child, grace_s=grace_s)
        status, rss = child.reap()
        duration = time.monotonic() - start
        if not cancelled:
            return ChildTimedOut(duration_s=duration, deadline_s=deadline_s, peak_rss_bytes=rss)
        exit_code, sig = _exit_parts(status)
        return ChildCrashed(
            duration_s=duration,
            exit_code=exit_code,
            signal=sig,
            error="cancelled by the runner before the check finished (daemon shutting down)",
            peak_rss_bytes=rss,
            cancelled=True,
        )

    def _terminate(self, child: _Run, *, grace_s: float) -> None:
        """SIGTERM the group, SIGKILL it after the grace, and wait (bounded) for the exit."""
        pgid = child.proc.pid
        _kill_group(pgid, signal.SIGTERM)
        grace_end = time.monotonic() + grace_s
        while not child.exited.is_set() and time.monotonic() < grace_end:
            child.pump(grace_end - time.monotonic())
        _kill_group(pgid, signal.SIGKILL)  # also catches grandchildren that ignored SIGTERM
        child.exited.wait(_REAP_S)
        child.drain(_DRAIN_S)

    def _judge(
        self, child: _Run, request: ChildRequest, status: int | None, rss: int, duration: float
    ) -> ChildOutcome:
        """Turn the exit status and the result pipe's bytes into an outcome."""
        stderr = child.stderr_tail.decode(errors="replace")

        def crashed(
            error: str, exit_code: int | None = None, sig: int | None = None
        ) -> ChildCrashed:
            return ChildCrashed(
                duration_s=duration,
                exit_code=exit_code,
                signal=sig,
                error=error,
                peak_rss_bytes=rss,
            )

        if status is None:
            return crashed(f"its exit status was lost (reaped elsewhere)\n{stderr}".rstrip())
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return crashed(f"killed by {signal.Signals(sig).name}\n{stderr}".rstrip(), sig=sig)
        code = os.WEXITSTATUS(status)
        try:
            record = json.loads(child.result) if child.result else None
        except ValueError as exc:
            return crashed(f"result is not valid JSON: {exc}\n{stderr}".rstrip(), code)
        if record is None:
            return crashed(f"exited with code {code} without a result\n{stderr}".rstrip(), code)
        if isinstance(record, dict):
            rss = child.note_reported_rss(record.get("peak_rss_bytes")) or rss
        if not isinstance(record, dict) or not record.get("ok"):
            error = record.get("error") if isinstance(record, dict) else None
            return crashed(str(error or f"malformed result record: {record!r}"), code)
        if code != 0:
            return crashed(f"exited with code {code} after its result\n{stderr}".rstrip(), code)
        try:
            result = CheckResult.from_record(record["result"])
        except (KeyError, TypeError, ValueError) as exc:
            return crashed(f"malformed check result: {type(exc).__name__}: {exc}", code)
        if result.check != request.check:
            return crashed(f"result names check {result.check!r}, expected {request.check!r}", code)
        return ChildCompleted(result=result, duration_s=duration, peak_rss_bytes=rss)
