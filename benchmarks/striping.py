"""One large object copied by a group of 1, 2 and 3 daemons (fleet-wide striping).

``python -m benchmarks.striping [--size-mib 2048] [--daemons 1,2,3] [--repeats 2]`` writes one
object of random bytes to a directory, and for each group size starts that many ``replicator
run`` processes (one consumer group, a PostgreSQL catalog, topics of their own, striping from
1 GiB, 64 MiB parts, 3 parts at once per daemon), publishes the object's change with
``replicator scan`` and times it until the replica is at the S3 destination and fresh in the
catalog; also the daemons' CPU-seconds (user + system, whole processes, start-up included).
Prints a table and writes ``--json-out``. Needs the test bed's environment (``eval
"$(replicator devstack env)"``); run it under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.chaos.daemons import DaemonProcess
from tests.groups.testbed import until
from tests.striping.fleet import StripeFleet, write_random_file

KEY = "checkpoint.bin"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(daemon: DaemonProcess) -> float:
    """User + system CPU-seconds of ``daemon``'s process so far."""
    if daemon.pid is None:
        return 0.0
    fields = Path(f"/proc/{daemon.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def one_run(work: Path, source: Path, daemons: int) -> dict[str, float]:
    fleet = StripeFleet(dict(os.environ), work, source, daemons=daemons)
    try:
        await fleet.start()
        started = time.perf_counter()
        await fleet.scan()

        async def replicated() -> bool:
            return await fleet.replicated(KEY)

        await until(replicated, 3600, "the replica")
        seconds = time.perf_counter() - started
        cpu = sum(cpu_seconds(daemon) for daemon in fleet.daemons)
    finally:
        await fleet.stop()
    return {"seconds": seconds, "daemon_cpu_s": cpu}


async def main(size_mib: int, groups: list[int], repeats: int, json_out: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="stripe-bench-") as tmp:
        work = Path(tmp)
        source = work / "source"
        source.mkdir()
        write_random_file(source / KEY, size_mib * 2**20)
        results: dict[int, list[dict[str, float]]] = {n: [] for n in groups}
        for _ in range(repeats):
            for daemons in groups:
                results[daemons].append(await one_run(work, source, daemons))
    print(f"one object of {size_mib} MiB, file -> s3 (moto), 64 MiB parts, medians of {repeats}")
    print("| daemons | seconds (min-max) | MiB/s | daemons' CPU-s | CPU-s/GiB |")
    print("|---|---|---|---|---|")
    summary = {}
    for daemons, runs in results.items():
        seconds = [run["seconds"] for run in runs]
        cpu = statistics.median(run["daemon_cpu_s"] for run in runs)
        median = statistics.median(seconds)
        summary[daemons] = {"seconds": seconds, "median_s": median, "daemon_cpu_s": cpu}
        print(
            f"| {daemons} | {median:.1f} ({min(seconds):.1f}-{max(seconds):.1f}) "
            f"| {size_mib / median:.0f} | {cpu:.1f} | {cpu / (size_mib / 1024):.2f} |"
        )
    if json_out is not None:
        text = json.dumps({"size_mib": size_mib, "runs": summary}, indent=2)
        await asyncio.to_thread(json_out.write_text, text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--daemons", default="1,2,3")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    asyncio.run(
        main(args.size_mib, [int(n) for n in args.daemons.split(",")], args.repeats, args.json_out)
    )
