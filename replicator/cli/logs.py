"""Log set-up for the command line: structured events to stderr, human or JSON.

Whatever a log call is given, rendering it never fails: mappings with keys that are not
strings (a dict keyed by ``(topic, partition)``) and values JSON cannot hold are made safe
before the renderer sees them, so a log line can never take the daemon down.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["console", "json"]


def _safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key if isinstance(key, str) else repr(key): _safe(item) for key, item in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_safe(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value) if not isinstance(value, BaseException) else value


def json_safe(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Make every value of ``event`` something the JSON renderer can write."""
    return {key: value if key == "exc_info" else _safe(value) for key, value in event.items()}


def get_logger() -> structlog.typing.FilteringBoundLogger:
    """The command line's own logger."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("replicator.cli")
    return logger


def configure(level: str = "info", fmt: LogFormat = "console", *, cache: bool = True) -> None:
    """Send structlog events at ``level`` and above to stderr (stdout stays for results).

    ``cache=False`` lets a later call reconfigure loggers already used (tests do).
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            json_safe,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=cache,
    )
