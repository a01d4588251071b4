"""The recovery subcommands (checkpoint, recover, resume, inject, policy test) and daemon wiring.

``add_parsers(sub, common)`` adds the subcommands; each sets ``handler`` and is also listed
in ``COMMANDS`` under the dotted name ``daemon.cli`` dispatches on. ``install(daemon)`` is
the start hook that wires the engine, the state lock, the request inbox, its tick hook and
the ``skip_kernels`` options provider into ``kernelwatch run``. ``main(argv)`` runs these
subcommands on their own.

``recover`` and ``resume`` go through the running daemon (``daemon.control``: a request in
its inbox, answered on its next tick), so their events reach its telemetry, metrics and
alerts. With no daemon running they run locally under the state lock, through the same
engine, and append their events to the telemetry JSONL themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from daemon.bus import EventBus
from daemon.checkpoints import CheckpointStore, restore
from daemon.clock import Clock, SystemClock
from daemon.config import Config
from daemon.control import Inbox, StateLock, ask_daemon, new_request
from daemon.errors import RecoveryError
from daemon.events import CheckpointCorrupt, Event, KernelsResumed
from daemon.procedures import (
    ALL_KERNELS,
    KeyValueStore,
    Procedure,
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


def _print_record(record: dict[str, Any]) -> None:
    for key in ("schema", "seq", "host", "at"):
        record.pop(key, None)
    print(json.dumps(record, sort_keys=True))


def _print_event(event: Event) -> None:
    _print_record(event.to_record())


def environment_fingerprint() -> str:
    """The environment fingerprint's digest, or "" where it cannot be collected."""
    try:
        from checks.fingerprint import collect_fingerprint

        return collect_fingerprint().digest()
    except Exception:  # noqa: BLE001 - a fingerprint labels checkpoints; never a reason to fail
        return ""


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
        read_active(state_dir),
        stable=bool(args.stable),
        reason=args.reason,
        fingerprint=environment_fingerprint(),
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
        keep_stable=keep_stable, keep_best=keep_best, include_unstable=bool(args.unstable)
    ):
        print(f"removed {checkpoint_id}")
    return 0


# --- recover, resume, inject -----------------------------------------------------------


def _wait_s(args: argparse.Namespace, settings: RecoverySettings) -> float:
    """How long to wait for the daemon: what a procedure and a stop command may take."""
    given = getattr(args, "timeout", None)
    return float(given) if given is not None else _default_wait_s(settings)


def _default_wait_s(settings: RecoverySettings) -> float:
    return settings.procedure_timeout_s + settings.stop_timeout_s + 60.0


@contextlib.contextmanager
def _local_bus(config: Config, state_dir: Path, clock: Clock) -> Iterator[EventBus]:
    """A bus for a run without the daemon: events printed and appended to the telemetry."""
    from daemon.telemetry import TelemetrySink, last_sequence

    telemetry = StateLayout(state_dir).telemetry
    sink = TelemetrySink(telemetry, config.telemetry, clock)
    bus = EventBus(clock, first_seq=last_sequence(telemetry) + 1)
    bus.subscribe("telemetry", sink)
    bus.subscribe("print", _print_event)
    try:
        yield bus
    finally:
        sink.close()


def recover(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    """Run one procedure now through the engine, the daemon's when one runs; the events of
    the attempt are printed as JSON lines; exit 0 when it succeeded."""
    settings = recovery_settings(config)
    procedures = load_procedures(settings)
    if args.procedure not in procedures:
        known = ", ".join(sorted(procedures))
        raise RecoveryError(f"unknown procedure {args.procedure!r} (known: {known})")
    layout = StateLayout(state_dir)
    layout.create()
    clock = SystemClock()
    lock = StateLock(state_dir, "kernelwatch recover")
    if not lock.try_acquire():
        request = new_request("recover", procedure=args.procedure)
        result = ask_daemon(state_dir, request, timeout_s=_wait_s(args, settings), clock=clock)
        for record in result.get("events", []):
            _print_record(dict(record))
        if result.get("error"):
            print(f"kernelwatch: {result['error']}", file=sys.stderr)
        return 0 if result.get("ok") else EX_FAILED
    try:
        return _recover_locally(args.procedure, config, state_dir, procedures, clock)
    finally:
        lock.release()


def _recover_locally(
    procedure: str,
    config: Config,
    state_dir: Path,
    procedures: Mapping[str, Procedure],
    clock: Clock,
) -> int:
    from daemon.recovery import InlineWorker, RecoveryEngine

    outcome: list[str] = []
    with (
        StateStore.open(StateLayout(state_dir).database) as store,
        _local_bus(config, state_dir, clock) as bus,
    ):
        bus.subscribe("outcome", lambda e: outcome.append(e.type_name))
        engine = RecoveryEngine(
            bus=bus,
            clock=clock,
            store=store,
            state_dir=state_dir,
            settings=recovery_settings(config),
            procedures=procedures,
            enqueue=lambda *_a: None,  # the daemon's watcher re-checks a changed profile
            tiers=dict,
            worker=InlineWorker(),
            fingerprint=environment_fingerprint(),
            watch_profile=False,
        )
        engine.run_manual(procedure)
    return 0 if "RecoverySucceeded" in outcome else EX_FAILED


def resume(args: argparse.Namespace, config: Config, state_dir: Path) -> int:
    """Let aborted kernels run again, through the daemon when one runs (KernelsResumed)."""
    layout = StateLayout(state_dir)
    layout.create()
    clock = SystemClock()
    kernels = tuple(args.kernels)
    lock = StateLock(state_dir, "kernelwatch resume")
    if not lock.try_acquire():
        request = new_request("resume", kernels=kernels)
        settings = recovery_settings(config)
        result = ask_daemon(state_dir, request, timeout_s=_wait_s(args, settings), clock=clock)
        if not result.get("ok"):
            print(f"kernelwatch: {result.get('error', 'resume failed')}", file=sys.stderr)
            return EX_FAILED
        resumed = tuple(str(k) for k in result.get("resumed", []))
    else:
        try:
            with StateStore.open(layout.database) as store:
                resumed = resume_kernels(store, kernels)
            if resumed:
                with _local_bus(config, state_dir, clock) as bus:
                    bus.unsubscribe("print")
                    bus.publish(KernelsResumed(kernels=tuple(sorted(resumed))))
        finally:
            lock.release()
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
    c.add_argument(
        "--unstable",
        action="store_true",
        help="also remove non-stable (forensic, manual) checkpoints outside the best K",
    )
    c.set_defaults(handler=checkpoint_prune)

    wait = "seconds to wait for the running daemon's answer (default: procedure_timeout_s "
    wait += "+ stop_timeout_s + 60)"
    p = sub.add_parser("recover", parents=[common], help="run a recovery procedure now")
    p.add_argument("procedure")
    p.add_argument("--timeout", type=float, help=wait)
    p.set_defaults(handler=recover)
    p = sub.add_parser("resume", parents=[common], help="let aborted kernels run again")
    p.add_argument("kernels", nargs="*", metavar="KERNEL", help="default: all")
    p.add_argument("--timeout", type=float, help=wait)
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
    """Start hook of ``kernelwatch run``: the state lock, the engine, the request inbox, the
    tick hook (engine, inbox, resumed kernels) and the options provider."""
    from daemon.recovery import RecoveryEngine, pending_attempts

    settings = recovery_settings(daemon.config)
    root = daemon.layout.root
    # Held for the daemon's life; a local `recover`/`resume` holding it ends within this.
    lock = StateLock(root, "kernelwatch run")
    lock.acquire(timeout_s=_default_wait_s(settings), clock=daemon.clock)
    daemon.state_lock = lock  # type: ignore[attr-defined]
    if not active_exists(root):
        write_active(root, canonical_profile(), "initial")

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
        fingerprint=environment_fingerprint(),
    )
    # The inbox hears the outcome of a request resumed by engine.start(): subscribe it first.
    inbox = Inbox(
        root,
        clock=daemon.clock,
        recover=lambda procedure, attempt_id: engine.run_manual(procedure, attempt_id=attempt_id),
        resume=lambda kernels: resume_kernels(daemon.store, kernels),
        pending=pending_attempts(daemon.store),
    )
    daemon.bus.subscribe("control", inbox)
    daemon.bus.subscribe("recovery", engine)
    daemon.recovery = engine  # type: ignore[attr-defined]
    engine.start()
    daemon.options_providers.append(skip_kernels_provider(daemon.store))
    seen = set(aborted_kernels(daemon.store))

    def on_tick() -> None:
        nonlocal seen
        engine.tick()
        inbox.tick()
        # Marks cleared by a resume request (or by hand) are published once, here.
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
