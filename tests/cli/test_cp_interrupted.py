"""A `replicator cp` process stopped mid-copy leaves no partial object, and no upload once
cleaned (SIGTERM cleans up itself; after SIGKILL `replicator uploads clean` does)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from connectors.base import MiB, NotFound, ObjectStore
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
