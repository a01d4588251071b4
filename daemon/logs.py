"""Structured logging: configured once by the entry point; a bus subscriber that logs events.

JSON lines when stderr is not a terminal (journald and log shippers read them), readable
console output on a terminal. Event names are snake_case with context as key/value pairs.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Final, TextIO, final

import structlog

from daemon.events import (
    CheckCrashed,
    CheckTimedOut,
    ConfigRejected,
    EmergencyAborted,
    Event,
    RecoveryFailed,
    RecoveryIneffective,
    RunMissed,
    ThresholdCrossed,
)

_LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_WARNING_EVENTS: Final = (
    CheckTimedOut,
    CheckCrashed,
    ConfigRejected,
    RunMissed,
    ThresholdCrossed,
    RecoveryIneffective,
)
_ERROR_EVENTS: Final = (RecoveryFailed, EmergencyAborted)
_CAMEL: Final = re.compile(r"(?<!^)(?=[A-Z])")


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the whole process; call once, from the entry point."""
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries' stdlib logging (APScheduler) goes through the same renderer, one format.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # APScheduler narrates every job at INFO; our own events already say what happened.
    logging.getLogger("apscheduler").setLevel(max(_LEVELS[level], logging.WARNING))


def snake_case(name: str) -> str:
    """``CheckTimedOut`` → ``check_timed_out``."""
    return _CAMEL.sub("_", name).lower()


@final
class LogSink:
    """Logs every event at a level that fits it; measurements are left to telemetry."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("kernelwatch.events")
        self._names: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        name = self._names.get(event.type_name)
        if name is None:
            name = self._names[event.type_name] = snake_case(event.type_name)
        payload = event.payload()
        # Measurements and details (raw timing samples) can be tens of KB: telemetry has them.
        payload.pop("measurements", None)
        payload.pop("details", None)
        payload["seq"] = event.seq
        if isinstance(event, _ERROR_EVENTS):
            self._log.error(name, **payload)
        elif isinstance(event, _WARNING_EVENTS):
            self._log.warning(name, **payload)
        else:
            self._log.info(name, **payload)
