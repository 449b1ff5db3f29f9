"""Catalog throughput and query latency on SQLite and PostgreSQL.

For each backend, on a fresh catalog (a temporary SQLite file; a PostgreSQL schema of its own,
dropped at the end):

* insert: verified replica records of new objects, written by ``--writers`` concurrent tasks
  (as a daemon's copy workers do), in replica records per second;
* update: the same replicas recorded again for a newer source change (accept + record, the
  steady state of a replicating daemon), in replica records per second;
* ls: latency of listing 1,000 objects (each with its locations) at random places of a
  dataset of ``--objects`` objects, median and p99 of ``--queries`` queries.

Targets: >= 5,000 records/s on SQLite; ls of 1,000 rows < 100 ms.

Usage: python -m benchmarks.catalog_bench [--objects 100000] [--writers 128] [--queries 50]
       [--backends sqlite,postgresql] [--postgres postgresql://postgres@127.0.0.1:5432/test]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from replicator.catalog import Catalog, Change, LocationSpec, Replica, Role, open_catalog

T0 = datetime(2024, 5, 1, tzinfo=UTC)


async def _in_parallel(writers: int, count: int, work: Callable[[int], Awaitable[object]]) -> float:
    """Run ``work(0..count-1)`` on ``writers`` concurrent tasks; returns items per second."""
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


async def bench(url: str, objects: int, writers: int, queries: int) -> dict[str, float]:
    catalog: Catalog = await open_catalog(url)
    try:
        tag = uuid.uuid4().hex[:8]
        source, replica = f"s3://lake-{tag}/clicks/", f"gs://ml-{tag}/clicks/"
        ds = await catalog.add_dataset(
            f"bench-{tag}",
            [LocationSpec(source, Role.SOURCE, "us-east-1"), LocationSpec(replica, region="eu")],
        )

        async def insert(n: int) -> object:
            c = _change(source, n, 1)
            return await catalog.record_replica(c, replica, _replica(c))

        async def update(n: int) -> object:
            c = _change(source, n, 2)
            await catalog.mark_pending(c, [replica])
            return await catalog.record_replica(c, replica, _replica(c))

        inserted = await _in_parallel(writers, objects, insert)
        updated = await _in_parallel(writers, min(objects, 20_000), update)
        rng = random.Random(1)
        latencies = []
        for _ in range(queries):
            after = f"events/{rng.randrange(max(objects - 1000, 1)):08d}.parquet"
            started = time.perf_counter()
            entries = await catalog.ls(ds.name, "events/", after=after, limit=1000)
            latencies.append((time.perf_counter() - started) * 1000)
            assert len(entries) == min(1000, objects - int(after[7:15]) - 1)
        latencies.sort()
        return {
            "insert_records_per_s": round(inserted),
            # Each update is two writes (the accepted change, then the verified replica).
            "update_records_per_s": round(updated),
            "ls_1000_median_ms": round(statistics.median(latencies), 1),
            "ls_1000_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 1),
        }
    finally:
        await catalog.close()


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'catalog.db'}"
                results[backend] = await bench(url, args.objects, args.writers, args.queries)
        else:
            schema = f"replicator_bench_{uuid.uuid4().hex[:8]}"
            try:
                results[backend] = await bench(
                    f"{args.postgres}?schema={schema}", args.objects, args.writers, args.queries
                )
            finally:
                await _drop_schema(args.postgres, schema)
        print(backend, json.dumps(results[backend]), flush=True)
    return results


async def _drop_schema(url: str, schema: str) -> None:
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--writers", type=int, default=128)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
