"""Run the copy engine over a list of objects in this process and report time and peak RSS.

Reads {"source", "dest", "keys", "prefix", "concurrency"} as JSON on stdin; the stores'
environment comes from the caller. Used by copy_throughput so the RSS is the engine's own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from connectors import open_store
from replicator.engine.transfer import Copier


async def copy_all(job: dict[str, object]) -> float:
    keys = [str(k) for k in job["keys"]]  # type: ignore[attr-defined]
    gate = asyncio.Semaphore(int(job["concurrency"]))  # type: ignore[call-overload]
    copier = Copier()
    async with open_store(str(job["source"])) as source, open_store(str(job["dest"])) as dest:

        async def one(key: str) -> None:
            async with gate:
                await copier.copy(source, key, dest, f"{job['prefix']}{key}")

        started = time.perf_counter()
        await asyncio.gather(*(one(key) for key in keys))
        return time.perf_counter() - started


def main() -> None:
    job = json.load(sys.stdin)
    seconds = asyncio.run(copy_all(job))
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_kib() / 1024}))


def peak_rss_kib() -> int:
    """This process's own peak RSS. (getrusage's ru_maxrss is inherited from the parent across
    fork and exec, so it would report the benchmark driver's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    main()
