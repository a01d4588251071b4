"""Where the recovery engine runs procedures: a worker thread, or inline on the caller."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Protocol, final

import structlog

log = structlog.get_logger("kernelwatch.recovery")


class Worker(Protocol):
    """Where procedures run: a thread in the daemon, inline in tests and policy tests."""

    def submit(self, job: Callable[[], None]) -> None: ...

    def drain(self, timeout_s: float = 30.0) -> bool: ...

    def close(self) -> None: ...


@final
class ThreadWorker:
    """One daemon thread running jobs in order; a job that raises is logged, never fatal."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="kernelwatch-recovery", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                job()
            except Exception:  # a broken job must not kill the recovery thread
                log.exception("recovery_job_failed")
            finally:
                self._jobs.task_done()

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every submitted job has finished (tests and shutdown)."""
        done = threading.Event()

        def waiter() -> None:
            self._jobs.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout_s)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5.0)


@final
class InlineWorker:
    """Runs each job at once on the caller's thread (deterministic tests, policy tests)."""

    def submit(self, job: Callable[[], None]) -> None:
        job()

    def drain(self, timeout_s: float = 30.0) -> bool:
        return True

    def close(self) -> None:
        return None
