"""End-to-end tests of `kernelwatch run` and the CLI: real processes, signals, files."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import (
    ROOT,
    daemon_config,
    daemon_process,
    free_port,
    http_get,
    kernelwatch_argv,
    telemetry_records,
    types_of,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GAUGE = (
    "[checks.gauge]\nmodule = 'tests.fixtures.daemon_checks:Gauge'\n"
    "[checks.gauge.options]\nvalue = {value}\n\n"
    "[[rules]]\nname = 'answer'\nmeasurement = 'answer_ratio'\nissue = 'answer_wrong'\n"
    "warn = 1.0\ncrit = 2.0\n"
)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        kernelwatch_argv(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_sigterm_flushes_every_event_and_exits_zero(tmp_path: Path) -> None:
    """After a run and SIGTERM the daemon exits 0 and every event is in the JSONL, in order."""
    port = free_port()
    config = write_config(tmp_path / "kw.toml", daemon_config(port))
    state = tmp_path / "state"
    with daemon_process(state, config, "--run-now", "daily") as proc:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="health")
        wait_until(
            lambda: (
                b'kernelwatch_tier_last_success_timestamp_seconds{tier="daily"}'
                in http_get(f"http://127.0.0.1:{port}/metrics")[1]
            ),
            what="daily run",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    records = telemetry_records(state)
    names = types_of(records)
    assert names[0] == "DaemonStarted"
    assert names[-1] == "DaemonStopping"
    assert {
        "RunStarted",
        "CheckStarted",
        "CheckCompleted",
        "CheckEvaluated",
        "RunCompleted",
    } <= set(names)
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_hung_check_is_killed_and_next_check_runs(tmp_path: Path) -> None:
    """A check that sleeps forever times out at its deadline; the next check still completes."""
    port = free_port()
    text = daemon_config(port).replace(
        "[tiers.daily]\nchecks = ['quick']", "[tiers.daily]\nchecks = ['sleep_forever', 'quick']"
    )
    config = write_config(tmp_path / "kw.toml", text)
    state = tmp_path / "state"
    with daemon_process(state, config, "--run-now", "daily") as proc:
        wait_until(
            lambda: "RunCompleted" in types_of(telemetry_records(state)), timeout=60, what="run"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    records = telemetry_records(state)
    timed_out = [r for r in records if r["type"] == "CheckTimedOut"]
    completed = [r for r in records if r["type"] == "CheckCompleted"]
    assert [r["check"] for r in timed_out] == ["sleep_forever"]
    assert [r["check"] for r in completed] == ["quick"]
    evaluated = {r["check"]: r["status"] for r in records if r["type"] == "CheckEvaluated"}
    assert evaluated == {"sleep_forever": "unknown", "quick": "ok"}


def test_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    """`run` and `config check` refuse a bad file with EX_CONFIG and the key path."""
    bad = write_config(tmp_path / "bad.toml", "[runner]\nkill_grace = 3\n")
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 78
    assert "runner.kill_grace: unknown key" in result.stderr
    result = run_cli("run", "--config", str(bad), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 78
    assert "runner.kill_grace" in result.stderr
    good = write_config(tmp_path / "good.toml", "[http]\nport = 9999\n")
    assert run_cli("config", "check", str(good)).returncode == 0


def test_sighup_with_bad_file_keeps_the_old_config(tmp_path: Path) -> None:
    """A bad reload is rejected with ConfigRejected; a good one is then accepted."""
    port = free_port()
    config = write_config(tmp_path / "kw.toml", daemon_config(port))
    state = tmp_path / "state"
    with daemon_process(state, config) as proc:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="health")
        config.write_text(daemon_config(port) + "\n[telemetry]\nfsync = 'sometimes'\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "ConfigRejected" in types_of(telemetry_records(state)), what="reject")
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        config.write_text(daemon_config(port) + "\n[runner]\nmax_queue = 8\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "ConfigReloaded" in types_of(telemetry_records(state)), what="reload")
        metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
        assert 'kernelwatch_config_reloads_total{result="rejected"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    rejected = [r for r in telemetry_records(state) if r["type"] == "ConfigRejected"]
    assert "telemetry.fsync" in rejected[0]["error"]


def test_systemd_notify_protocol(tmp_path: Path) -> None:
    """With NOTIFY_SOCKET and WATCHDOG_USEC the daemon sends READY, WATCHDOG and STOPPING."""
    port = free_port()
    config = write_config(tmp_path / "kw.toml", daemon_config(port))
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"}
        with daemon_process(tmp_path / "state", config, env=env) as proc:
            messages = [sock.recv(256).decode()]
            while "WATCHDOG=1" not in messages:
                messages.append(sock.recv(256).decode())
            proc.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in messages:
                messages.append(sock.recv(256).decode())
            assert proc.wait(timeout=30) == 0
    assert messages[0] == "READY=1"


def test_check_cli_exit_codes_and_json(tmp_path: Path) -> None:
    """`kernelwatch check` exits 0/1/2 by the worst level and prints JSON with --json."""
    for value, expected in ((0.5, 0), (1.5, 1), (3.0, 2)):
        config = write_config(
            tmp_path / f"kw{value}.toml", daemon_config(free_port(), GAUGE.format(value=value))
        )
        result = run_cli(
            "check", "gauge", "--json", "--config", str(config), "--state-dir", str(tmp_path / "s")
        )
        assert result.returncode == expected, result.stderr
        payload = json.loads(result.stdout)
        assert payload["exit_code"] == expected
        assert payload["checks"][0]["measurements"][0]["value"] == value
    assert not (tmp_path / "s" / "telemetry").exists()  # the one-shot leaves no state behind


def test_check_cli_reports_unknown_for_a_crashing_check(tmp_path: Path) -> None:
    """A check that aborts makes `kernelwatch check` exit 3 (UNKNOWN)."""
    config = write_config(tmp_path / "kw.toml", daemon_config(free_port()))
    result = run_cli("check", "abort", "--config", str(config), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 3
    assert "UNKNOWN" in result.stdout


def test_schedule_cli_prints_next_runs(tmp_path: Path) -> None:
    """`kernelwatch schedule --json` lists the next runs per tier with their window ends."""
    result = run_cli("schedule", "--count", "2", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    daily = [r for r in rows if r["tier"] == "daily"]
    assert len(daily) == 2
    assert daily[0]["scheduled_for"].endswith("T01:00:00+00:00")
    assert daily[0]["window_end"].endswith("T02:00:00+00:00")


def test_status_cli_reports_runs_and_a_stopped_daemon(tmp_path: Path) -> None:
    """`kernelwatch status --json` reads the state dir and says the daemon is not running."""
    port = free_port()
    config = write_config(tmp_path / "kw.toml", daemon_config(port))
    state = tmp_path / "state"
    with daemon_process(state, config, "--run-now", "daily") as proc:
        wait_until(
            lambda: "RunCompleted" in types_of(telemetry_records(state)), timeout=60, what="run"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    result = run_cli("status", "--json", "--config", str(config), "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    daily = next(t for t in payload["tiers"] if t["tier"] == "daily")
    assert daily["last_status"] == "ok"
    assert daily["last_success"]
    assert payload["daemon"]["status"] == "not running"


def test_state_files_are_private(tmp_path: Path) -> None:
    """State directories are 0700 and state files 0600."""
    port = free_port()
    config = write_config(tmp_path / "kw.toml", daemon_config(port))
    state = tmp_path / "state"
    with daemon_process(state, config, "--run-now", "daily") as proc:
        wait_until(
            lambda: "RunCompleted" in types_of(telemetry_records(state)), timeout=60, what="run"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    for path in [state, *state.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
