"""End-to-end tests of `kernelwatch run` and the CLI: real processes, signals, files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

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


# A tier of checks that never return, with a check timeout far beyond any test.
HANGING_TIER = (
    "[checks.sleep_forever]\nmodule = 'tests.fixtures.checks:SleepForever'\n",
    "[checks.sleep_forever]\nmodule = 'tests.fixtures.checks:SleepForever'\ntimeout_s = 3600.0\n",
)


def hanging_config(port: int, *, shutdown_grace_s: float, kill_grace_s: float) -> str:
    """Daily runs two never-ending checks then a quick one; the bounds are the given ones."""
    text = daemon_config(port, f"[runner]\nkill_grace_s = {kill_grace_s}\n")
    text = text.replace(*HANGING_TIER)
    text = text.replace("shutdown_grace_s = 10.0", f"shutdown_grace_s = {shutdown_grace_s}")
    return text.replace(
        "[tiers.daily]\nchecks = ['quick']",
        "[tiers.daily]\nchecks = ['sleep_forever', 'sleep_forever', 'quick']",
    )


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@contextmanager
def no_orphan_checks(state: Path) -> Iterator[None]:
    """On the way out, SIGKILL any check child still alive (each leads its own group), so a
    failing test leaves nothing behind."""
    try:
        yield
    finally:
        for record in telemetry_records(state):
            if record["type"] == "CheckStarted" and not process_gone(record["pid"]):
                with suppress(ProcessLookupError):
                    os.killpg(record["pid"], signal.SIGKILL)


def after(records: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    """The records that follow the first one of ``event_type``."""
    index = types_of(records).index(event_type)
    return records[index + 1 :]


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
    """`kernelwatch check` exits 0/1/2 by the worst level and prints JSON with --json, the
    check's notes included; without --json a table, then each note under its check's name."""
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
        assert payload["checks"][0]["notes"] == [f"gauge read {value:g}"]
    table = run_cli("check", "gauge", "--config", str(config), "--state-dir", str(tmp_path / "s"))
    assert table.returncode == 2, table.stderr
    assert "gauge: gauge read 3\n" in table.stdout
    assert table.stdout.endswith("gauge: CRITICAL\n")
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


def test_sigterm_stops_a_hung_multi_check_tier_within_its_bound(tmp_path: Path) -> None:
    """SIGTERM during a tier of hung checks: exit 0, no check starts after DaemonStopping, the
    running check is killed, and the run ends with RunDropped."""
    port = free_port()
    text = hanging_config(port, shutdown_grace_s=1.0, kill_grace_s=1.0)
    config = write_config(tmp_path / "kw.toml", text)
    state = tmp_path / "state"
    with no_orphan_checks(state), daemon_process(state, config, "--run-now", "daily") as proc:
        started = wait_until(
            lambda: [r for r in telemetry_records(state) if r["type"] == "CheckStarted"],
            what="first check started",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0  # hang guard; the bound is 1 + 1 + 5 s
    records = telemetry_records(state)
    names = types_of(records)
    assert "CheckStarted" not in types_of(after(records, "DaemonStopping"))
    assert names.count("CheckStarted") == 1
    [run] = [r for r in records if r["type"] == "RunStarted"]
    [cancelled] = [r for r in records if r["type"] == "CheckCancelled"]
    assert "cancelled" in cancelled["reason"]
    assert "CheckCrashed" not in names  # our own stop is no crash of the check
    assert [r["run_id"] for r in records if r["type"] == "RunDropped"] == [run["run_id"]]
    assert "RunCompleted" not in names
    assert "CheckEvaluated" not in names  # being stopped says nothing about the check
    assert process_gone(started[0]["pid"])


def test_second_signal_forces_exit(tmp_path: Path) -> None:
    """A second SIGTERM during a long graceful stop kills the check and exits 128 + 15 at once."""
    port = free_port()
    text = hanging_config(port, shutdown_grace_s=3600.0, kill_grace_s=3600.0)
    config = write_config(tmp_path / "kw.toml", text)
    state = tmp_path / "state"
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(60)
        env = {"NOTIFY_SOCKET": address}
        with (
            no_orphan_checks(state),
            daemon_process(state, config, "--run-now", "daily", env=env) as proc,
        ):
            started = wait_until(
                lambda: [r for r in telemetry_records(state) if r["type"] == "CheckStarted"],
                what="first check started",
            )
            proc.send_signal(signal.SIGTERM)
            while sock.recv(256).decode() != "STOPPING=1":
                pass
            proc.send_signal(signal.SIGTERM)  # the graceful stop would wait an hour
            assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert process_gone(started[0]["pid"])
    records = telemetry_records(state)  # every line parses
    assert "DaemonStopping" in types_of(records)
    assert "CheckStarted" not in types_of(after(records, "DaemonStopping"))


def test_check_target_without_module_is_refused_by_check_and_run(tmp_path: Path) -> None:
    """`config check` and `run` exit 78 naming the key of a ':attribute' check target."""
    bad = write_config(tmp_path / "bad.toml", "[checks.mine]\nmodule = ':x'\n")
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 78
    assert "checks.mine.module" in result.stderr
    assert "':x'" in result.stderr
    result = run_cli("run", "--config", str(bad), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 78
    assert "checks.mine.module" in result.stderr


def test_sighup_with_a_bad_check_target_keeps_the_daemon_running(tmp_path: Path) -> None:
    """A reload whose check target is 'x:' is rejected; the daemon keeps serving and runs."""
    port = free_port()
    config = write_config(tmp_path / "kw.toml", daemon_config(port))
    state = tmp_path / "state"
    with daemon_process(state, config) as proc:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="health")
        config.write_text(daemon_config(port) + "\n[checks.mine]\nmodule = 'x:'\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "ConfigRejected" in types_of(telemetry_records(state)), what="reject")
        assert proc.poll() is None
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    [rejected] = [r for r in telemetry_records(state) if r["type"] == "ConfigRejected"]
    assert "checks.mine.module" in rejected["error"]


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A taken HTTP port makes `run` exit 69 naming the address, before DaemonStarted."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "kw.toml", daemon_config(port))
        state = tmp_path / "state"
        result = run_cli("run", "--config", str(config), "--state-dir", str(state))
    assert result.returncode == 69, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "DaemonStarted" not in types_of(telemetry_records(state))


def test_kill_9_mid_run_is_reported_at_the_next_start(tmp_path: Path) -> None:
    """After kill -9 during a run, status says interrupted and the next start reports it once."""
    port = free_port()
    text = hanging_config(port, shutdown_grace_s=1.0, kill_grace_s=1.0)
    config = write_config(tmp_path / "kw.toml", text)
    state = tmp_path / "state"
    with no_orphan_checks(state), daemon_process(state, config, "--run-now", "daily") as proc:
        wait_until(
            lambda: "CheckStarted" in types_of(telemetry_records(state)), what="check started"
        )
        os.killpg(proc.pid, signal.SIGKILL)  # the check, in its own group, is left orphaned
        proc.wait(timeout=30)
    status = run_cli("status", "--json", "--config", str(config), "--state-dir", str(state))
    daily = next(t for t in json.loads(status.stdout)["tiers"] if t["tier"] == "daily")
    assert daily["last_status"] == "interrupted"
    for _ in range(2):
        with daemon_process(state, config) as proc:
            wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    missed = [r for r in telemetry_records(state) if r["type"] == "RunMissed"]
    assert len(missed) == 1  # reported by the first restart only
    assert "interrupted" in missed[0]["reason"]


def test_bad_counts_are_usage_errors_not_tracebacks(tmp_path: Path) -> None:
    """`schedule --count -1` and `telemetry tail -n 0` exit 2 with a message, no traceback."""
    for args in (("schedule", "--count", "-1"), ("telemetry", "tail", "-n", "0")):
        result = run_cli(*args, "--state-dir", str(tmp_path / "s"))
        assert result.returncode == 2, args
        assert "must be at least 1" in result.stderr
        assert "Traceback" not in result.stderr


def test_check_cli_unknown_target_is_unknown(tmp_path: Path) -> None:
    """`kernelwatch check nosuch` exits 3 (UNKNOWN) and names the target and the known checks."""
    config = write_config(tmp_path / "kw.toml", daemon_config(free_port()))
    result = run_cli("check", "nosuch", "--config", str(config), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 3
    assert "nosuch" in result.stderr
    assert "quick" in result.stderr  # the known checks are listed
