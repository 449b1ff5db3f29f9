"""Start-up of the command line against rclone's: CPU and wall seconds of whole processes
that do (almost) nothing: ``--help`` and one-byte copies s3->gs, s3->az and file->s3.

After an untimed warm-up run of each command, each case runs REPEATS times, replicator and
rclone alternating, each copy into a fresh destination key (so every run copies rather than
finding the copy there). CPU is the user +
system time ``os.wait4`` reports for the process; wall is measured around it. The table gives
the median (min-max) of each; the last line of stdout is the same as JSON with every sample.

Runs against the devstack named by ``REPLICATOR_DEVSTACK_DIR`` (or the default one) when it
is up, else starts a test bed of its own for the run.

Usage (timed work on a shared machine goes under the benchmark lock):

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.startup [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.backfill_vs_rclone import create_bucket, test_bed
from connectors import open_store
from replicator.bench.copies import rclone_environment, settle_destination
from replicator.bench.raw import account_sas
from replicator.devstack import AZURE_DEV_ACCOUNT, AZURE_DEV_KEY, environment

SOURCE = "s3://startup-src"
DEST_BUCKET = "startup-dst"
ROUTES = {"s3->gs": ("s3", "gs"), "s3->az": ("s3", "az"), "file->s3": ("file", "s3")}
REPLICATOR = [sys.executable, "-m", "replicator"]


def source_of(scheme: str, local_file: Path) -> tuple[str, str]:
    """(replicator URL, rclone path) of the one-byte source object of ``scheme``."""
    if scheme == "file":
        return f"file://{local_file}", str(local_file)
    return f"{SOURCE}/one", "S3:startup-src/one"


def commands(tool: str, route: str, local_file: Path, key: str) -> list[str]:
    source_scheme, dest_scheme = ROUTES[route]
    source_url, source_path = source_of(source_scheme, local_file)
    if tool == "replicator":
        return [*REPLICATOR, "cp", source_url, f"{dest_scheme}://{DEST_BUCKET}/{key}"]
    return ["rclone", "copyto", "-q", source_path, f"{dest_scheme.upper()}:{DEST_BUCKET}/{key}"]


def measured(argv: list[str], env: Mapping[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of running ``argv`` to a successful end."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        assert process.stderr is not None
        raise SystemExit(f"{' '.join(argv)} failed: {process.stderr.read().decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


async def prepare() -> None:
    await create_bucket(SOURCE)
    for scheme in ("gs", "az", "s3"):
        await create_bucket(f"{scheme}://{DEST_BUCKET}")
    async with open_store(SOURCE) as source:
        await source.put("one", b"x")


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("rclone") is None:
        parser.error("rclone is not installed (make setup installs it)")
    with tempfile.TemporaryDirectory(prefix="startup-bench-") as tmp:
        workdir = Path(tmp)
        with test_bed(workdir) as state, environment(state.env):
            azure_port = state.components["azure"].port
            sas = account_sas(AZURE_DEV_ACCOUNT, AZURE_DEV_KEY)
            env = rclone_environment(
                dict(os.environ), f"http://127.0.0.1:{azure_port}/{AZURE_DEV_ACCOUNT}?{sas}"
            )
            local_file = workdir / "one"
            local_file.write_bytes(b"x")
            asyncio.run(prepare())
            cases: dict[str, list[list[str]]] = {
                "--help": [[*REPLICATOR, "--help"], ["rclone", "--help"]],
            }
            samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
            # An untimed warm-up of every command (byte-compiled modules, file cache).
            for argv in [
                *cases["--help"],
                *(
                    commands(t, r, local_file, "startup/warm-up")
                    for r in ROUTES
                    for t in ("replicator", "rclone")
                ),
            ]:
                measured(argv, env)
            for repeat in range(args.repeats):
                for case, (ours, theirs) in cases.items():
                    samples.setdefault((case, "replicator"), []).append(measured(ours, env))
                    samples.setdefault((case, "rclone"), []).append(measured(theirs, env))
                for route in ROUTES:
                    for tool in ("replicator", "rclone"):
                        key = f"startup/{tool}-{repeat}"
                        run = measured(commands(tool, route, local_file, key), env)
                        samples.setdefault((f"cp 1 byte {route}", tool), []).append(run)
            for _, dest_scheme in ROUTES.values():
                asyncio.run(settle_destination(f"{dest_scheme}://{DEST_BUCKET}", "startup/"))
    print(f"{'case':<20} {'tool':<11} {'CPU s, median (min-max)':<26} wall s, median (min-max)")
    rows: list[dict[str, Any]] = []
    for (case, tool), runs in samples.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(f"{case:<20} {tool:<11} {summary(cpus):<26} {summary(walls)}")
        rows.append({"case": case, "tool": tool, "cpu_seconds": cpus, "seconds": walls})
    print(json.dumps({"repeats": args.repeats, "rows": rows}))


if __name__ == "__main__":
    main()
