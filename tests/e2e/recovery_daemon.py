"""Start a real daemon with the recovery engine installed, for the end-to-end drill tests.

``python -m tests.e2e.recovery_daemon CONFIG STATE_DIR SETTINGS_JSON`` is ``kernelwatch run``
plus ``daemon.cli_recovery.install`` as a start hook, with the recovery settings given as
JSON (until ``Config`` carries a ``recovery`` table, a config file cannot set them).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import daemon.cli_recovery as cli_recovery
from daemon.app import run_daemon
from daemon.config import load_config
from daemon.logs import configure_logging
from daemon.recovery_config import RecoverySettings


def main() -> int:
    config_path, state_dir = Path(sys.argv[1]), Path(sys.argv[2])
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    settings = RecoverySettings()
    policy = {k: replace(v, **extra.get("policy", {})) for k, v in settings.policy.items()}
    cli_recovery.SETTINGS_OVERRIDE = replace(
        settings,
        policy=policy,
        stop_command=tuple(extra.get("stop_command", ())),
        stop_timeout_s=10.0,
    )
    config = load_config(config_path)
    configure_logging(config.logging.level, "json")
    return run_daemon(
        config,
        config_path,
        state_dir,
        run_now=tuple(extra.get("run_now", ())),
        extra_hooks=(cli_recovery.install,),
    )


if __name__ == "__main__":
    sys.exit(main())
