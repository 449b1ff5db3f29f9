"""Client CPU per small-object request: S3's and Azure's direct requests against the same
requests through their SDKs (aiobotocore, azure-core).

``python -m benchmarks.small_requests [--store s3|az] [--objects 300] [--size 4096]
[--concurrency 16] [--repeats 3]`` (with the test bed's environment, ``eval "$(replicator
devstack env)"``) puts, gets and heads ``--objects`` objects of ``--size`` bytes,
``--concurrency`` at a time, in a fresh bucket or container, alternating a store on the
direct path with one sending everything through the SDK, and prints the median client CPU
(``time.process_time``: user + system of this process, the emulator's excluded) per request
of each kind, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from connectors import open_store
from connectors.azure import AzureStore
from connectors.s3 import S3Store


async def _cpu_per_request(
    count: int, concurrency: int, request: Callable[[int], Awaitable[object]]
) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with gate:
            await request(index)

    started = time.process_time()
    await asyncio.gather(*(one(i) for i in range(count)))
    return (time.process_time() - started) / count * 1000


async def main(scheme: str, objects: int, size: int, concurrency: int, repeats: int) -> None:
    url = f"{scheme}://sr-{uuid.uuid4().hex[:12]}"
    direct = open_store(url)
    through_sdk = open_store(url)
    assert isinstance(through_sdk, S3Store | AzureStore)
    through_sdk.direct_requests = False
    data = os.urandom(size)
    samples: dict[tuple[str, str], list[float]] = {}
    async with direct, through_sdk:
        await direct.create_container()
        for store in (direct, through_sdk):
            # Clients and connections opened before anything is timed.
            await store.put("warm", data)
            await store.get("warm")
        for _ in range(repeats):
            for way, store in (("direct", direct), ("sdk", through_sdk)):
                for kind, request in (
                    ("PUT", lambda i, s=store: s.put(f"o{i}", data)),
                    ("GET", lambda i, s=store: s.get(f"o{i}")),
                    ("HEAD", lambda i, s=store: s.head(f"o{i}")),
                ):
                    cpu = await _cpu_per_request(objects, concurrency, request)
                    samples.setdefault((way, kind), []).append(cpu)
    print(f"{scheme}: {objects} x {size} B at {concurrency} concurrent, medians of {repeats}:")
    for kind in ("PUT", "GET", "HEAD"):
        line = ", ".join(
            f"{way} {statistics.median(samples[(way, kind)]):.2f} ms "
            f"[{min(samples[(way, kind)]):.2f}-{max(samples[(way, kind)]):.2f}]"
            for way in ("direct", "sdk")
        )
        print(f"  {kind}: client CPU per request {line}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("s3", "az"), default="s3")
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.store, args.objects, args.size, args.concurrency, args.repeats))
