"""The daemon's one error tree.

    KernelwatchError
    ├── ConfigError            a config file or value is invalid (names file, key, value)
    ├── StateError             the state directory cannot be read or written
    │   └── CorruptStateError  a stored file failed its checksum or parse; it is set aside
    ├── CheckError             a check could not produce a result
    │   ├── CheckTimeoutError  killed at its deadline
    │   └── CheckCrashError    exited abnormally or by a signal
    ├── RecoveryError          a recovery procedure failed
    ├── RegistryError          a check, kernel or procedure name could not be resolved
    └── ListenError            the HTTP endpoint cannot listen (its port is taken)

A failing check never escapes the runner: it becomes an event.
"""

from __future__ import annotations


class KernelwatchError(Exception):
    """Base of every error kernelwatch raises on purpose."""


class ConfigError(KernelwatchError):
    """A configuration file or value is invalid."""

    def __init__(self, message: str, *, source: str = "<embedded>", key: str = "") -> None:
        self.source = source
        self.key = key
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)


class StateError(KernelwatchError):
    """The state directory cannot be read or written."""


class CorruptStateError(StateError):
    """A stored file failed its checksum or could not be parsed."""


class CheckError(KernelwatchError):
    """A check could not produce a result."""


class CheckTimeoutError(CheckError):
    """A check was killed at its deadline."""


class CheckCrashError(CheckError):
    """A check's process exited abnormally or was killed by a signal."""


class RecoveryError(KernelwatchError):
    """A recovery procedure failed."""


class RegistryError(KernelwatchError):
    """A check, kernel or procedure name could not be resolved."""


class ListenError(KernelwatchError):
    """The HTTP endpoint cannot listen on its configured address (the port is taken)."""
