"""The recovery policy and drill settings, as frozen dataclasses that ``daemon.config`` converts.

The lead's ``Config`` carries ``recovery: RecoverySettings`` and ``drills: DrillSettings``;
the embedded defaults are in ``recovery_defaults.toml``. ``validate_recovery`` does the range
checks that types cannot express, raising ``ConfigError`` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from daemon.errors import ConfigError

BUILTIN_PROCEDURES: Final = (
    "revert_to_stable_checkpoint",
    "enable_conservative_mode",
    "activate_geometric_stabilization",
    "optimize_memory_patterns",
    "emergency_abort",
)
# The tiers that judge a profile; quarterly is a benchmark report, not a verdict on it.
DEFAULT_CHECKPOINT_TIERS: Final = ("daily", "weekly", "monthly")
_TIERS: Final = ("daily", "weekly", "monthly", "quarterly")  # daemon.config.TIER_ORDER


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuePolicy:
    """What to do when an issue opens.

    ``max_attempts`` ineffective attempts within ``window_s`` escalate to ``escalate_to``
    (once). ``alert_only_after`` > 0 stops repairing after that many attempts in the window
    and only alerts (``RecoverySkipped(reason="alert_only")``), without escalating.
    """

    procedure: str
    cooldown_s: float = 300.0
    max_attempts: int = 3
    window_s: float = 86400.0
    escalate_to: str = "emergency_abort"
    alert_only_after: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandProcedureSettings:
    """A user procedure that runs a program: argv list (no shell), timeout, extra environment."""

    command: tuple[str, ...] = ()
    timeout_s: float = 60.0
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def default_policy() -> Mapping[str, IssuePolicy]:
    """The thresholds table of DESIGN.md: issue → procedure."""
    return MappingProxyType(
        {
            "coherence_loss": IssuePolicy(procedure="revert_to_stable_checkpoint"),
            "geometric_drift": IssuePolicy(procedure="activate_geometric_stabilization"),
            "memory_spike": IssuePolicy(procedure="enable_conservative_mode"),
            "cache_miss": IssuePolicy(procedure="optimize_memory_patterns"),
            "performance_regression": IssuePolicy(
                procedure="revert_to_stable_checkpoint", alert_only_after=1
            ),
            "check_unhealthy": IssuePolicy(procedure="revert_to_stable_checkpoint"),
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoverySettings:
    """``[recovery]``: the policy per issue and the knobs of the built-in procedures."""

    enabled: bool = True
    policy: Mapping[str, IssuePolicy] = field(default_factory=default_policy)
    # emergency_abort: the dependent service's stop command (argv, no shell) and its timeout.
    stop_command: tuple[str, ...] = ()
    stop_timeout_s: float = 30.0
    # enable_conservative_mode returns to the previous mode after this many healthy daily runs.
    conservative_healthy_runs: int = 3
    # optimize_memory_patterns: batch shapes to pre-compile, and the QFI cache size to set.
    compile_batch_rows: tuple[int, ...] = (256, 512, 1024)
    qfi_cache_size: int = 256
    procedure_timeout_s: float = 300.0
    # Tiers a profile must pass (those of them enabled) to be checkpointed as stable; a
    # profile change queues them all. Empty means every enabled tier, quarterly included.
    checkpoint_tiers: tuple[str, ...] = DEFAULT_CHECKPOINT_TIERS
    # Checkpoint pruning: keep the newest N stable ones and the best K by health score.
    keep_stable: int = 5
    keep_best: int = 3
    procedures: Mapping[str, CommandProcedureSettings] = field(
        default_factory=lambda: MappingProxyType({})
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillSettings:
    """``[drills]``: fault injection for rehearsals; ``enabled = false`` refuses every drill."""

    enabled: bool = True


def validate_recovery(settings: RecoverySettings, source: str = "<embedded>") -> None:
    """Range and cross-reference checks; raises ``ConfigError`` naming the key and value."""

    def positive(key: str, value: float) -> None:
        if not value > 0:
            raise ConfigError(f"must be > 0, got {value!r}", source=source, key=key)

    for issue, policy in settings.policy.items():
        key = f"recovery.policy.{issue}"
        if policy.cooldown_s < 0:
            raise ConfigError("must be >= 0", source=source, key=f"{key}.cooldown_s")
        positive(f"{key}.max_attempts", policy.max_attempts)
        positive(f"{key}.window_s", policy.window_s)
        if policy.alert_only_after < 0:
            raise ConfigError("must be >= 0", source=source, key=f"{key}.alert_only_after")
        for what in ("procedure", "escalate_to"):
            name = getattr(policy, what)
            # Entry-point procedures are resolved at start-up; only reject the obviously empty.
            if not name:
                raise ConfigError("empty procedure name", source=source, key=f"{key}.{what}")
    positive("recovery.stop_timeout_s", settings.stop_timeout_s)
    positive("recovery.conservative_healthy_runs", settings.conservative_healthy_runs)
    positive("recovery.qfi_cache_size", settings.qfi_cache_size)
    positive("recovery.procedure_timeout_s", settings.procedure_timeout_s)
    if settings.keep_stable < 1:
        raise ConfigError("must be >= 1", source=source, key="recovery.keep_stable")
    if settings.keep_best < 0:
        raise ConfigError("must be >= 0", source=source, key="recovery.keep_best")
    for tier in settings.checkpoint_tiers:
        if tier not in _TIERS:
            raise ConfigError(
                f"unknown tier {tier!r} (known: {', '.join(_TIERS)})",
                source=source,
                key="recovery.checkpoint_tiers",
            )
    for rows in settings.compile_batch_rows:
        positive("recovery.compile_batch_rows", rows)
    for name, proc in settings.procedures.items():
        if not proc.command:
            raise ConfigError(
                "needs a command argv", source=source, key=f"recovery.procedures.{name}"
            )
        positive(f"recovery.procedures.{name}.timeout_s", proc.timeout_s)
