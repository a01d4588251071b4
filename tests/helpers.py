"""Shared test helpers: free ports, bounded polling, telemetry reading, daemon processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.05)


def telemetry_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every telemetry record under ``state_dir``, in file then line order; every whole line
    must parse. A last line without its newline is still being written by a running daemon
    (a large record reaches the file in pieces), so it is left for a later read, as
    ``kernelwatch telemetry`` does."""
    records: list[dict[str, Any]] = []
    folder = state_dir / "telemetry"
    if not folder.exists():
        return records
    for path in sorted(folder.glob("*.jsonl")):
        *whole, _being_written = path.read_text().split("\n")
        records.extend(json.loads(line) for line in whole)
    return records


def types_of(records: list[dict[str, Any]]) -> list[str]:
    return [str(r["type"]) for r in records]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - test loopback
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())
    except (urllib.error.URLError, OSError):
        return 0, b""  # not listening (yet, or any more)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def kernelwatch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", *args]


@contextmanager
def daemon_process(
    state_dir: Path, config: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``kernelwatch run`` as a real process; kill it (and its group) on exit."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        kernelwatch_argv("run", "--state-dir", str(state_dir), "--config", str(config), *extra),
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def daemon_config(port: int, body: str = "") -> str:
    """A config for test daemons: HTTP on ``port``, quick ticks, fixture checks registered."""
    return (
        f"[http]\nport = {port}\n\n[daemon]\ntick_s = 0.2\nshutdown_grace_s = 10.0\n\n"
        "[checks.quick]\nmodule = 'tests.fixtures.checks:Quick'\n\n"
        "[checks.sleep_forever]\nmodule = 'tests.fixtures.checks:SleepForever'\n\n"
        "[checks.abort]\nmodule = 'tests.fixtures.checks:Abort'\n\n"
        "[tiers.daily]\nchecks = ['quick']\n[tiers.weekly]\nchecks = ['quick']\n"
        "[tiers.monthly]\nchecks = ['quick']\n[tiers.quarterly]\nchecks = ['quick']\n\n" + body
    )
