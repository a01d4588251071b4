"""The daemon's own health (/healthz, WATCHDOG=1) during a long but healthy check."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.config import load_config
from tests.helpers import wait_until, write_config

# The check may run an hour, far beyond runner.default_timeout_s: that is its own deadline.
CONFIG = """
[http]
enabled = false
[daemon]
tick_s = 0.05
shutdown_grace_s = 0.5
[runner]
default_timeout_s = 60.0
kill_grace_s = 0.5
[checks.sleep_forever]
module = 'tests.fixtures.checks:SleepForever'
timeout_s = 3600.0
[tiers.daily]
checks = ['sleep_forever']
[tiers.weekly]
enabled = false
[tiers.monthly]
enabled = false
[tiers.quarterly]
enabled = false
[recovery]
enabled = false
"""


def test_long_check_within_its_own_deadline_is_healthy(tmp_path: Path) -> None:
    """A check running longer than the default timeout but within its own deadline is healthy."""
    clock = FakeClock(datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    config = load_config(write_config(tmp_path / "kw.toml", CONFIG))
    daemon = Daemon(config=config, config_path=None, state_dir=tmp_path / "state", clock=clock)
    daemon.start()
    loop = threading.Thread(target=daemon.serve_forever)
    try:
        daemon.enqueue("daily", "manual", clock.now(), None)
        wait_until(lambda: daemon.runner.running_pid is not None, what="check running")
        loop.start()
        clock.advance(600)  # ten default timeouts on the daemon's clock
        ticked = clock.monotonic()
        wait_until(lambda: daemon.health()[1]["loop_age_s"] == 0, what="a tick after the advance")
        assert clock.monotonic() == ticked
        ok, body = daemon.health()
        assert ok, body
        assert body["running"] == "daily"
    finally:
        daemon.request_stop("test")
        if loop.is_alive():
            loop.join(60)
        else:
            daemon.shutdown()
        daemon.runner.kill_now()
    assert not loop.is_alive()
