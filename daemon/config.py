"""Configuration: an immutable, validated tree built from TOML over embedded defaults.

Every key has a default, so the daemon runs with no file. Loading is strict: an unknown key,
a wrong type or a bad value raises ``ConfigError`` naming the file, the key path and the
value. This is the only module that reads the environment. A reload builds a new ``Config``
and the caller swaps it in only if this module accepted it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_origin

from daemon.errors import ConfigError
from daemon.recovery_config import DrillSettings, RecoverySettings, validate_recovery

EX_CONFIG: Final = 78
ENV_CONFIG: Final = "KERNELWATCH_CONFIG"
ENV_STATE_DIR: Final = "KERNELWATCH_STATE_DIR"
DEFAULT_STATE_DIR: Final = Path("./var")

TierName = Literal["daily", "weekly", "monthly", "quarterly"]
TIER_ORDER: Final[tuple[str, ...]] = ("daily", "weekly", "monthly", "quarterly")


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonSettings:
    shutdown_grace_s: float = 30.0
    clock_jump_threshold_s: float = 120.0
    tick_s: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    enabled: bool = True
    listen: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetrySettings:
    flush_every_records: int = 100
    flush_every_s: float = 1.0
    fsync: Literal["never", "interval", "always"] = "interval"
    fsync_interval_s: float = 5.0
    rotate_bytes: int = 64 * 1024 * 1024
    retention_days: int = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerSettings:
    default_timeout_s: float = 900.0
    kill_grace_s: float = 5.0
    max_queue: int = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class TierSettings:
    """One cadence tier. ``cron`` is APScheduler's 5-field crontab (UTC; day and weekday AND)."""

    enabled: bool = True
    cron: str = ""
    window_s: float = 3600.0
    catch_up_grace_s: float = 6 * 3600.0
    checks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSettings:
    """A check's settings: ``module`` (``pkg.mod:attr``) for user checks, timeout, options."""

    module: str = ""
    timeout_s: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A threshold on measurements named ``measurement`` whose labels include ``labels``."""

    name: str
    measurement: str
    issue: str
    direction: Literal["above", "below"] = "above"
    warn: float | None = None
    crit: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    raise_after: int = 1
    clear_after: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelSettings:
    extra: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    runner: RunnerSettings = field(default_factory=RunnerSettings)
    tiers: Mapping[str, TierSettings] = field(default_factory=dict)
    checks: Mapping[str, CheckSettings] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    kernels: KernelSettings = field(default_factory=KernelSettings)
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    drills: DrillSettings = field(default_factory=DrillSettings)
    source: str = "<embedded>"

    def digest(self) -> str:
        """A short hash of the effective configuration, for ConfigReloaded events."""
        blob = json.dumps(_to_plain(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def check_timeout(self, check: str, fallback: float) -> float:
        settings = self.checks.get(check)
        if settings is not None and settings.timeout_s > 0:
            return settings.timeout_s
        return fallback if fallback > 0 else self.runner.default_timeout_s


DEFAULTS_FILE: Final = Path(__file__).with_name("default_config.toml")


# --- loading ---------------------------------------------------------------------------


def load_config(path: Path | None = None) -> Config:
    """Build the config from the embedded defaults overlaid by ``path`` (if any)."""
    defaults = _read_toml(DEFAULTS_FILE)
    if path is None:
        return _build(defaults, "<embedded>")
    overlay = _read_toml(path)
    return _build(_merge(defaults, overlay), str(path))


def config_path_from_env(cli_value: str | None) -> Path | None:
    """``--config`` wins over ``KERNELWATCH_CONFIG``; neither means embedded defaults only."""
    value = cli_value or os.environ.get(ENV_CONFIG)
    return Path(value) if value else None


def state_dir_from_env(cli_value: str | None) -> Path:
    """``--state-dir`` wins over ``KERNELWATCH_STATE_DIR``; the default is ``./var``."""
    value = cli_value or os.environ.get(ENV_STATE_DIR)
    return Path(value) if value else DEFAULT_STATE_DIR


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Overlay tables key by key; arrays (rules, check lists) replace wholesale."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(raw: dict[str, Any], source: str) -> Config:
    config = _convert(Config, {**raw, "source": source}, source, "")
    assert isinstance(config, Config)
    _validate(config, source)
    return config


_PLAIN_TYPES: Final = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """Convert a TOML value to annotation ``tp``, raising ConfigError at ``key`` if it cannot."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table, got {value!r}", source=source, key=key)
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        for name in value:
            if name not in known:
                raise ConfigError(
                    f"unknown key (known: {', '.join(sorted(known))})",
                    source=source,
                    key=_join(key, name),
                )
        kwargs = {
            name: _convert(hints[name], v, source, _join(key, name)) for name, v in value.items()
        }
        try:
            return tp(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"missing required key: {exc}", source=source, key=key) from None
    if origin is Literal:
        if value not in get_args(tp):
            choices = " | ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{value!r} is not one of {choices}", source=source, key=key)
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, source, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"expected an array, got {value!r}", source=source, key=key)
        (item_tp, _) = get_args(tp)
        return tuple(_convert(item_tp, v, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a table, got {value!r}", source=source, key=key)
        mapping_args = get_args(tp)
        val_tp = mapping_args[1] if mapping_args else Any
        if val_tp is Any:
            return types.MappingProxyType(dict(value))
        return types.MappingProxyType(
            {k: _convert(val_tp, v, source, _join(key, k)) for k, v in value.items()}
        )
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}", source=source, key=key)
        return float(value)
    if tp in _PLAIN_TYPES:
        if type(value) is not tp:
            raise ConfigError(f"expected {_PLAIN_TYPES[tp]}, got {value!r}", source=source, key=key)
        return value
    raise ConfigError(f"unsupported type {tp!r}", source=source, key=key)  # a schema bug


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _validate(config: Config, source: str) -> None:
    """Cross-field and range checks that types alone cannot express."""

    def positive(key: str, value: float) -> None:
        if not value > 0:
            raise ConfigError(f"must be > 0, got {value!r}", source=source, key=key)

    positive("daemon.shutdown_grace_s", config.daemon.shutdown_grace_s)
    positive("daemon.clock_jump_threshold_s", config.daemon.clock_jump_threshold_s)
    positive("daemon.tick_s", config.daemon.tick_s)
    try:
        ipaddress.ip_address(config.http.listen)
    except ValueError:
        raise ConfigError(
            f"not an IP address: {config.http.listen!r}", source=source, key="http.listen"
        ) from None
    if not 0 <= config.http.port <= 65535:
        raise ConfigError(f"out of range: {config.http.port}", source=source, key="http.port")
    positive("telemetry.flush_every_records", config.telemetry.flush_every_records)
    positive("telemetry.flush_every_s", config.telemetry.flush_every_s)
    positive("telemetry.fsync_interval_s", config.telemetry.fsync_interval_s)
    positive("telemetry.rotate_bytes", config.telemetry.rotate_bytes)
    positive("telemetry.retention_days", config.telemetry.retention_days)
    positive("runner.default_timeout_s", config.runner.default_timeout_s)
    positive("runner.kill_grace_s", config.runner.kill_grace_s)
    positive("runner.max_queue", config.runner.max_queue)
    for name, tier in config.tiers.items():
        key = f"tiers.{name}"
        if name not in TIER_ORDER:
            raise ConfigError(
                f"unknown tier (known: {', '.join(TIER_ORDER)})", source=source, key=key
            )
        positive(f"{key}.window_s", tier.window_s)
        if tier.catch_up_grace_s < 0:
            raise ConfigError("must be >= 0", source=source, key=f"{key}.catch_up_grace_s")
        _validate_cron(tier.cron, source, f"{key}.cron")
        for i, check_name in enumerate(tier.checks):
            if not check_name:
                raise ConfigError("empty check name", source=source, key=f"{key}.checks[{i}]")
    for name, check in config.checks.items():
        if check.timeout_s < 0:
            raise ConfigError("must be >= 0", source=source, key=f"checks.{name}.timeout_s")
        if check.module:
            _validate_target(check.module, source, f"checks.{name}.module")
    seen: set[str] = set()
    for i, rule in enumerate(config.rules):
        key = f"rules[{i}]"
        if rule.name in seen:
            raise ConfigError(f"duplicate rule name {rule.name!r}", source=source, key=key)
        seen.add(rule.name)
        if rule.warn is None and rule.crit is None:
            raise ConfigError("a rule needs warn, crit or both", source=source, key=key)
        if rule.warn is not None and rule.crit is not None:
            ordered = (
                rule.crit >= rule.warn if rule.direction == "above" else rule.crit <= rule.warn
            )
            if not ordered:
                raise ConfigError(
                    f"crit {rule.crit} is less severe than warn {rule.warn} "
                    f"for direction {rule.direction!r}",
                    source=source,
                    key=f"{key}.crit",
                )
        positive(f"{key}.raise_after", rule.raise_after)
        positive(f"{key}.clear_after", rule.clear_after)
    validate_recovery(config.recovery, source)


def _validate_target(target: str, source: str, key: str) -> None:
    """``package.module:attribute``: both sides dotted Python names (what the registry imports)."""
    module, sep, attribute = target.partition(":")
    parts = [*module.split("."), *attribute.split(".")]
    if not sep or not all(part.isidentifier() for part in parts):
        raise ConfigError(
            f"expected 'package.module:attribute' (dotted Python names), got {target!r}",
            source=source,
            key=key,
        )


def _validate_cron(expr: str, source: str, key: str) -> None:
    # Imported here: APScheduler stays at the edge, but its parser is the one the scheduler
    # will use, so a cron accepted here is a cron the scheduler accepts.
    from daemon.schedule import parse_cron

    try:
        parse_cron(expr)
    except ValueError as exc:
        raise ConfigError(f"invalid cron {expr!r}: {exc}", source=source, key=key) from None


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value


def config_to_plain(config: Config) -> dict[str, Any]:
    """The effective config as plain data (for `config show` and digests)."""
    plain = _to_plain(config)
    assert isinstance(plain, dict)
    return plain
