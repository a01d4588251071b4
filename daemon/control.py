"""Requests from the CLI to the running daemon: an inbox in ``STATE/requests/`` and a lock.

``kernelwatch recover`` and ``kernelwatch resume`` act through the daemon when one runs, so
their events reach its telemetry, metrics and alerts like any other. The CLI writes
``<id>.json`` atomically (0600, in a 0700 folder); on each main-loop tick the daemon claims
it (renames it to ``<id>.taken``), runs it, and writes ``<id>.result.json``, which the CLI
waits for, prints and deletes. A recover request's id is its attempt id, so the outcome is
the attempt's ``RecoverySucceeded`` or ``RecoveryFailed``; a restart resumes a pending
attempt and still answers, and a request claimed but lost in a crash is answered as
interrupted, never silently dropped.

Whether a daemon runs is told by ``STATE/daemon.lock``: the daemon holds an exclusive
``flock`` on it for its whole life (the kernel releases it at exit, even after ``kill -9``).
A CLI that can take the lock knows no daemon runs, and works locally while holding it, so a
daemon that starts meanwhile waits rather than running a second engine on the same state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, final

import structlog

from daemon.clock import Clock
from daemon.errors import RecoveryError, StateError
from daemon.events import Event, RecoveryFailed, RecoveryIneffective, RecoverySucceeded
from daemon.state_dir import DIR_MODE, FILE_MODE, confined

log = structlog.get_logger("kernelwatch.control")

REQUESTS: Final = "requests"
LOCK_NAME: Final = "daemon.lock"
KINDS: Final = ("recover", "resume")
RESULT_TTL: Final = timedelta(days=1)  # results no CLI came back for are deleted after this
_ID: Final = re.compile(r"^[0-9a-f]{12}$")
_OUTCOMES: Final = (RecoverySucceeded, RecoveryFailed, RecoveryIneffective)


# --- files -----------------------------------------------------------------------------


def requests_dir(state_dir: Path) -> Path:
    """``STATE/requests/``, created 0700."""
    folder = Path(state_dir) / REQUESTS
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    folder.chmod(DIR_MODE)
    return folder


def _path(folder: Path, request_id: str, suffix: str) -> Path:
    if not _ID.match(request_id):
        raise StateError(f"refusing request id {request_id!r}: not 12 hex digits")
    return confined(folder, request_id + suffix)


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically: a 0600 temp file, fsync, rename."""
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.write(fd, (json.dumps(doc, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        tmp.rename(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(doc, dict):
        raise StateError(f"{path}: must be a JSON object")
    return doc


# --- requests --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One CLI request: run ``procedure`` (recover) or resume ``kernels`` (all when empty)."""

    id: str
    kind: str
    procedure: str = ""
    kernels: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "procedure": self.procedure,
            "kernels": list(self.kernels),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> Request:
        """Validate a request file's content; errors name the file and the field."""
        kind = doc.get("kind")
        if kind not in KINDS:
            raise StateError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
        procedure = doc.get("procedure", "")
        if not isinstance(procedure, str) or (kind == "recover" and not procedure):
            raise StateError(f"{where}: procedure must be a procedure name, got {procedure!r}")
        kernels = doc.get("kernels", [])
        if not isinstance(kernels, list) or not all(isinstance(k, str) for k in kernels):
            raise StateError(f"{where}: kernels must be a list of names, got {kernels!r}")
        request_id = doc.get("id")
        if not isinstance(request_id, str) or not _ID.match(request_id):
            raise StateError(f"{where}: id must be 12 hex digits, got {request_id!r}")
        return cls(id=request_id, kind=kind, procedure=procedure, kernels=tuple(kernels))


def new_request(kind: str, *, procedure: str = "", kernels: Iterable[str] = ()) -> Request:
    return Request(id=secrets.token_hex(6), kind=kind, procedure=procedure, kernels=tuple(kernels))


def submit(state_dir: Path, request: Request) -> None:
    """Put ``request`` in the daemon's inbox."""
    _write_json(_path(requests_dir(state_dir), request.id, ".json"), request.to_json())


def withdraw(state_dir: Path, request_id: str) -> bool:
    """Take back a request the daemon has not claimed; False when it was claimed already."""
    try:
        _path(requests_dir(state_dir), request_id, ".json").unlink()
    except FileNotFoundError:
        return False
    return True


def wait_result(
    state_dir: Path, request_id: str, *, timeout_s: float, clock: Clock, poll_s: float = 0.05
) -> dict[str, Any] | None:
    """The daemon's answer to a request (its result file is deleted once read), or None
    after ``timeout_s``."""
    path = _path(requests_dir(state_dir), request_id, ".result.json")
    deadline = clock.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        if path.exists():
            doc = _read_json(path)
            path.unlink(missing_ok=True)
            return doc
        if clock.monotonic() >= deadline:
            return None
        pause.wait(poll_s)


def ask_daemon(
    state_dir: Path, request: Request, *, timeout_s: float, clock: Clock
) -> dict[str, Any]:
    """Submit ``request`` and wait for the daemon's answer; raise ``RecoveryError`` on timeout."""
    submit(state_dir, request)
    result = wait_result(state_dir, request.id, timeout_s=timeout_s, clock=clock)
    if result is not None:
        return result
    if withdraw(state_dir, request.id):
        raise RecoveryError(
            f"the daemon holding {Path(state_dir) / LOCK_NAME} did not take request "
            f"{request.id} within {timeout_s:g} s; it was withdrawn"
        )
    raise RecoveryError(
        f"the daemon is still running request {request.id} after {timeout_s:g} s; its "
        f"outcome will be in the telemetry (attempt {request.id})"
    )


# --- the lock --------------------------------------------------------------------------


@final
class StateLock:
    """The exclusive ``flock`` on ``STATE/daemon.lock``; its holder writes ``pid role``."""

    def __init__(self, state_dir: Path, role: str) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._role = role
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free; False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self._role}\n".encode())
        self._fd = fd
        return True

    def acquire(self, *, timeout_s: float, clock: Clock) -> None:
        """Wait up to ``timeout_s`` for the lock (a local CLI run ends within its timeouts);
        raise ``StateError`` naming the holder if it stays taken."""
        deadline = clock.monotonic() + timeout_s
        pause = threading.Event()
        while not self.try_acquire():
            if clock.monotonic() >= deadline:
                raise StateError(f"{self.path} is held by {self.holder()!r}: is a daemon running?")
            pause.wait(0.1)

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip()
        return ""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


# --- the daemon's side -----------------------------------------------------------------


@final
class Inbox:
    """Claims requests on each tick and answers them; subscribe it to the bus first.

    ``recover(procedure, attempt_id)`` starts a manual attempt on the engine (it runs on the
    engine's worker; its outcome event completes the request); ``resume(kernels)`` unmarks
    aborted kernels and returns those it unmarked. ``pending`` are the attempt ids the engine
    loaded as pending at start: a claimed request among them is still answered.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        clock: Clock,
        recover: Callable[[str, str], object],
        resume: Callable[[tuple[str, ...]], tuple[str, ...]],
        pending: Iterable[str] = (),
    ) -> None:
        self._folder = requests_dir(state_dir)
        self._clock = clock
        self._recover = recover
        self._resume = resume
        self._lock = threading.Lock()
        self._awaiting: dict[str, list[dict[str, Any]]] = {}
        self._requeued: list[Request] = []
        self._adopt_claimed(set(pending))

    def _adopt_claimed(self, pending: set[str]) -> None:
        """Requests claimed before a restart: await, redo (resume is idempotent) or answer."""
        for path in sorted(self._folder.glob("*.taken")):
            request_id = path.name.removesuffix(".taken")
            if not _ID.match(request_id):
                continue
            try:
                request = Request.from_json(_read_json(path), str(path))
            except StateError as exc:
                self._answer(request_id, "", ok=False, error=str(exc))
                continue
            if request.kind == "resume":
                self._requeued.append(request)
            elif request.id in pending:
                self._awaiting[request.id] = []
            else:
                self._answer(
                    request.id,
                    request.kind,
                    ok=False,
                    error="the daemon stopped before it reported this request's outcome; "
                    f"see the telemetry for attempt {request.id}",
                )

    def __call__(self, event: Event) -> None:
        """Bus subscriber: collect the events of awaited attempts; answer on their outcome."""
        attempt_id = getattr(event, "attempt_id", None)
        with self._lock:
            if attempt_id not in self._awaiting:
                return
            events = self._awaiting[attempt_id]
            events.append(event.to_record())
            if not isinstance(event, _OUTCOMES):
                return
            del self._awaiting[attempt_id]
        error = getattr(event, "error", "")
        self._answer(
            attempt_id,
            "recover",
            ok=isinstance(event, RecoverySucceeded),
            error=error,
            events=events,
        )

    def tick(self) -> None:
        """Claim and run every new request; delete answers nobody came back for."""
        requeued, self._requeued = self._requeued, []
        for request in requeued:
            self._run(request)
        for path in sorted(self._folder.glob("*.json"), key=_mtime_then_name):
            request_id = path.name.removesuffix(".json")
            if not _ID.match(request_id):
                continue  # results (<id>.result.json) and anything that is not a request
            claimed = path.with_name(request_id + ".taken")
            try:
                path.rename(claimed)  # the claim: from now on a restart knows of it
            except FileNotFoundError:
                continue  # withdrawn by the CLI meanwhile
            try:
                request = Request.from_json(_read_json(claimed), str(path))
                if request.id != request_id:
                    raise StateError(f"{path}: id {request.id!r} does not match the file name")
            except StateError as exc:
                self._answer(request_id, "", ok=False, error=str(exc))
                continue
            self._run(request)
        self._sweep()

    def _run(self, request: Request) -> None:
        log.info("control_request", id=request.id, kind=request.kind)
        if request.kind == "resume":
            resumed = self._resume(request.kernels)
            self._answer(request.id, request.kind, ok=True, resumed=list(resumed))
            return
        with self._lock:
            self._awaiting[request.id] = []
        self._recover(request.procedure, request.id)

    def _answer(self, request_id: str, kind: str, *, ok: bool, **fields: Any) -> None:
        doc = {
            "id": request_id,
            "kind": kind,
            "ok": ok,
            "finished": self._clock.now().isoformat(),
            **fields,
        }
        try:
            _write_json(_path(self._folder, request_id, ".result.json"), doc)
            _path(self._folder, request_id, ".taken").unlink(missing_ok=True)
        except OSError as exc:  # the outcome is in the telemetry; the CLI times out
            log.error("control_answer_failed", id=request_id, error=str(exc))

    def _sweep(self) -> None:
        cutoff = self._clock.now() - RESULT_TTL
        for path in self._folder.glob("*.result.json"):
            with contextlib.suppress(OSError, StateError, ValueError, KeyError):
                if datetime.fromisoformat(_read_json(path)["finished"]) < cutoff:
                    path.unlink()


def _mtime_then_name(path: Path) -> tuple[int, str]:
    try:
        return path.stat().st_mtime_ns, path.name
    except OSError:
        return 0, path.name
