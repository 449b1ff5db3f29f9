"""A `replicator cp` process stopped mid-copy leaves no partial object, and no upload once
cleaned (SIGTERM cleans up itself; after SIGKILL `replicator uploads clean` does)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from connectors.base import MiB, NotFound, ObjectStore
from connectors.local import LocalStore
from replicator.catalog import open_catalog
from replicator.engine.transfer import version_id
from tests.conftest import StoreFactory

SIZE = 96 * MiB


async def wait_for_upload(store: ObjectStore, process: asyncio.subprocess.Process) -> None:
    """Until the copy has an upload in progress (bounded)."""
    for _ in range(600):
        if [u async for u in store.list_multipart_uploads()]:
            return
        assert process.returncode is None, await process.communicate()
        await asyncio.sleep(0.05)
    raise AssertionError("the copy never started an upload")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
@pytest.mark.parametrize("dest_scheme", ["s3", "gs", "az"])
async def test_stopped_copy_leaves_nothing(
    store_factory: StoreFactory, tmp_path: Path, sig: signal.Signals, dest_scheme: str
) -> None:
    (tmp_path / "big").write_bytes(os.urandom(SIZE))
    dest = await store_factory(dest_scheme)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "replicator",
        "cp",
        "--part-size",
        "8MiB",
        "--concurrency",
        "1",
        f"file://{tmp_path}/big",
        dest.url_for("big"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_for_upload(dest, process)
        process.send_signal(sig)
        _, stderr_bytes = await asyncio.wait_for(process.communicate(), 60)
        stderr = stderr_bytes.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode != 0
    with pytest.raises(NotFound):
        await dest.head("big")
    if sig == signal.SIGTERM:
        assert "interrupted" in stderr
    else:
        assert [u async for u in dest.list_multipart_uploads()] != []
        clean = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "replicator",
            "uploads",
            "clean",
            "--older-than",
            "0s",
            dest.root_url,
            stderr=asyncio.subprocess.PIPE,
        )
        _, clean_err = await clean.communicate()
        assert clean.returncode == 0, clean_err
    assert [u async for u in dest.list_multipart_uploads()] == []
    assert [m.key async for m in dest.list()] == []


async def test_killed_copy_resumes_from_the_catalog(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    """With --catalog, a copy killed mid-way resumes: the second run re-sends fewer parts
    than the object has, and the replica is exact."""
    data = os.urandom(SIZE)
    (tmp_path / "big").write_bytes(data)
    dest = await store_factory("az")
    catalog = f"sqlite:///{tmp_path}/catalog.db"
    argv = [
        sys.executable,
        "-m",
        "replicator",
        "cp",
        "--part-size",
        "8MiB",
        "--concurrency",
        "1",
        "--catalog",
        catalog,
        "--json",
        f"file://{tmp_path}/big",
        dest.url_for("big"),
    ]
    first = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    source_version = version_id(await LocalStore(str(tmp_path)).head("big"))
    try:
        await wait_for_upload(dest, first)
        async with await open_catalog(catalog) as journal_db:
            journal = journal_db.journal()
            for _ in range(600):
                record = await journal.find(dest.url_for("big"))
                if (
                    record is not None
                    and record.source_version == source_version
                    and len(record.parts) >= 2
                ):
                    break
                await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        await first.communicate()
    finally:
        if first.returncode is None:
            first.kill()
            await first.communicate()
    second = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(second.communicate(), 300)
    assert second.returncode == 0, err
    summary = json.loads(out)
    total = SIZE // (8 * MiB)
    assert summary["parts"] == total
    assert 0 < summary["parts_resumed"] < total
    assert summary["bytes_transferred"] < SIZE
    assert await dest.read("big") == data
    assert [u async for u in dest.list_multipart_uploads()] == []
