"""The recovery subcommands (checkpoint, recover, resume, inject, policy test) and daemon wiring.

``add_parsers(sub, common)`` adds the subcommands; each sets ``handler`` and is also listed
in ``COMMANDS`` under the dotted name ``daemon.cli`` dispatches on. ``install(daemon)`` is
the start hook that wires the engine, its tick hook and the ``skip_kernels`` options
provider into ``kernelwatch run``. ``main(argv)`` runs these subcommands on their own.

The CLI has no bus: ``recover`` runs the procedure through a local engine whose events are
printed, and the daemon's profile watcher publishes the resulting ``ProfileChanged``;
``resume`` clears the marks in the store and the daemon publishes ``KernelsResumed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from daemon.checkpoints import CheckpointStore, restore
from daemon.clock import SystemClock
from daemon.config import Config
from daemon.errors import RecoveryError
from daemon.events import CheckpointCorrupt, Event, KernelsResumed
from daemon.procedures import (
    ALL_KERNELS,
    KeyValueStore,
    aborted_kernels,
    load_procedures,
    resume_kernels,
)
from daemon.profile_store import active_exists, read_active, write_active
from daemon.recovery_config import DrillSettings, RecoverySettings
from daemon.state_dir import StateLayout
from daemon.store import StateStore
from kernels.profile import canonical_profile

if TYPE_CHECKING:
    from daemon.app import Daemon

Handler = Callable[[argparse.Namespace, Config, Path], int]
# The kernels `*` (every kernel) expands to; the daemon cannot ask the registry (it imports MLX).
BUILTIN_KERNELS: Final = ("fisher", "octahedron", "quantum")
EX_FAILED: Final = 1


def recovery_settings(config: Config) -> RecoverySettings:
    return config.recovery


def drill_settings(config: Config) -> DrillSettings:
    return config.drills


def _print_event(event: Event) -> None:
    record = event.to_record()
    for key in ("schema", "seq", "host", "at"):
        record.pop(key, None)
    print(json.dumps(record, sort_keys=True))


# --- checkpoint ------------------------------------------------------------------------


def _checkpoints(state_dir: Path) -> CheckpointStore:
    return CheckpointStore(StateLayout(state_dir).checkpoints)


def checkpoint_list(args: argparse.Namespace, _config: Config, state_dir: Path) -> int:
    rows = []
    for row in _checkpoints(state_dir).entries():
        m = row.manifest
        rows.append(
            {
                "id": row.id,
                "status": "ok" if m else "CORRUPT",
                "stable": m.stable if m else None,
                "score": m.score if m else None,
                "profile_id": m.profile_id if m else "",
                "reason": m.reason if m else row.error,
            }
        )
    if getattr(args, "json", False):
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.4g}"
        stable = "stable" if r["stable"] else "-"
        print(f"{r['id']}  {r['status']:<7}  {stable:<6}  {score:>8}  {r['reason']}")
    return 0


def checkpoint_show(args: argparse.Namespace, _config: Config, state_dir: Path) -> int:
    manifest = _checkpoints(state_dir).verify(args.id)
    json.dump(manifest.to_json(), sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


def checkpoint_create(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    manifest = _checkpoints(state_dir).create(
        read_active(state_dir), stable=bool(args.stable), reason=args.reason
    )
    print(manifest.id)
    return 0


def checkpoint_restore(args: argparse.Namespace, _config: Config, state_dir: Path) -> int:
    restored, corrupt = restore(_checkpoints(state_dir), state_dir, args.id)
    for checkpoint_id, error in corrupt:
        print(f"skipped corrupt checkpoint {checkpoint_id}: {error}", file=sys.stderr)
    if restored is None:
        print("kernelwatch: no good checkpoint to restore", file=sys.stderr)
        return EX_FAILED
    verb = "restored" if restored.changed else "already active:"
    print(f"{verb} {restored.manifest.id} (profile {restored.manifest.profile_id})")
    return 0


def checkpoint_prune(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    settings = recovery_settings(config)
    keep_stable = args.keep_stable if args.keep_stable is not None else settings.keep_stable
    keep_best = args.keep_best if args.keep_best is not None else settings.keep_best
    for checkpoint_id in _checkpoints(state_dir).prune(
        keep_stable=keep_stable, keep_best=keep_best
    ):
        print(f"removed {checkpoint_id}")
    return 0


# --- recover, resume, inject -----------------------------------------------------------


def recover(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    """Run one procedure now through the engine; events are printed as JSON lines."""
    from daemon.bus import EventBus
    from daemon.recovery import InlineWorker, RecoveryEngine

    settings = recovery_settings(config)
    procedures = load_procedures(settings)
    if args.procedure not in procedures:
        known = ", ".join(sorted(procedures))
        raise RecoveryError(f"unknown procedure {args.procedure!r} (known: {known})")
    layout = StateLayout(state_dir)
    layout.create()
    clock = SystemClock()
    outcome: list[str] = []
    with StateStore.open(layout.database) as store:
        bus = EventBus(clock)
        bus.subscribe("print", _print_event)
        bus.subscribe("outcome", lambda e: outcome.append(e.type_name))
        engine = RecoveryEngine(
            bus=bus,
            clock=clock,
            store=store,
            state_dir=state_dir,
            settings=settings,
            procedures=procedures,
            enqueue=lambda *_a: None,  # the daemon's watcher re-checks a changed profile
            tiers=dict,
            worker=InlineWorker(),
            watch_profile=False,
        )
        engine.run_manual(args.procedure)
    return 0 if "RecoverySucceeded" in outcome else EX_FAILED


def resume(args: argparse.Namespace, _config: Config, state_dir: Path) -> int:
    layout = StateLayout(state_dir)
    layout.create()
    with StateStore.open(layout.database) as store:
        resumed = resume_kernels(store, tuple(args.kernels))
    print("resumed: " + (", ".join(resumed) or "nothing was aborted"))
    return 0


def inject(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    from daemon.drills import inject as inject_fault

    try:
        profile = inject_fault(state_dir, args.fault, args.yes, drill_settings(config))
    except RecoveryError as exc:
        print(f"kernelwatch: {exc}", file=sys.stderr)
        return 64  # EX_USAGE: refused
    print(f"injected {args.fault}: active profile is now {profile.profile_id}")
    return 0


def policy_test(args: argparse.Namespace, _config: Config, _state_dir: Path) -> int:
    from daemon.policy_test import run_policy_tests

    return run_policy_tests([Path(p) for p in args.files], out=sys.stdout)


COMMANDS: Final[Mapping[str, Handler]] = {
    "checkpoint.list": checkpoint_list,
    "checkpoint.show": checkpoint_show,
    "checkpoint.create": checkpoint_create,
    "checkpoint.restore": checkpoint_restore,
    "checkpoint.prune": checkpoint_prune,
    "recover": recover,
    "resume": resume,
    "inject": inject,
    "policy.test": policy_test,
}


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the recovery subcommands to ``sub`` (an argparse subparsers object)."""
    from daemon.drills import FAULTS

    p = sub.add_parser("checkpoint", parents=[common], help="list, show, create, restore, prune")
    csub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    c = csub.add_parser("list", parents=[common], help="checkpoints, oldest first, verified")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=checkpoint_list)
    c = csub.add_parser("show", parents=[common], help="a checkpoint's verified manifest")
    c.add_argument("id")
    c.set_defaults(handler=checkpoint_show)
    c = csub.add_parser("create", parents=[common], help="checkpoint the active profile")
    c.add_argument("--stable", action="store_true", help="mark it stable (a person vouches)")
    c.add_argument("--reason", default="manual")
    c.set_defaults(handler=checkpoint_create)
    c = csub.add_parser("restore", parents=[common], help="make a checkpoint active")
    c.add_argument("id", nargs="?", help="default: the newest good stable checkpoint")
    c.set_defaults(handler=checkpoint_restore)
    c = csub.add_parser("prune", parents=[common], help="keep newest N stable and best K")
    c.add_argument("--keep-stable", type=int)
    c.add_argument("--keep-best", type=int)
    c.set_defaults(handler=checkpoint_prune)

    p = sub.add_parser("recover", parents=[common], help="run a recovery procedure now")
    p.add_argument("procedure")
    p.set_defaults(handler=recover)
    p = sub.add_parser("resume", parents=[common], help="let aborted kernels run again")
    p.add_argument("kernels", nargs="*", metavar="KERNEL", help="default: all")
    p.set_defaults(handler=resume)
    p = sub.add_parser("inject", parents=[common], help="corrupt the active profile (drill)")
    p.add_argument("fault", choices=sorted(FAULTS))
    p.add_argument("--yes", action="store_true", help="yes, corrupt the active profile")
    p.set_defaults(handler=inject)
    p = sub.add_parser("policy", parents=[common], help="test the recovery policy")
    psub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    t = psub.add_parser("test", parents=[common], help="run policy test files; exit 0 or 1")
    t.add_argument("files", nargs="+", metavar="FILE")
    t.set_defaults(handler=policy_test)


# --- daemon wiring ---------------------------------------------------------------------


def skip_kernels_provider(store: KeyValueStore) -> Callable[[str, str], dict[str, Any]]:
    """Options provider: aborted kernels go to every check's ``skip_kernels``."""

    def provide(_check: str, _tier: str) -> dict[str, Any]:
        aborted = set(aborted_kernels(store))
        if not aborted:
            return {}
        if ALL_KERNELS in aborted:
            aborted |= set(BUILTIN_KERNELS)
        return {"skip_kernels": sorted(aborted)}

    return provide


def install(daemon: Daemon) -> None:
    """Start hook of ``kernelwatch run``: the engine, its tick hook, the options provider."""
    from daemon.recovery import RecoveryEngine

    settings = recovery_settings(daemon.config)
    root = daemon.layout.root
    if not active_exists(root):
        write_active(root, canonical_profile(), "initial")
    try:
        from checks.fingerprint import collect_fingerprint

        fingerprint = collect_fingerprint().digest()
    except Exception:  # noqa: BLE001 - a fingerprint labels checkpoints; never a reason not to start
        fingerprint = ""

    def tiers() -> dict[str, tuple[str, ...]]:
        return {name: t.checks for name, t in daemon.config.tiers.items() if t.enabled}

    engine = RecoveryEngine(
        bus=daemon.bus,
        clock=daemon.clock,
        store=daemon.store,
        state_dir=root,
        settings=settings,
        procedures=load_procedures(settings),
        enqueue=daemon.enqueue,
        tiers=tiers,
        rules=lambda: daemon.config.rules,
        open_series=daemon.evaluator.open_series,
        fingerprint=fingerprint,
    )
    daemon.bus.subscribe("recovery", engine)
    daemon.recovery = engine  # type: ignore[attr-defined]
    engine.start()
    daemon.options_providers.append(skip_kernels_provider(daemon.store))
    seen = set(aborted_kernels(daemon.store))

    def on_tick() -> None:
        nonlocal seen
        engine.tick()
        now = set(aborted_kernels(daemon.store))
        if seen - now:
            daemon.bus.publish(KernelsResumed(kernels=tuple(sorted(seen - now))))
        seen = now

    daemon.add_tick_hook(on_tick)
    for checkpoint in engine.checkpoints.entries():
        if checkpoint.manifest is None:
            daemon.bus.publish(
                CheckpointCorrupt(checkpoint_id=checkpoint.id, error=checkpoint.error)
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one recovery subcommand (``python -m daemon.cli_recovery ...``), as ``daemon.cli``
    will once it calls ``add_parsers``; same options, config loading and exit codes."""
    from daemon.config import EX_CONFIG, config_path_from_env, load_config, state_dir_from_env
    from daemon.errors import ConfigError, KernelwatchError

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML file")
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help="state directory")
    parser = argparse.ArgumentParser(prog="kernelwatch", parents=[common])
    add_parsers(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args(argv)
    try:
        config = load_config(config_path_from_env(getattr(args, "config", None)))
    except ConfigError as exc:
        print(f"kernelwatch: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    state_dir = state_dir_from_env(getattr(args, "state_dir", None))
    try:
        code: int = args.handler(args, config, state_dir)
    except KernelwatchError as exc:
        print(f"kernelwatch: {exc}", file=sys.stderr)
        return 70  # EX_SOFTWARE, as daemon.cli
    return code


if __name__ == "__main__":
    sys.exit(main())
