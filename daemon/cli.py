"""The ``kernelwatch`` command line: run the daemon, or ask it and its state questions.

Every subcommand accepts ``--config PATH`` (or ``KERNELWATCH_CONFIG``) and ``--state-dir``
(or ``KERNELWATCH_STATE_DIR``, default ``./var``). A bad config exits 78 (EX_CONFIG).
``check`` exits like a Nagios plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (an unknown
target too). ``run`` exits 0 after a stop, 69 (EX_UNAVAILABLE) when its HTTP port is taken,
and 128 + the signal number when a second SIGTERM/SIGINT forced the exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from daemon import __version__
from daemon.config import (
    EX_CONFIG,
    TIER_ORDER,
    Config,
    config_path_from_env,
    config_to_plain,
    load_config,
    state_dir_from_env,
)
from daemon.errors import ConfigError, KernelwatchError

EX_USAGE: Final = 64
EX_UNAVAILABLE: Final = 69
EX_SOFTWARE: Final = 70
EX_CHECK_UNKNOWN: Final = 3
Handler = Callable[[argparse.Namespace, Config, Path], int]
_COMMANDS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register a subcommand handler under its dotted name (``config.check``)."""

    def register(handler: Handler) -> Handler:
        _COMMANDS[name] = handler
        return handler

    return register


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", default=argparse.SUPPRESS, help="TOML file (KERNELWATCH_CONFIG)"
    )
    common.add_argument(
        "--state-dir", default=argparse.SUPPRESS, help="state directory (KERNELWATCH_STATE_DIR)"
    )
    parser = argparse.ArgumentParser(
        prog="kernelwatch", description=__doc__.splitlines()[0], parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"kernelwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    p.add_argument(
        "--run-now",
        action="append",
        default=[],
        choices=TIER_ORDER,
        metavar="TIER",
        help="queue this tier at start (repeatable)",
    )
    p = sub.add_parser("check", parents=[common], help="run a tier or a check now, exit 0-3")
    p.add_argument("target", help="a tier (daily, weekly, monthly, quarterly) or a check name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("status", parents=[common], help="last and next runs, open issues, health")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("schedule", parents=[common], help="the next runs per tier")
    p.add_argument("--count", type=positive_int, default=3, help="runs per tier (default 3)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("config", parents=[common], help="validate or show the configuration")
    csub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    c = csub.add_parser("check", parents=[common], help="validate a config file; exit 0 or 78")
    c.add_argument("path", nargs="?", help="file to check (default: --config)")
    csub.add_parser("show", parents=[common], help="print the effective configuration as JSON")

    p = sub.add_parser("telemetry", parents=[common], help="read the JSONL telemetry")
    tsub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    t = tsub.add_parser("tail", parents=[common], help="print the last events")
    t.add_argument("-n", type=positive_int, default=20, help="number of records (default 20)")
    t.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    t.add_argument("--type", action="append", default=[], help="only this event type (repeatable)")
    t.add_argument("--since", help="only records newer than this duration (90s, 15m, 2h, 7d)")

    p = sub.add_parser("baseline", parents=[common], help="performance baselines")
    bsub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    b = bsub.add_parser("record", parents=[common], help="run the daily tier N times, store it")
    b.add_argument(
        "--runs",
        type=positive_int,
        help="number of runs to pool (default: as many as the daemon learns from)",
    )
    b = bsub.add_parser("show", parents=[common], help="the stored baselines per fingerprint")
    b.add_argument("--json", action="store_true")

    from daemon.cli_recovery import add_parsers

    add_parsers(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = args.command + (f".{args.subcommand}" if getattr(args, "subcommand", None) else "")
    state_dir = state_dir_from_env(getattr(args, "state_dir", None))
    config_path = config_path_from_env(getattr(args, "config", None))
    if name == "config.check" and args.path:
        config_path = Path(args.path)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"kernelwatch: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    args.config_path = config_path
    from daemon.logs import configure_logging

    configure_logging(config.logging.level, config.logging.format)
    try:
        return _handler(name)(args, config, state_dir)
    except ConfigError as exc:
        print(f"kernelwatch: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except KernelwatchError as exc:
        print(f"kernelwatch: {exc}", file=sys.stderr)
        return EX_SOFTWARE


def _handler(name: str) -> Handler:
    from daemon.cli_recovery import COMMANDS

    return _COMMANDS.get(name) or COMMANDS[name]


@command("run")
def _run(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    from daemon.app import run_daemon
    from daemon.cli_recovery import install
    from daemon.errors import ListenError

    try:
        return run_daemon(
            config,
            args.config_path,
            state_dir,
            run_now=tuple(args.run_now),
            extra_hooks=(install,),
        )
    except ListenError as exc:
        print(f"kernelwatch: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE


@command("baseline.record")
def _baseline_record(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    from daemon.baselines import BASELINE_RUNS, record_command

    runs = BASELINE_RUNS if args.runs is None else args.runs
    return record_command(config, state_dir, runs, sys.stdout)


@command("baseline.show")
def _baseline_show(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    from daemon.baselines import show_command

    return show_command(config, state_dir, sys.stdout, args.json)


@command("config.check")
def _config_check(args: argparse.Namespace, config: Config, _state_dir: Path) -> int:
    print(f"{config.source}: OK (digest {config.digest()})")
    return 0


@command("config.show")
def _config_show(args: argparse.Namespace, config: Config, _state_dir: Path) -> int:
    json.dump(config_to_plain(config), sys.stdout, indent=2, sort_keys=True, default=str)
    print()
    return 0


@command("telemetry.tail")
def _telemetry_tail(args: argparse.Namespace, _config: Config, state_dir: Path) -> int:
    from daemon.clock import SystemClock
    from daemon.state_dir import StateLayout
    from daemon.telemetry_read import parse_duration, tail

    try:
        since = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        print(f"kernelwatch: --since: {exc}", file=sys.stderr)
        return EX_USAGE
    clock = SystemClock()
    try:
        return tail(
            StateLayout(state_dir).telemetry,
            n=args.n,
            follow=args.follow,
            types=set(args.type) or None,
            since=clock.now() - since if since is not None else None,
            out=sys.stdout,
            clock=clock,
        )
    except KeyboardInterrupt:
        return 0


@command("schedule")
def _schedule(args: argparse.Namespace, config: Config, _state_dir: Path) -> int:
    from daemon.clock import SystemClock
    from daemon.schedule import next_occurrences

    now = SystemClock().now()
    rows = []
    for name in TIER_ORDER:
        tier = config.tiers.get(name)
        if tier is None or not tier.enabled:
            continue
        for occ in next_occurrences(name, tier, now, args.count):
            rows.append(
                {
                    "tier": name,
                    "scheduled_for": occ.scheduled_for.isoformat(),
                    "window_end": occ.window_end.isoformat(),
                }
            )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        _table(sys.stdout, ["tier", "scheduled_for", "window_end"], rows)
    return 0


@command("check")
def _check(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    from daemon.errors import RegistryError
    from daemon.oneshot import run_once

    try:
        status, payload = run_once(config, state_dir, args.target)
    except RegistryError as exc:
        # Nagios semantics: a check that cannot be run is UNKNOWN, not a software error.
        message = f"{exc}; tiers: {', '.join(TIER_ORDER)}"
        print(f"kernelwatch: {args.target}: {message}", file=sys.stderr)
        if args.json:
            unknown = {"target": args.target, "status": "unknown", "exit_code": 3}
            json.dump({**unknown, "error": message, "checks": []}, sys.stdout, indent=2)
            print()
        return EX_CHECK_UNKNOWN
    if args.json:
        json.dump(payload, sys.stdout, indent=2, default=str)
        print()
    else:
        rows = [
            {
                "check": c["check"],
                "status": c["status"].upper(),
                "duration_s": f"{c['duration_s']:.2f}",
                "measurements": str(len(c["measurements"])),
                "detail": c["error"] or "; ".join(c["breaches"]) or "-",
            }
            for c in payload["checks"]
        ]
        _table(sys.stdout, ["check", "status", "duration_s", "measurements", "detail"], rows)
        for c in payload["checks"]:
            for note in c["notes"]:
                print(f"{c['check']}: {note}")
        print(f"{payload['target']}: {payload['status'].upper()}")
    return int(status)


@command("status")
def _status(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    from daemon.status import collect_status

    payload = collect_status(config, state_dir)
    if args.json:
        json.dump(payload, sys.stdout, indent=2, default=str)
        print()
        return 0
    print(f"daemon: {payload['daemon']['status']}  ({payload['daemon'].get('detail', '')})")
    _table(
        sys.stdout,
        ["tier", "last_started", "last_status", "last_success", "next_run"],
        payload["tiers"],
    )
    issues = payload["open_issues"]
    print("open issues: " + (", ".join(f"{k} ({v})" for k, v in issues.items()) or "none"))
    return 0


def _table(out: TextIO, columns: list[str], rows: list[dict[str, Any]]) -> None:
    widths = {c: max([len(c), *(len(str(r.get(c, ""))) for r in rows)]) for c in columns}
    out.write("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in rows:
        out.write("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
