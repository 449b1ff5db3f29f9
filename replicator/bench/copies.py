"""Copy workloads: seeded data sets, the tools compared on them, and one measured run.

Every tool runs as a whole process on the same data, in turn within each repetition (so a
change in the machine's load touches them all alike), into a destination prefix of its own
that is checked (object count and bytes) and deleted afterwards, which keeps the emulators'
memory flat. Tools:

* ``replicator``: ``replicator cp`` (one object) or ``replicator cp -r`` (a prefix);
* ``rclone``: ``rclone copyto`` / ``rclone copy`` with its defaults;
* ``rclone tuned``: the same, told to use replicator's part size and concurrency;
* ``raw SDK``: ``python -m replicator.bench.raw``, one plain GET and PUT per object;
* ``cp`` and ``cp + sync`` for file -> file (replicator's copies are durable when it returns).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connectors import open_store
from connectors.base import MiB, ObjectStore
from replicator.bench.processes import ProcessRun, run_measured

ROUTES: dict[str, tuple[str, str]] = {
    "s3->gs": ("s3", "gs"),
    "s3->az": ("s3", "az"),
    "gs->az": ("gs", "az"),
    "az->s3": ("az", "s3"),
    "file->s3": ("file", "s3"),
    "file->file": ("file", "file"),
}
REPLICATOR = "replicator"
RCLONE = "rclone"
RCLONE_TUNED = "rclone tuned"
RAW = "raw SDK"
CP = "cp"
CP_SYNC = "cp + sync"


@dataclass(frozen=True)
class Dataset:
    name: str
    prefix: str
    sizes: tuple[int, ...]

    @property
    def single(self) -> bool:
        return len(self.sizes) == 1

    @property
    def total(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class CopyParams:
    """What replicator is told, and rclone tuned to match."""

    part_size: int = 16 * MiB
    concurrency: int = 8
    objects: int = 16


@dataclass
class CopySample:
    route: str
    dataset: str
    tool: str
    repeat: int
    params: dict[str, int]
    bytes: int
    objects: int
    run: ProcessRun
    complete: bool
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.run.returncode == 0 and self.complete


def mixed_sizes(count: int) -> tuple[int, ...]:
    """A lake-like mix: mostly small files, some medium, a few large (deterministic)."""
    pattern = (4 * 1024,) * 6 + (256 * 1024,) * 2 + (4 * MiB, 48 * MiB)
    return tuple(pattern[i % len(pattern)] for i in range(count))


def root_url(scheme: str, workdir: Path, name: str) -> str:
    return f"file://{workdir}/{name}" if scheme == "file" else f"{scheme}://{name}"


async def seed(url: str, datasets: Sequence[Dataset]) -> None:
    """Write every data set under its prefix (random bytes, one buffer per size)."""
    async with open_store(url) as store:
        await store.create_container()
        blobs: dict[int, bytes] = {}
        gate = asyncio.Semaphore(16)

        async def put(key: str, size: int) -> None:
            async with gate:
                data = blobs.setdefault(size, os.urandom(size))
                await _put(store, key, data)

        for dataset in datasets:
            await asyncio.gather(
                *(
                    put(f"{dataset.prefix}object-{index:05d}", size)
                    for index, size in enumerate(dataset.sizes)
                )
            )


async def _put(store: ObjectStore, key: str, data: bytes) -> None:
    if len(data) <= 256 * MiB:
        await store.put(key, data)
        return
    upload = await store.create_multipart(key)
    part = 64 * MiB
    view = memoryview(data)
    tokens = [
        await store.put_part(key, upload, number, view[start : start + part])
        for number, start in enumerate(range(0, len(data), part), start=1)
    ]
    await store.complete_multipart(key, upload, tokens)


async def settle_destination(url: str, prefix: str) -> tuple[int, int]:
    """Count (objects, bytes) under ``prefix``, then delete them (and any upload left)."""
    async with open_store(url) as store:
        found = [meta async for meta in store.list(prefix)]
        gate = asyncio.Semaphore(32)

        async def delete(key: str) -> None:
            async with gate:
                await store.delete(key)

        await asyncio.gather(*(delete(meta.key) for meta in found))
        async for upload in store.list_multipart_uploads(prefix):
            await store.abort_multipart(upload.key, upload.upload_id)
    return len(found), sum(meta.size for meta in found)


def rclone_path(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return rest if scheme == "file" else f"{scheme.upper()}:{rest}"


def rclone_environment(env: Mapping[str, str], sas_url: str) -> dict[str, str]:
    """rclone's remotes S3:, GS: and AZ: on the test bed, configured from the environment."""
    out = {name: value for name, value in env.items() if name != "AWS_CA_BUNDLE"}
    out.update(
        {
            "RCLONE_CONFIG_S3_TYPE": "s3",
            "RCLONE_CONFIG_S3_PROVIDER": "Other",
            "RCLONE_CONFIG_S3_ENDPOINT": env["AWS_ENDPOINT_URL"],
            "RCLONE_CONFIG_S3_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", "testing"),
            "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", "testing"),
            # moto answers HEAD of a bucket path oddly; rclone's documented switch for it.
            "RCLONE_CONFIG_S3_NO_HEAD": "true",
            "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_GS_TYPE": "google cloud storage",
            "RCLONE_CONFIG_GS_ANONYMOUS": "true",
            "RCLONE_CONFIG_GS_ENDPOINT": f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/",
            "RCLONE_CONFIG_AZ_TYPE": "azureblob",
            "RCLONE_CONFIG_AZ_SAS_URL": sas_url,
        }
    )
    return out


def command(
    tool: str,
    dataset: Dataset,
    source: str,
    dest: str,
    params: CopyParams,
    dest_scheme: str,
) -> list[str]:
    """The command line of ``tool`` copying ``dataset`` from the root ``source`` to the
    prefix ``dest`` (a URL ending in '/')."""
    first = f"{dataset.prefix}object-00000"
    src = f"{source}/{first}" if dataset.single else f"{source}/{dataset.prefix}"
    dst = f"{dest}{first}" if dataset.single else dest
    if tool == REPLICATOR:
        argv = [sys.executable, "-m", "replicator", "cp", "--json"]
        argv += ["--part-size", f"{params.part_size // MiB}MiB"]
        argv += ["--concurrency", str(params.concurrency)]
        if dataset.single:
            return [*argv, src, dst]
        return [*argv, "-r", "--objects", str(params.objects), src, dst]
    if tool in (RCLONE, RCLONE_TUNED):
        verb = "copyto" if dataset.single else "copy"
        argv = ["rclone", verb, "-q", rclone_path(src), rclone_path(dst)]
        if tool == RCLONE_TUNED:
            argv += _rclone_tuning(params, dest_scheme, dataset.single)
        return argv
    if tool == RAW:
        folder = src if not dataset.single else f"{source}/{dataset.prefix}"
        argv = [sys.executable, "-m", "replicator.bench.raw", folder, dest]
        return [*argv, "--concurrency", str(params.objects)]
    local_src, local_dst = rclone_path(src), rclone_path(dst)
    if not dataset.single:
        local_src = local_src.rstrip("/") + "/."
    copy = f"mkdir -p {local_dst if not dataset.single else os.path.dirname(local_dst)} && "
    copy += f"cp -r {local_src} {local_dst}"
    if tool == CP_SYNC:
        copy += f" && sync -f {os.path.dirname(local_dst.rstrip('/'))}"
    return ["sh", "-c", copy]


def _rclone_tuning(params: CopyParams, dest_scheme: str, single: bool) -> list[str]:
    chunk = f"{params.part_size // MiB}M"
    flags = ["--transfers", str(params.objects), "--checkers", str(params.objects)]
    if dest_scheme == "s3":
        flags += ["--s3-chunk-size", chunk, "--s3-upload-concurrency", str(params.concurrency)]
        flags += ["--s3-upload-cutoff", chunk]
    elif dest_scheme == "az":
        flags += ["--azureblob-chunk-size", chunk]
        flags += ["--azureblob-upload-concurrency", str(params.concurrency)]
        flags += ["--azureblob-upload-cutoff", chunk]
    elif dest_scheme == "file" and single:
        flags += ["--multi-thread-streams", str(params.concurrency)]
        flags += ["--multi-thread-cutoff", chunk]
    # rclone has no parallel upload to GCS: one stream per object whatever the flags.
    return flags


def tools_for(route: str) -> list[str]:
    tools = [REPLICATOR, RCLONE, RCLONE_TUNED, RAW]
    if route == "file->file":
        tools += [CP, CP_SYNC]
    if shutil.which("rclone") is None:
        tools = [t for t in tools if t not in (RCLONE, RCLONE_TUNED)]
    return tools


def measure_copy(
    *,
    tool: str,
    route: str,
    dataset: Dataset,
    repeat: int,
    params: CopyParams,
    source_root: str,
    dest_root: str,
    env: Mapping[str, str],
    emulator_pids: Sequence[int],
    timeout_s: float = 900,
) -> CopySample:
    """One measured run of ``tool``; its output is counted, then deleted."""
    slug = tool.replace(" + ", "-").replace(" ", "-")
    target = f"{slug}-{repeat}/"
    argv = command(tool, dataset, source_root, f"{dest_root}/{target}", params, ROUTES[route][1])
    if ROUTES[route][1] == "file":
        # The tools create the folders they write into, except replicator (a file store's
        # root must exist: a typo in a route must not create directories).
        folder = Path(dest_root.removeprefix("file://")) / target
        (folder / dataset.prefix if dataset.single else folder).mkdir(parents=True, exist_ok=True)
    os.sync()  # every tool starts with no dirty pages of the one before to write back
    run = run_measured(argv, env=env, emulator_pids=emulator_pids, timeout_s=timeout_s)
    objects, size = asyncio.run(settle_destination(dest_root, target))
    complete = objects == len(dataset.sizes) and size == dataset.total
    note = "" if complete else f"destination holds {objects} objects, {size} bytes"
    if run.returncode != 0:
        note = (run.stderr.strip().splitlines() or ["failed"])[-1][:300]
    return CopySample(
        route=route,
        dataset=dataset.name,
        tool=tool,
        repeat=repeat,
        params={
            "part_size": params.part_size,
            "concurrency": params.concurrency,
            "objects": params.objects,
        },
        bytes=dataset.total,
        objects=len(dataset.sizes),
        run=run,
        complete=complete,
        note=note,
    )
