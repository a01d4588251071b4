"""End to end: `kernelwatch recover` and `kernelwatch resume` act through the running daemon.

Their events are the daemon's: in its JSONL telemetry and its /metrics, so a manual
emergency_abort pages like any other. And an emergency_abort cut short by kill -9 once its
stop command ran is finished by the restarted daemon without running the stop command again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e._support import Env
from tests.helpers import ROOT, http_get, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_serving(env: Env) -> None:
    """The daemon has run its start hooks (the state lock, the inbox) once it serves."""
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{env.port}/healthz")[0] == 200,
        timeout=60,
        what="daemon serving",
    )


def printed_types(stdout: str) -> list[str]:
    return [json.loads(line)["type"] for line in stdout.splitlines() if line.startswith("{")]


def test_recover_and_resume_go_through_the_running_daemon(tmp_path: Path) -> None:
    """A manual emergency_abort is run by the daemon (its JSONL and /metrics count it, the
    stop command runs once), and resume is published by it as KernelsResumed."""
    env = Env(tmp_path)
    marker = tmp_path / "stopped.txt"
    stop = tmp_path / "stop.py"
    stop.write_text(f"open({str(marker)!r}, 'a').write('stopped\\n')\n")
    with env.daemon(stop_command=[sys.executable, str(stop)]):
        wait_serving(env)
        done = env.cli("recover", "emergency_abort")
        assert done.returncode == 0, done.stderr
        assert printed_types(done.stdout) == ["RecoveryStarted", "RecoverySucceeded"]
        assert "kernelwatch_emergency_aborts_total 1.0" in env.metrics()
        resumed = env.cli("resume")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip() == "resumed: *"
        wait_until(lambda: env.of_type("KernelsResumed"), timeout=30, what="KernelsResumed")
    records = env.records()
    assert records[-1]["type"] == "DaemonStopping"
    (started,) = [r for r in records if r["type"] == "RecoveryStarted"]
    assert (started["procedure"], started["trigger"]) == ("emergency_abort", "manual")
    assert len([r for r in records if r["type"] == "EmergencyAborted"]) == 1
    assert [r["kernels"] for r in records if r["type"] == "KernelsResumed"] == [["*"]]
    assert marker.read_text() == "stopped\n"


def test_kill_9_after_the_stop_command_then_restart_aborts_once(tmp_path: Path) -> None:
    """kill -9 of the daemon once the abort's stop command ran: the restarted daemon finishes
    the same attempt without running the stop command again, publishes one EmergencyAborted,
    and answers the waiting `kernelwatch recover`."""
    env = Env(tmp_path)
    marker = tmp_path / "stopped.txt"
    stop = tmp_path / "stop.py"
    # The stop command's last act kills its parent, the daemon: kill -9 right after it ran.
    stop.write_text(
        "import os, signal\n"
        f"open({str(marker)!r}, 'a').write('stopped\\n')\n"
        "os.kill(os.getppid(), signal.SIGKILL)\n"
    )
    argv = [sys.executable, "-m", "daemon.cli", "recover", "emergency_abort", "--timeout", "120"]
    argv += ["--state-dir", str(env.state), "--config", str(env.config)]
    with env.daemon(stop_command=[sys.executable, str(stop)]) as proc:
        wait_serving(env)
        cli = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.wait(timeout=60) == -signal.SIGKILL
            assert marker.read_text() == "stopped\n"
            with env.daemon(stop_command=[sys.executable, str(stop)]):
                out, err = cli.communicate(timeout=90)
                assert cli.returncode == 1, err  # the stop command's outcome is unknown
                assert "not run again" in out.decode()
        finally:
            if cli.poll() is None:
                os.kill(cli.pid, signal.SIGKILL)
                cli.wait()
    records = env.records()
    assert marker.read_text() == "stopped\n"
    assert len([r for r in records if r["type"] == "EmergencyAborted"]) == 1
    assert len([r for r in records if r["type"] == "RecoveryStarted"]) == 1
    (failed,) = [r for r in records if r["type"] == "RecoveryFailed"]
    assert failed["procedure"] == "emergency_abort"
