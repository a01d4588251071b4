"""Shared helpers of the end-to-end drill tests: a state dir, a config and a real daemon.

``Env`` starts ``kernelwatch run`` as a child process group on a free port and reads back its
JSONL telemetry and ``/metrics``; ``in_order`` finds a sequence of records in the telemetry;
``assert_verified`` checks that a repair was verified by a run after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daemon.config import load_config
from tests.helpers import ROOT, free_port, http_get, telemetry_records, wait_until


def rules_toml(unhealthy_after: int = 1, only: Sequence[str] | None = None) -> str:
    """The default rules (those named in ``only`` when given), check_unhealthy after
    ``unhealthy_after`` failures."""
    out = []
    for r in load_config(None).rules:
        if only is not None and r.name not in only:
            continue
        lines = [
            "[[rules]]",
            f'name = "{r.name}"',
            f'measurement = "{r.measurement}"',
            f'issue = "{r.issue}"',
            f'direction = "{r.direction}"',
        ]
        if r.warn is not None:
            lines.append(f"warn = {r.warn!r}")
        if r.crit is not None:
            lines.append(f"crit = {r.crit!r}")
        if r.labels:
            lines.append(
                "labels = {" + ", ".join(f'{k} = "{v}"' for k, v in r.labels.items()) + "}"
            )
        raise_after = unhealthy_after if r.name == "check_unhealthy" else r.raise_after
        lines += [f"raise_after = {raise_after}", f"clear_after = {r.clear_after}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def base_config(
    port: int, coherence: str = "sizes = [16]\nbatch = 4", daily: str = "enabled = false"
) -> str:
    """Quick weekly and monthly tiers that only run when asked; quarterly enabled as by
    default but never due (a stable checkpoint must not wait for it), daily as given (off by
    default)."""
    return f"""
[daemon]
tick_s = 0.2
shutdown_grace_s = 5.0
[http]
port = {port}
[telemetry]
flush_every_records = 1
flush_every_s = 0.1
[tiers.daily]
{daily}
[tiers.quarterly]
cron = "0 0 1 1 *"
catch_up_grace_s = 0.0
[tiers.weekly]
cron = "0 0 1 1 *"
catch_up_grace_s = 0.0
checks = ["geometry"]
[tiers.monthly]
cron = "0 0 1 1 *"
catch_up_grace_s = 0.0
checks = ["coherence"]
[checks.geometry]
timeout_s = 5.0
[checks.geometry.options]
rounds = 2
kernels = ["octahedron"]
[checks.coherence]
timeout_s = 60.0
[checks.coherence.options]
{coherence}
kernels = ["quantum"]
"""


class Env:
    """A state dir, a config and a port for one daemon."""

    def __init__(
        self,
        tmp_path: Path,
        coherence: str = "sizes = [16]\nbatch = 4",
        *,
        daily: str = "enabled = false",
        extra: str = "",
        rules: str | None = None,
    ) -> None:
        self.state = tmp_path / "state"
        self.port = free_port()
        self.config = tmp_path / "config.toml"
        body = base_config(self.port, coherence, daily) + extra
        self.config.write_text(body + "\n" + (rules_toml() if rules is None else rules))
        self.log = tmp_path / "daemon.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "daemon.cli", *args]
        argv += ["--state-dir", str(self.state), "--config", str(self.config)]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)

    def records(self) -> list[dict[str, Any]]:
        return telemetry_records(self.state)

    def of_type(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["type"] == name]

    @contextmanager
    def daemon(
        self,
        *,
        run_now: tuple[str, ...] | list[str] = (),
        policy: dict[str, Any] | None = None,
        stop_command: list[str] | None = None,
        recovery: dict[str, Any] | None = None,
    ) -> Iterator[subprocess.Popen[bytes]]:
        """Start `kernelwatch run` with a `[recovery]` table setting the given overrides:
        ``recovery`` keys of the table itself, ``policy`` keys of every issue's policy."""
        table = "\n[recovery]\nstop_timeout_s = 10.0\n"
        if stop_command is not None:
            table += f"stop_command = {json.dumps(stop_command)}\n"
        table += "".join(f"{k} = {json.dumps(v)}\n" for k, v in (recovery or {}).items())
        for issue in load_config().recovery.policy:
            table += f"[recovery.policy.{issue}]\n"
            table += "".join(f"{k} = {json.dumps(v)}\n" for k, v in (policy or {}).items())
        config = self.config.with_name("config-run.toml")
        config.write_text(self.config.read_text() + table)
        argv = [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)]
        argv += ["--state-dir", str(self.state)]
        for tier in run_now:
            argv += ["--run-now", tier]
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)

    def wait_stable_checkpoint(self, timeout: float = 60) -> None:
        wait_until(
            lambda: self.of_type("CheckpointCreated"), timeout=timeout, what="first checkpoint"
        )

    def metrics(self) -> str:
        status, body = http_get(f"http://127.0.0.1:{self.port}/metrics")
        assert status == 200
        return body.decode()


def in_order(records: list[dict[str, Any]], steps: list[dict[str, Any]]) -> list[int]:
    """Indices of records matching each step (all of its fields), each after the previous."""
    found: list[int] = []
    start = 0
    for step in steps:
        for i in range(start, len(records)):
            if all(records[i].get(k) == v for k, v in step.items()):
                found.append(i)
                start = i + 1
                break
        else:
            raise AssertionError(f"no {step} after record {start}: {records[start:][:40]}")
    return found


#: The daily tier runs only when asked (--run-now, a profile change, a verification).
DAILY = 'cron = "0 0 1 1 *"\ncatch_up_grace_s = 0.0\nchecks = ["performance"]'
DAILY_RULES = ("memory_overhead", "cache_efficiency", "performance_regression", "host_slowdown")


def performance_options(batches: list[str]) -> str:
    """Small options: the octahedron only, a few batch configs, 12 timed calls (a one-sided
    Mann–Whitney test of 12 against 12 can reach p = 1/C(24, 12) ≈ 4e-7, below alpha), and
    a 5 s pause before a crossing is re-timed (the drills slow the kernel on every call)."""
    names = ", ".join(f'"{b}"' for b in batches)
    return f"""
[checks.performance]
timeout_s = 120.0
[checks.performance.options]
kernels = ["octahedron"]
batches = [{names}]
repetitions = 12
warmup = 2
extra_timing_s = 0
confirm_after_s = 5.0
"""


def daily_env(tmp_path: Path, rule: str, batches: list[str]) -> Env:
    """An Env whose daily tier runs the performance check with ``rule`` as its only daily rule."""
    names = [r.name for r in load_config(None).rules]
    only = [n for n in names if n not in DAILY_RULES or n == rule]
    return Env(
        tmp_path, daily=DAILY, extra=performance_options(batches), rules=rules_toml(only=only)
    )


def recovery_metric_lines(metrics: str, procedure: str, outcome: str) -> list[str]:
    """The ``kernelwatch_recovery_actions_total`` samples of ``procedure`` with ``outcome``."""
    return [
        line
        for line in metrics.splitlines()
        if line.startswith("kernelwatch_recovery_actions_total{")
        and f'outcome="{outcome}"' in line
        and f'procedure="{procedure}"' in line
    ]


def assert_verified(records: list[dict[str, Any]], issue: str, procedure: str) -> None:
    """The issue's first ThresholdCleared after the procedure came from a run started after
    it, and the engine queued a verification run (or joined one already queued)."""
    started = in_order(records, [{"type": "RecoveryStarted", "issue": issue}])[0]
    cleared = in_order(records[started:], [{"type": "ThresholdCleared", "issue": issue}])[0]
    run_id = records[started + cleared]["run_id"]
    run_started = [i for i, r in enumerate(records) if r["type"] == "RunStarted"]
    (index,) = [i for i in run_started if records[i]["run_id"] == run_id]
    assert index > started, f"{issue} cleared by run {run_id}, started before {procedure}"
    asked = [
        r
        for r in records[started:]
        if (r["type"] == "RunScheduled" and r["trigger"] == "verify")
        or (r["type"] == "RunMissed" and r["reason"] == "coalesced with a queued run")
    ]
    assert asked, f"no verification of {procedure} was queued"
