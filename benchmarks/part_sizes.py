"""One large object copied with several part sizes: client CPU, wall time, peak memory and
page faults of ``replicator cp --part-size SIZE`` per route, the measure behind
``planner.BUFFER_REUSE``.

Seeds one object of ``--size-mib`` random MiB in an S3 bucket and an Azure container, then for
each repetition, route and part size (in turn, so a change in the machine's load touches every
size alike) copies it to a fresh key that is deleted afterwards. Each copy is a whole process;
its CPU, peak resident set and minor page faults are what ``os.wait4`` reports for it. Prints
the medians (min-max) per route and part size.

Runs against the devstack named by ``REPLICATOR_DEVSTACK_DIR`` (or the default one) when it
is up, else starts a test bed of its own for the run.

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.part_sizes \
        [--size-mib 512] [--part-sizes auto,16MiB,64MiB] [--routes s3->az,az->s3,s3->gs]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from benchmarks.backfill_vs_rclone import test_bed
from connectors import open_store
from connectors.base import MiB
from replicator.bench.copies import Dataset, seed
from replicator.devstack import environment

SOURCE = "ps-src"
DEST = "ps-dst"
# The one object ``seed`` writes for a data set of one, at no prefix.
KEY = "object-00000"
ROUTES = {"s3->az": ("s3", "az"), "az->s3": ("az", "s3"), "s3->gs": ("s3", "gs")}


def seed_now(size: int, schemes: set[str]) -> None:
    for scheme in schemes:
        asyncio.run(seed(f"{scheme}://{SOURCE}", [Dataset("large", "", (size,))]))


def seed_apart(size: int, schemes: set[str]) -> None:
    """Seeds from a process of its own: a child's peak resident set starts from its parent's,
    which holding the object once would make every copy's figure wrong."""
    seeder = multiprocessing.get_context("spawn").Process(target=seed_now, args=(size, schemes))
    seeder.start()
    seeder.join()
    if seeder.exitcode != 0:
        raise SystemExit("seeding the source failed")


async def create_destinations(schemes: set[str]) -> None:
    for scheme in schemes:
        async with open_store(f"{scheme}://{DEST}") as store:
            await store.create_container()


async def delete(url: str, key: str) -> None:
    async with open_store(url) as store:
        await store.delete(key)


def copy(source: str, dest: str, part_size: str) -> dict[str, float]:
    argv = [sys.executable, "-m", "replicator", "cp", "--part-size", part_size, source, dest]
    started = time.monotonic()
    quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    process = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=quiet)
    _, status, usage = os.wait4(process, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed")
    return {
        "seconds": time.monotonic() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "faults": usage.ru_minflt,
    }


def spread(values: list[float], digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--part-sizes", default="auto,16MiB,64MiB", help="comma-separated")
    parser.add_argument("--routes", default=",".join(ROUTES), help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = [r for r in routes if r not in ROUTES]
    if unknown:
        parser.error(f"unknown route(s) {unknown}; known: {', '.join(ROUTES)}")
    part_sizes = [p.strip() for p in args.part_sizes.split(",") if p.strip()]
    samples: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    with (
        tempfile.TemporaryDirectory(prefix="part-sizes-") as tmp,
        test_bed(Path(tmp)) as state,
        environment(state.env),
    ):
        seed_apart(args.size_mib * MiB, {ROUTES[r][0] for r in routes})
        asyncio.run(create_destinations({ROUTES[r][1] for r in routes}))
        for repeat in range(args.repeats):
            for route in routes:
                source_scheme, dest_scheme = ROUTES[route]
                for part_size in part_sizes:
                    key = f"copy-{uuid.uuid4().hex[:8]}"
                    sample = copy(
                        f"{source_scheme}://{SOURCE}/{KEY}",
                        f"{dest_scheme}://{DEST}/{key}",
                        part_size,
                    )
                    asyncio.run(delete(f"{dest_scheme}://{DEST}", key))
                    samples[(route, part_size)].append(sample)
                    print(f"{route} {part_size} #{repeat}: {sample}", file=sys.stderr)
    gib = args.size_mib / 1024
    print(f"{args.size_mib} MiB, medians (min-max) of {args.repeats}")
    print("| route | part size | seconds | CPU-s/GiB | peak RSS MB | page faults |")
    print("|---|---|---:|---:|---:|---:|")
    for (route, part_size), runs in samples.items():
        print(
            f"| {route} | {part_size} | {spread([r['seconds'] for r in runs])} "
            f"| {spread([r['cpu_s'] / gib for r in runs])} "
            f"| {spread([r['rss_mb'] for r in runs], 0)} "
            f"| {spread([r['faults'] for r in runs], 0)} |"
        )


if __name__ == "__main__":
    main()
