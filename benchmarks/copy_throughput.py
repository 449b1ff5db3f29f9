"""Copy throughput on the local test bed: replicator against the raw ceiling, rclone and cp.

For each route and data set this measures, in the same run and on the same data:

* raw:        the emulators' own ceiling: a minimal raw-SDK GET of each object then a PUT of it
              (no checksums, no verification, the same object concurrency);
* replicator: ``Copier`` in a fresh process (so its peak RSS is its own);
* rclone:     ``rclone copy`` of the same objects (when rclone is installed);
* cp:         coreutils ``cp`` for file -> file.

Each tool runs ``--repeat`` times into a fresh destination prefix and the median is reported
(the peak RSS is the largest seen). Dirty pages are written back before every timed run, so no
tool pays for the write-back of the one before it; the replicator's own fsyncs stay on its time.

Usage: python -m benchmarks.copy_throughput [--large-mib 512] [--small-count 64] [--small-mib 4]
       [--routes s3-gs,s3-az,gs-az,file-file] [--repeat 3] [--json FILE]
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
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiobotocore.session import get_session
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
from azure.storage.blob.aio import BlobServiceClient

from connectors import open_store
from connectors.base import MiB, ObjectStore
from replicator.devstack import AZURE_DEV_ACCOUNT, AZURE_DEV_KEY, DevStack, environment

ROUTES = {
    "s3-gs": ("s3", "gs"),
    "s3-az": ("s3", "az"),
    "gs-az": ("gs", "az"),
    "file-file": ("file", "file"),
}
OBJECT_CONCURRENCY = 8


@dataclass
class Measurement:
    route: str
    dataset: str
    tool: str
    bytes: int
    seconds: float
    peak_rss_mb: float | None = None

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


def root_url(scheme: str, name: str, workdir: Path) -> str:
    if scheme == "file":
        return f"file://{workdir}/{name}"
    return f"{scheme}://{name}"


# -- raw SDK ceiling ----------------------------------------------------------------------


class RawClients:
    """The plainest async GET and PUT each SDK offers, for the ceiling measurement."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession()
        self._s3_context = get_session().create_client(
            "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
        )
        self.s3: object = None
        self.azure = BlobServiceClient.from_connection_string(
            os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        )

    async def __aenter__(self) -> RawClients:
        self.s3 = await self._s3_context.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._s3_context.__aexit__(None, None, None)
        await self.session.close()
        await self.azure.close()

    async def get(self, scheme: str, container: str, key: str) -> bytes:
        if scheme == "s3":
            response = await self.s3.get_object(Bucket=container, Key=key)  # type: ignore[attr-defined]
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        if scheme == "gs":
            url = (
                f"{os.environ['STORAGE_EMULATOR_HOST']}/storage/v1/b/{container}/o/"
                f"{urllib.parse.quote(key, safe='')}?alt=media"
            )
            async with self.session.get(url) as response:
                response.raise_for_status()
                return await response.read()
        if scheme == "az":
            stream = await self.azure.get_blob_client(container, key).download_blob()
            return await stream.readall()
        return await asyncio.to_thread(Path(container, key).read_bytes)

    async def put(self, scheme: str, container: str, key: str, data: bytes) -> None:
        if scheme == "s3":
            await self.s3.put_object(Bucket=container, Key=key, Body=data)  # type: ignore[attr-defined]
        elif scheme == "gs":
            url = (
                f"{os.environ['STORAGE_EMULATOR_HOST']}/upload/storage/v1/b/{container}/o"
                f"?uploadType=media&name={urllib.parse.quote(key, safe='')}"
            )
            async with self.session.post(url, data=data) as response:
                response.raise_for_status()
        elif scheme == "az":
            await self.azure.get_blob_client(container, key).upload_blob(data, overwrite=True)
        else:
            path = Path(container, key)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(path.write_bytes, data)


def container_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return rest if scheme == "file" else rest.split("/", 1)[0]


async def gather_bounded(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    gate = asyncio.Semaphore(OBJECT_CONCURRENCY)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def measure_raw(source: str, dest: str, keys: list[str], prefix: str) -> float:
    src_scheme, dst_scheme = source.split("://")[0], dest.split("://")[0]
    src_container, dst_container = container_of(source), container_of(dest)
    async with RawClients() as raw:

        async def one(key: str) -> None:
            data = await raw.get(src_scheme, src_container, key)
            await raw.put(dst_scheme, dst_container, f"{prefix}{key}", data)

        started = time.perf_counter()
        await gather_bounded([lambda k=key: one(k) for key in keys])  # type: ignore[misc]
        return time.perf_counter() - started


# -- replicator, rclone, cp ---------------------------------------------------------------


def measure_replicator(source: str, dest: str, keys: list[str], prefix: str) -> tuple[float, float]:
    payload = json.dumps(
        {
            "source": source,
            "dest": dest,
            "keys": keys,
            "prefix": prefix,
            "concurrency": OBJECT_CONCURRENCY,
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.copy_worker"],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    return float(report["seconds"]), float(report["peak_rss_mb"])


def rclone_env(state_env: dict[str, str], azure_port: int) -> dict[str, str]:
    sas = generate_account_sas(
        AZURE_DEV_ACCOUNT,
        AZURE_DEV_KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, list=True, create=True, add=True, delete=True),
        datetime.now(UTC) + timedelta(hours=2),
    )
    env = {name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE"}
    env.update(
        {
            "RCLONE_CONFIG_S3_TYPE": "s3",
            "RCLONE_CONFIG_S3_PROVIDER": "Other",
            "RCLONE_CONFIG_S3_ENDPOINT": state_env["AWS_ENDPOINT_URL"],
            "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "testing",
            "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "testing",
            "RCLONE_CONFIG_S3_NO_HEAD": "true",
            "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_GS_TYPE": "google cloud storage",
            "RCLONE_CONFIG_GS_ANONYMOUS": "true",
            "RCLONE_CONFIG_GS_ENDPOINT": f"{state_env['STORAGE_EMULATOR_HOST']}/storage/v1/",
            "RCLONE_CONFIG_AZ_TYPE": "azureblob",
            "RCLONE_CONFIG_AZ_SAS_URL": f"http://127.0.0.1:{azure_port}/{AZURE_DEV_ACCOUNT}?{sas}",
        }
    )
    return env


def rclone_path(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return rest if scheme == "file" else f"{scheme.upper()}:{rest}"


def measure_rclone(
    source: str, dest: str, prefix: str, env: dict[str, str], target: str
) -> float | None:
    if shutil.which("rclone") is None:
        return None
    started = time.perf_counter()
    subprocess.run(
        [
            "rclone",
            "copy",
            f"{rclone_path(source)}/{prefix}",
            f"{rclone_path(dest)}/{target}{prefix}",
            "--transfers",
            str(OBJECT_CONCURRENCY),
            "--checkers",
            str(OBJECT_CONCURRENCY),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def measure_cp(source: str, dest: str, prefix: str, into: str) -> tuple[float, float]:
    """Seconds for ``cp -r``, and for ``cp -r`` then ``sync`` of the target's file system.

    cp returns once the bytes are in the page cache; replicator returns once they are on disk
    (it fsyncs every object before publishing it), so the durable comparison is cp + sync.
    """
    target = Path(container_of(dest), into)
    target.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(Path(container_of(source), prefix)), str(target)], check=True)
    copied = time.perf_counter() - started
    subprocess.run(["sync", "--file-system", str(target)], check=True)
    return copied, time.perf_counter() - started


# -- driver ---------------------------------------------------------------------------------


async def seed(store: ObjectStore, keys_and_sizes: list[tuple[str, int]]) -> None:
    for key, size in keys_and_sizes:
        await store.put(key, os.urandom(size))


async def prepare(source: str, dest: str, datasets: dict[str, list[tuple[str, int]]]) -> None:
    for url in (source, dest):
        async with open_store(url) as store:
            await store.create_container()
    async with open_store(source) as store:
        for objects in datasets.values():
            await seed(store, objects)


def run(args: argparse.Namespace) -> list[Measurement]:
    datasets = {
        f"1 x {args.large_mib} MiB": [("large/object-0", args.large_mib * MiB)],
        f"{args.small_count} x {args.small_mib} MiB": [
            (f"small/object-{i:03d}", args.small_mib * MiB) for i in range(args.small_count)
        ],
    }
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="replicator-bench-") as workdir:
        stack = DevStack(Path(workdir) / "stack", components=("s3", "gcs", "azure"))
        with stack as state, environment(state.env):
            env = rclone_env(state.env, state.components["azure"].port)
            for route in args.routes:
                src_scheme, dst_scheme = ROUTES[route]
                source = root_url(src_scheme, f"bench-src-{route}", Path(workdir))
                dest = root_url(dst_scheme, f"bench-dst-{route}", Path(workdir))
                asyncio.run(prepare(source, dest, datasets))
                for name, objects in datasets.items():
                    keys = [key for key, _ in objects]
                    prefix = keys[0].split("/")[0]
                    total = sum(size for _, size in objects)
                    runs: dict[str, list[float]] = {}
                    peak_rss = 0.0
                    for n in range(args.repeat):
                        settle()
                        raw = asyncio.run(measure_raw(source, dest, keys, f"raw{n}/"))
                        runs.setdefault("raw GET+PUT", []).append(raw)
                        settle()
                        seconds, rss = measure_replicator(source, dest, keys, f"replicator{n}/")
                        runs.setdefault("replicator", []).append(seconds)
                        peak_rss = max(peak_rss, rss)
                        settle()
                        rclone = measure_rclone(source, dest, prefix, env, f"rclone{n}/")
                        if rclone is not None:
                            runs.setdefault("rclone copy", []).append(rclone)
                        if route == "file-file":
                            settle()
                            cp, cp_synced = measure_cp(source, dest, prefix, f"cp{n}")
                            runs.setdefault("cp", []).append(cp)
                            runs.setdefault("cp + sync", []).append(cp_synced)
                    for tool, times in runs.items():
                        rss_of = peak_rss if tool == "replicator" else None
                        median = statistics.median(times)
                        results.append(Measurement(route, name, tool, total, median, rss_of))
                    print(f"{route} {name}: done", file=sys.stderr)
    return results


def settle() -> None:
    """Write back every dirty page before a timed run, so it pays only for its own."""
    os.sync()


def table(results: list[Measurement]) -> str:
    lines = [
        "| route | data | tool | MB/s | vs raw | vs cp | vs cp + sync | vs rclone | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        peers = {r.tool: r for r in results if r.route == m.route and r.dataset == m.dataset}

        def ratio(tool: str, m: Measurement = m, peers: dict[str, Measurement] = peers) -> str:
            peer = peers.get(tool)
            return f"{m.mb_per_s / peer.mb_per_s:.0%}" if peer and peer is not m else ""

        vs_raw = ratio("raw GET+PUT")
        vs_cp, vs_cp_synced, vs_rclone = (
            ratio(t) if m.tool == "replicator" else "" for t in ("cp", "cp + sync", "rclone copy")
        )
        rss = f"{m.peak_rss_mb:.0f}" if m.peak_rss_mb is not None else ""
        lines.append(
            f"| {m.route} | {m.dataset} | {m.tool} | {m.mb_per_s:.1f} | {vs_raw} | {vs_cp} | "
            f"{vs_cp_synced} | {vs_rclone} | {rss} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-mib", type=int, default=512)
    parser.add_argument("--small-count", type=int, default=64)
    parser.add_argument("--small-mib", type=int, default=4)
    parser.add_argument("--routes", type=lambda s: s.split(","), default=list(ROUTES))
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the median counts")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    results = run(args)
    print(table(results))
    if args.json:
        args.json.write_text(
            json.dumps([m.__dict__ | {"mb_per_s": m.mb_per_s} for m in results], indent=2)
        )


if __name__ == "__main__":
    main()
