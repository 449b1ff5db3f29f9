"""Sizes and durations as operators write them (pure)."""

from __future__ import annotations

import re
from datetime import timedelta

from replicator.errors import ConfigError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """'16MiB', '8 MB', '1048576' -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(f"invalid size {text!r}: use a number with an optional unit like 16MiB")
    try:
        return int(float(match.group(1)) * _SIZE_UNITS[unit])
    except OverflowError:
        raise ConfigError(f"invalid size {text!r}: too large") from None


def parse_part_size(text: str) -> int | None:
    """'auto' (None: sized to each object) or a size."""
    return None if text.strip().lower() == "auto" else parse_size(text)


def parse_duration(text: str) -> timedelta:
    """'250ms', '1.5s', '90s', '30m', '6h', '2d' -> timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|[smhd])\s*", text)
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: use a number and ms, s, m, h or d, e.g. 6h")
    try:
        return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2)])
    except OverflowError:
        raise ConfigError(f"invalid duration {text!r}: too long") from None
