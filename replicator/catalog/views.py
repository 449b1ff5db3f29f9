"""Catalog values as plain JSON-ready data, shared by the CLI, the HTTP API and exports."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

from replicator.catalog.model import ObjectEntry

ExportFormat = Literal["parquet", "jsonl"]


def plain(value: Any) -> Any:
    """Dataclasses, enums, datetimes and tuples as dicts, strings, ISO 8601 and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def location_rows(entry: ObjectEntry) -> Iterator[dict[str, Any]]:
    """One flat row per (object, location): the shape lake tools read from an export."""
    for loc in entry.locations:
        yield {
            "dataset": entry.dataset,
            "key": entry.key,
            "url": loc.url,
            "location": loc.location,
            "store": loc.location.partition("://")[0],
            "role": loc.role.value,
            "region": loc.region,
            "state": loc.state,
            "fresh": loc.fresh,
            "deleted": entry.deleted,
            "object_size": entry.size,
            "fingerprint": entry.fingerprint,
            "content_type": entry.content_type,
            "source_version": entry.source_version,
            "source_event_time": entry.source_event_time,
            "version": loc.version,
            "etag": loc.etag,
            "size": loc.size,
            "replicated_at": loc.replicated_at,
            "lag_seconds": loc.lag_seconds,
            "written_as": loc.written_as,
        }
