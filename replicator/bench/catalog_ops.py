"""Catalog operations on SQLite and PostgreSQL: how fast verified replicas are recorded and
how long a listing of 1,000 objects takes.

On a fresh catalog (a temporary SQLite file; a PostgreSQL schema of its own, dropped after):

* insert: replica records of new objects, written by ``writers`` concurrent tasks (as a
  daemon's copy workers do), per second;
* update: the same objects recorded again for a newer source change (accept + record: the
  steady state of a replicating daemon), replica records per second;
* ls: latency of listing 1,000 objects with their locations at random places of the dataset.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from replicator.catalog import Catalog, Change, LocationSpec, Replica, Role, open_catalog

T0 = datetime(2024, 5, 1, tzinfo=UTC)


async def _in_parallel(writers: int, count: int, work: Callable[[int], Awaitable[object]]) -> float:
    todo = iter(range(count))

    async def writer() -> None:
        for n in todo:
            await work(n)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return count / (time.perf_counter() - started)


def _change(source: str, n: int, seq: int) -> Change:
    return Change(
        source_url=f"{source}events/{n:08d}.parquet",
        sequencer=f"{seq:08X}{n:08X}",
        event_time=T0 + timedelta(seconds=seq * 1000 + n / 1000),
        version=f"v{seq}",
        size=1_048_576,
        etag=f"etag-{seq}",
    )


def _replica(change: Change) -> Replica:
    return Replica(
        source_version=change.version or "",
        size=change.size or 0,
        version=f"gen-{change.version}",
        etag="dest-etag",
        fingerprint="xxh3-128-4m:00112233445566778899aabbccddeeff",
        replicated_time=change.event_time + timedelta(seconds=3),
        checksums={"crc32c": "AAAAAA=="},
        content_type="application/x-parquet",
    )


async def measure(url: str, objects: int, writers: int, queries: int) -> dict[str, float]:
    catalog: Catalog = await open_catalog(url)
    try:
        tag = uuid.uuid4().hex[:8]
        source, replica = f"s3://lake-{tag}/clicks/", f"gs://ml-{tag}/clicks/"
        dataset = await catalog.add_dataset(
            f"bench-{tag}",
            [LocationSpec(source, Role.SOURCE, "us-east-1"), LocationSpec(replica, region="eu")],
        )

        async def insert(n: int) -> object:
            change = _change(source, n, 1)
            return await catalog.record_replica(change, replica, _replica(change))

        async def update(n: int) -> object:
            change = _change(source, n, 2)
            await catalog.mark_pending(change, [replica])
            return await catalog.record_replica(change, replica, _replica(change))

        inserted = await _in_parallel(writers, objects, insert)
        updated = await _in_parallel(writers, objects, update)
        rng = random.Random(1)
        latencies = []
        for _ in range(queries):
            after = f"events/{rng.randrange(max(objects - 1000, 1)):08d}.parquet"
            started = time.perf_counter()
            await catalog.ls(dataset.name, "events/", after=after, limit=1000)
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        return {
            "objects": objects,
            "insert_records_per_s": round(inserted),
            "update_records_per_s": round(updated),
            "ls_1000_median_ms": round(statistics.median(latencies), 1),
            "ls_1000_max_ms": round(latencies[-1], 1),
        }
    finally:
        await catalog.close()


async def run(
    *, objects: int, writers: int, queries: int, postgres: str | None
) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'catalog.db'}"
        results["sqlite"] = dict(await measure(url, objects, writers, queries))
    if postgres:
        schema = f"replicator_bench_{uuid.uuid4().hex[:8]}"
        try:
            measured = await measure(f"{postgres}?schema={schema}", objects, writers, queries)
            results["postgresql"] = dict(measured)
        except (OSError, RuntimeError) as exc:
            results["postgresql"] = {"skipped": f"PostgreSQL at {postgres} unusable: {exc}"}
        finally:
            await _drop_schema(postgres, schema)
    return results


async def _drop_schema(url: str, schema: str) -> None:
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    except OSError:
        pass  # nothing was created where nothing could be reached
    finally:
        await engine.dispose()
