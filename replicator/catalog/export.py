"""Export the catalog for lake tools: one row per (object, location), as Parquet or JSON lines.

Pages are read from the catalog and written in a worker thread, so neither the whole catalog
nor a blocking write ever sits on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import IO, Any, Protocol

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type information
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from replicator.catalog.model import CatalogError
from replicator.catalog.repository import Catalog
from replicator.catalog.views import ExportFormat, location_rows, plain

_TIME = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("location", pa.string()),
        ("store", pa.string()),
        ("role", pa.string()),
        ("region", pa.string()),
        ("state", pa.string()),
        ("fresh", pa.bool_()),
        ("deleted", pa.bool_()),
        ("object_size", pa.int64()),
        ("fingerprint", pa.string()),
        ("content_type", pa.string()),
        ("source_version", pa.string()),
        ("source_event_time", _TIME),
        ("version", pa.string()),
        ("etag", pa.string()),
        ("size", pa.int64()),
        ("replicated_at", _TIME),
        ("lag_seconds", pa.float64()),
        ("written_as", pa.string()),
    ]
)


class _Sink(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class _ParquetSink:
    def __init__(self, path: str) -> None:
        self._writer = pq.ParquetWriter(path, SCHEMA)

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))

    def close(self) -> None:
        self._writer.close()


class _JsonLinesSink:
    def __init__(self, path: str) -> None:
        self._own = path != "-"
        # Closed in close(): the sink outlives any one block.
        self._out: IO[str] = open(path, "w", encoding="utf-8") if self._own else sys.stdout  # noqa: SIM115

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._out.writelines(json.dumps(plain(row)) + "\n" for row in rows)

    def close(self) -> None:
        if self._own:
            self._out.close()
        else:
            self._out.flush()


async def export_catalog(
    catalog: Catalog, output: str, fmt: ExportFormat, dataset: str | None = None
) -> int:
    """Write every object's locations (of ``dataset``, or of all) to ``output`` ('-' is
    standard output, for JSON lines); returns the number of rows."""
    if fmt == "parquet" and output == "-":
        raise CatalogError("Parquet needs a file: give --output PATH")
    sink: _Sink = await asyncio.to_thread(
        _ParquetSink if fmt == "parquet" else _JsonLinesSink, output
    )
    count = 0
    try:
        async for page in catalog.export_entries(dataset):
            rows = [row for entry in page for row in location_rows(entry)]
            await asyncio.to_thread(sink.write, rows)
            count += len(rows)
    finally:
        await asyncio.to_thread(sink.close)
    return count
