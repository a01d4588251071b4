"""The systemd unit, verified and scored by real systemd-analyze, and the launchd plist."""

from __future__ import annotations

import plistlib
import re
import subprocess
from pathlib import Path

import pytest

from tests.ops._support import PLIST, UNIT, kernelwatch_script
from tests.real_programs import require_program

MAX_EXPOSURE = 2.0


def unit_settings() -> dict[str, list[str]]:
    """Parse the unit into {"Section.Key": [values in order]} (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


@pytest.fixture
def unit_with_real_exec_start(tmp_path: Path) -> Path:
    """A temporary copy of the unit whose ExecStart is this environment's installed script."""
    script = kernelwatch_script()
    assert script.is_file(), f"the kernelwatch console script is not installed at {script}"
    text = UNIT.read_text(encoding="utf-8")
    assert "ExecStart=/usr/local/bin/kernelwatch " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("/usr/local/bin/kernelwatch", str(script)), encoding="utf-8")
    return copy


def test_unit_declares_the_service_contract() -> None:
    """The unit is a notify service with a watchdog, restart, reload, state dir and no root."""
    s = unit_settings()
    assert s["Service.Type"] == ["notify"]
    assert int(s["Service.WatchdogSec"][0]) > 0
    assert s["Service.Restart"] == ["on-failure"]
    assert s["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Service.StateDirectory"] == ["kernelwatch"]
    assert s["Service.ExecStart"] == [
        "/usr/local/bin/kernelwatch run --state-dir /var/lib/kernelwatch"
    ]
    assert s.get("Service.DynamicUser") == ["yes"] or "Service.User" in s
    assert s["Install.WantedBy"] == ["multi-user.target"]


def test_unit_hardening_leaves_what_the_daemon_needs() -> None:
    """Hardening is on, but child processes, JIT-compiled MLX code and loopback TCP still work."""
    s = unit_settings()
    assert s["Service.ProtectSystem"] == ["strict"]
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "PrivateDevices"):
        assert s[f"Service.{key}"] == ["yes"], key
    families = set(" ".join(s["Service.RestrictAddressFamilies"]).split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # MLX's CPU compile runs g++ and dlopen()s the result; user checks may JIT for real.
    assert "Service.MemoryDenyWriteExecute" not in s
    filters = " ".join(s["Service.SystemCallFilter"])
    assert "@system-service" in filters
    assert "@process" not in filters.replace("@system-service", "")  # fork/exec stay allowed


def test_systemd_analyze_verify_is_silent(unit_with_real_exec_start: Path) -> None:
    """`systemd-analyze verify` prints nothing on stderr for the unit."""
    analyze = require_program("systemd-analyze", package="systemd")
    result = subprocess.run(
        [analyze, "verify", str(unit_with_real_exec_start)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stderr == "", result.stderr
    assert result.returncode == 0, result.stdout


def test_systemd_analyze_security_exposure_is_low() -> None:
    """`systemd-analyze security --offline=yes` scores the unit at most 2.0."""
    analyze = require_program("systemd-analyze", package="systemd")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_launchd_plist_holds_the_required_keys() -> None:
    """The plist parses and keeps the daemon alive, throttled, logged and pointed at its state."""
    with PLIST.open("rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "com.kernelwatch.daemon"
    args = plist["ProgramArguments"]
    assert Path(args[0]).name == "kernelwatch"
    assert args[1] == "run"
    state_dir = args[args.index("--state-dir") + 1]
    assert plist["EnvironmentVariables"]["KERNELWATCH_STATE_DIR"] == state_dir
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] is True
    assert isinstance(plist["ThrottleInterval"], int)
    assert plist["ThrottleInterval"] >= 10
    assert Path(plist["StandardOutPath"]).is_absolute()
    assert Path(plist["StandardErrorPath"]).is_absolute()
