"""GCS destinations: parts in order into one upload session against parallel parts composed.

``python -m benchmarks.ordered_uploads [--source s3|file] [--sizes 32,64,128] [--repeats 3]``
copies one object of each size (MiB) to a fresh GCS bucket of the test bed both ways, one
after the other, and prints the median seconds and MiB/s of each: the measure behind
``replicator.engine.planner.ORDERED_UPLOAD_MAX``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import time
import uuid

from connectors import open_store
from connectors.base import MiB, ObjectStore
from replicator.engine import planner
from replicator.engine.transfer import Copier


async def _time(source: ObjectStore, key: str, dest: ObjectStore, ordered: bool) -> float:
    dest_key = f"{key}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    result = await Copier().copy(source, key, dest, dest_key)
    seconds = time.perf_counter() - started
    if result.ordered_upload is not ordered:
        raise RuntimeError(f"copied {'in parallel' if ordered else 'in order'}: {result}")
    await dest.delete(dest_key)
    return seconds


async def main(source_scheme: str, sizes: list[int], repeats: int) -> None:
    name = f"ob-{uuid.uuid4().hex[:12]}"
    source = open_store(f"s3://{name}" if source_scheme == "s3" else f"file:///tmp/{name}")
    dest = open_store(f"gs://{name}")
    # Both ways whatever the size: the planner's own limit is what this measures.
    planner.ORDERED_UPLOAD_MAX = 1 << 50
    ordered_limits = dest.limits
    composed_limits = dataclasses.replace(ordered_limits, ordered_uploads=False)
    async with source, dest:
        await source.create_container()
        await dest.create_container()
        for size in sizes:
            key = f"object-{size}"
            await source.put(key, os.urandom(size * MiB))
            times: dict[str, list[float]] = {"in order": [], "composed": []}
            for _ in range(repeats):
                for way, limits in (("in order", ordered_limits), ("composed", composed_limits)):
                    dest.limits = limits
                    times[way].append(await _time(source, key, dest, way == "in order"))
            print(
                f"{source_scheme}->gs {size} MiB: "
                + ", ".join(
                    f"{way} {statistics.median(t):.2f} s ({size / statistics.median(t):.0f} MiB/s)"
                    for way, t in times.items()
                ),
                flush=True,
            )
            await source.delete(key)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("s3", "file"), default="s3")
    parser.add_argument("--sizes", default="32,64,128")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.source, [int(s) for s in args.sizes.split(",")], args.repeats))
