"""Log set-up for the command line: structured events to stderr, human or JSON."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["console", "json"]


def get_logger() -> structlog.typing.FilteringBoundLogger:
    """The command line's own logger."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("replicator.cli")
    return logger


def configure(level: str = "info", fmt: LogFormat = "console") -> None:
    """Send structlog events at ``level`` and above to stderr (stdout stays for results)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
