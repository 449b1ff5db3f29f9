"""One large object copied by a group of 1, 2 and 3 daemons (fleet-wide striping).

``python -m benchmarks.striping [--size-mib 2048] [--daemons 1,2,3] [--repeats 2]`` writes one
object of random bytes to a directory, and for each group size starts that many ``replicator
run`` processes (one consumer group, a PostgreSQL catalog, topics of their own, striping from
1 GiB, 64 MiB parts, 3 parts at once per daemon), publishes the object's change with
``replicator scan`` and times it until the replica is at the S3 destination and fresh in the
catalog; also the CPU-seconds (user + system) the daemons and the S3 emulator spent meanwhile.
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

from tests.groups.testbed import until
from tests.striping.fleet import StripeFleet, write_random_file

KEY = "checkpoint.bin"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU-seconds of process ``pid`` so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def emulator_pid() -> int | None:
    """The test bed's S3 emulator (moto)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"moto_server" in command:
                return int(entry.name)
    return None


def fleet_cpu(fleet: StripeFleet) -> float:
    return sum(cpu_seconds(daemon.pid) for daemon in fleet.daemons)


async def one_run(work: Path, source: Path, daemons: int) -> dict[str, float]:
    fleet = StripeFleet(dict(os.environ), work, source, daemons=daemons)
    try:
        await fleet.start()
        moto = emulator_pid()
        cpu_before, moto_before = fleet_cpu(fleet), cpu_seconds(moto)
        started = time.perf_counter()
        await fleet.scan()

        async def replicated() -> bool:
            return await fleet.replicated(KEY)

        await until(replicated, 3600, "the replica")
        seconds = time.perf_counter() - started
        cpu, moto_cpu = fleet_cpu(fleet) - cpu_before, cpu_seconds(moto) - moto_before
    finally:
        await fleet.stop()
    return {"seconds": seconds, "daemon_cpu_s": cpu, "emulator_cpu_s": moto_cpu}


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
    print("| daemons | seconds (min-max) | MiB/s | daemons' CPU-s/GiB | moto's CPU-s/GiB |")
    print("|---|---|---|---|---|")
    summary = {}
    for daemons, runs in results.items():
        seconds = [run["seconds"] for run in runs]
        gib = size_mib / 1024
        cpu = statistics.median(run["daemon_cpu_s"] for run in runs) / gib
        moto = statistics.median(run["emulator_cpu_s"] for run in runs) / gib
        median = statistics.median(seconds)
        summary[daemons] = {
            "seconds": seconds,
            "median_s": median,
            "daemon_cpu_s_per_gib": cpu,
            "emulator_cpu_s_per_gib": moto,
        }
        print(
            f"| {daemons} | {median:.1f} ({min(seconds):.1f}-{max(seconds):.1f}) "
            f"| {size_mib / median:.0f} | {cpu:.2f} | {moto:.2f} |"
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
