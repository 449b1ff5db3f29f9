"""``replicator backfill`` against ``rclone copy`` on many small objects, side by side.

Seeds N objects of SIZE bytes under a prefix of an S3 bucket, then for each route (s3->gs,
s3->az) alternates ``replicator backfill SRC DST`` (at its default ``--transfers``, or the one
given) and ``rclone copy --transfers 16`` (and, with ``--raw``, the raw SDK baseline at the same
concurrency as replicator: one plain GET and PUT per object, the ceiling the emulators leave a
client), each into a fresh destination prefix that is counted and
deleted afterwards. Every tool runs as a whole process; its client CPU is the user + system
time ``os.wait4`` reports for it. Reported per route and tool, as a table and as JSON: the
median (and min, max) over the repeats of objects per second and client CPU-seconds per 1,000
objects, and the emulators' own CPU.

Runs against the devstack named by ``REPLICATOR_DEVSTACK_DIR`` (or the default one) when it
is up, else starts a test bed of its own for the run. The backfills record into one SQLite
catalog of the run's own (a warm-up backfill of one object creates it, so the timed runs do not
pay the schema's creation).

Usage (timed work on a shared machine goes under the benchmark lock):

    flock /tmp/bench.lock .venv/bin/python -m benchmarks.backfill_vs_rclone \
        [--objects 2000] [--size 4096] [--transfers N] [--repeats 3] [--routes s3->gs,s3->az]
        [--raw] [--no-rclone] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from connectors import open_store
from replicator.bench.copies import Dataset, rclone_environment, seed, settle_destination
from replicator.bench.processes import ProcessRun, run_measured
from replicator.bench.raw import account_sas
from replicator.cli.reconcile import ONE_SHOT_TRANSFERS
from replicator.devstack import AZURE_DEV_ACCOUNT, AZURE_DEV_KEY, DevStack, environment
from replicator.devstack.stack import StackState, default_state_dir

SOURCE_BUCKET = "bf-src"
DEST_BUCKET = "bf-dst"
PREFIX = "small/"
REPLICATOR = "replicator backfill"
RCLONE = "rclone copy"
RAW = "raw SDK"
ROUTES = {"s3->gs": "gs", "s3->az": "az"}
RCLONE_TRANSFERS = 16


@contextlib.contextmanager
def test_bed(workdir: Path) -> Iterator[StackState]:
    """The running devstack if there is one, else one of this run's own."""
    state_dir = Path(os.environ.get("REPLICATOR_DEVSTACK_DIR", default_state_dir()))
    running = DevStack(state_dir).running()
    if running is not None:
        yield running
        return
    with DevStack(workdir / "stack") as state:
        yield state


def command(tool: str, dest_scheme: str, target: str, transfers: int | None) -> list[str]:
    source = f"s3://{SOURCE_BUCKET}/{PREFIX}"
    dest = f"{dest_scheme}://{DEST_BUCKET}/{target}"
    if tool == REPLICATOR:
        argv = [sys.executable, "-m", "replicator", "backfill", "--json"]
        if transfers is not None:
            argv += ["--transfers", str(transfers)]
        return [*argv, source, dest]
    if tool == RCLONE:
        remote = dest_scheme.upper()
        return [
            "rclone",
            "copy",
            "-q",
            "--transfers",
            str(RCLONE_TRANSFERS),
            f"S3:{SOURCE_BUCKET}/{PREFIX}",
            f"{remote}:{DEST_BUCKET}/{target}",
        ]
    argv = [sys.executable, "-m", "replicator.bench.raw", source, dest]
    return [*argv, "--concurrency", str(transfers or ONE_SHOT_TRANSFERS)]


async def create_bucket(url: str) -> None:
    async with open_store(url) as store:
        await store.create_container()


def one_run(
    tool: str,
    route: str,
    repeat: int,
    args: argparse.Namespace,
    env: Mapping[str, str],
    pids: list[int],
) -> dict[str, Any]:
    dest_scheme = ROUTES[route]
    target = f"{tool.split()[0]}-{repeat}-{time.monotonic_ns()}/"
    argv = command(tool, dest_scheme, target, args.transfers)
    run: ProcessRun = run_measured(argv, env=env, emulator_pids=pids)
    objects, size = asyncio.run(settle_destination(f"{dest_scheme}://{DEST_BUCKET}", target))
    complete = objects == args.objects and size == args.objects * args.size
    note = "" if complete else f"destination held {objects} objects, {size} bytes"
    if run.returncode != 0:
        note = (run.stderr.strip().splitlines() or ["failed"])[-1][:300]
    return {
        "route": route,
        "tool": tool,
        "repeat": repeat,
        "ok": run.returncode == 0 and complete,
        "note": note,
        "seconds": round(run.seconds, 3),
        "cpu_seconds": round(run.cpu_seconds, 3),
        "objects_per_s": round(args.objects / run.seconds, 1),
        "cpu_s_per_1000": round(run.cpu_seconds / args.objects * 1000, 2),
        "peak_rss_mb": run.peak_rss_mb,
        "emulator_cpu_seconds": round(run.emulator_cpu_seconds, 2),
    }


def summarise(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for route in dict.fromkeys(s["route"] for s in samples):
        rclone_rate = None
        for tool in dict.fromkeys(s["tool"] for s in samples if s["route"] == route):
            runs = [s for s in samples if s["route"] == route and s["tool"] == tool and s["ok"]]
            if not runs:
                rows.append({"route": route, "tool": tool, "ok": False})
                continue
            rates = [r["objects_per_s"] for r in runs]
            cpu = [r["cpu_s_per_1000"] for r in runs]
            row = {
                "route": route,
                "tool": tool,
                "ok": len(runs) == sum(s["route"] == route and s["tool"] == tool for s in samples),
                "runs": len(runs),
                "objects_per_s": statistics.median(rates),
                "objects_per_s_min": min(rates),
                "objects_per_s_max": max(rates),
                "cpu_s_per_1000": statistics.median(cpu),
                "cpu_s_per_1000_min": min(cpu),
                "cpu_s_per_1000_max": max(cpu),
                "emulator_cpu_seconds": statistics.median(r["emulator_cpu_seconds"] for r in runs),
            }
            if tool == RCLONE:
                rclone_rate = row["objects_per_s"]
            rows.append(row)
        for row in rows:
            if row["route"] == route and "objects_per_s" in row and rclone_rate:
                row["x_rclone"] = round(row["objects_per_s"] / rclone_rate, 2)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| route | tool | objects/s (median, min-max) | x rclone | CPU-s / 1000 objects "
        "(median, min-max) | emulators' CPU-s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "objects_per_s" not in row:
            lines.append(f"| {row['route']} | {row['tool']} | FAILED | | | |")
            continue
        lines.append(
            f"| {row['route']} | {row['tool']} | {row['objects_per_s']:.1f} "
            f"({row['objects_per_s_min']:.1f}-{row['objects_per_s_max']:.1f}) | "
            f"{row.get('x_rclone', 0):.2f} | {row['cpu_s_per_1000']:.2f} "
            f"({row['cpu_s_per_1000_min']:.2f}-{row['cpu_s_per_1000_max']:.2f}) | "
            f"{row['emulator_cpu_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096, help="bytes per object")
    parser.add_argument(
        "--transfers",
        type=int,
        help=f"replicator's --transfers (default: its own, {ONE_SHOT_TRANSFERS})",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--routes", default=",".join(ROUTES), help="comma-separated")
    parser.add_argument("--raw", action="store_true", help="also time the raw SDK baseline")
    parser.add_argument(
        "--no-rclone", action="store_true", help="time replicator alone (quick comparisons)"
    )
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args()
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = [r for r in routes if r not in ROUTES]
    if unknown:
        parser.error(f"unknown route(s) {unknown}; known: {', '.join(ROUTES)}")
    if shutil.which("rclone") is None and not args.no_rclone:
        parser.error("rclone is not installed (make setup installs it)")
    tools = [REPLICATOR] + ([] if args.no_rclone else [RCLONE]) + ([RAW] if args.raw else [])
    with tempfile.TemporaryDirectory(prefix="backfill-bench-") as tmp:
        workdir = Path(tmp)
        with test_bed(workdir) as state, environment(state.env):
            env = dict(os.environ)
            env["REPLICATOR_CATALOG"] = f"sqlite:///{workdir}/catalog.db"
            azure_port = state.components["azure"].port
            sas = account_sas(AZURE_DEV_ACCOUNT, AZURE_DEV_KEY)
            tool_env = rclone_environment(
                env, f"http://127.0.0.1:{azure_port}/{AZURE_DEV_ACCOUNT}?{sas}"
            )
            pids = [c.pid for name, c in state.components.items() if name in ("s3", "gcs", "azure")]
            source = f"s3://{SOURCE_BUCKET}"
            print(f"seeding {args.objects} x {args.size} B into {source}/{PREFIX}", file=sys.stderr)
            asyncio.run(create_bucket(source))
            asyncio.run(settle_destination(source, PREFIX))
            asyncio.run(seed(source, [Dataset("small", PREFIX, (args.size,) * args.objects)]))
            for route in routes:
                asyncio.run(create_bucket(f"{ROUTES[route]}://{DEST_BUCKET}"))
            # The run's catalog is created (schema and all) before anything is timed.
            warm = [sys.executable, "-m", "replicator", "backfill", "--json"]
            warm += ["--include", "object-00000", f"{source}/{PREFIX}", "gs://bf-dst/warm-up/"]
            run_measured(warm, env=tool_env)
            asyncio.run(settle_destination(f"gs://{DEST_BUCKET}", "warm-up/"))
            samples: list[dict[str, Any]] = []
            for route in routes:
                for repeat in range(args.repeats):
                    for tool in tools:
                        sample = one_run(tool, route, repeat, args, tool_env, pids)
                        samples.append(sample)
                        print(
                            f"{route} {tool} #{repeat}: {sample['objects_per_s']} objects/s, "
                            f"{sample['cpu_s_per_1000']} CPU-s/1000"
                            + (f" FAILED: {sample['note']}" if not sample["ok"] else ""),
                            file=sys.stderr,
                        )
            asyncio.run(settle_destination(source, PREFIX))
    rows = summarise(samples)
    result = {
        "parameters": {
            "objects": args.objects,
            "size": args.size,
            "transfers": args.transfers or ONE_SHOT_TRANSFERS,
            "rclone_transfers": RCLONE_TRANSFERS,
            "repeats": args.repeats,
            "routes": routes,
        },
        "summary": rows,
        "samples": samples,
    }
    print(table(rows))
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
