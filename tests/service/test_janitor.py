"""Abandoned multipart uploads at every kind of destination are found, counted and aborted
once old enough; younger ones (perhaps a live copy's) are left alone."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import open_store
from connectors.base import ObjectStore
from replicator.catalog import CatalogJournal, open_catalog
from replicator.daemon.janitor import UploadJanitor
from replicator.daemon.metrics import DaemonMetrics
from replicator.devstack import StackState
from replicator.engine.transfer import UploadRecord
from replicator.pipeline.rules import Router, load_config


@pytest.mark.parametrize("scheme", ["s3", "gs", "az", "file"])
async def test_abandoned_uploads_are_aborted_once_old_enough(
    devstack: StackState, tmp_path: Path, scheme: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    destination = (
        f"file://{tmp_path}/dest/" if scheme == "file" else f"{scheme}://dst-{tag}/replicas/"
    )
    config = load_config(
        {"routes": [{"name": "r", "source": f"s3://src-{tag}/", "destinations": [destination]}]}
    )
    opened: dict[str, ObjectStore] = {}

    def stores(url: str) -> ObjectStore:
        if url not in opened:
            opened[url] = open_store(url)
        return opened[url]

    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    metrics = DaemonMetrics()
    journal = catalog.journal()
    janitor = UploadJanitor(
        Router(config),
        stores,
        journal,
        interval=timedelta(hours=1),
        abandon_after=timedelta(hours=1),
        open_gauge=metrics.uploads_open,
        aborted_counter=metrics.uploads_aborted,
    )
    store = stores(destination)
    try:
        await store.create_container()
        # What a daemon killed mid-copy leaves: an open upload with a part, and its journal.
        upload_id = await store.create_multipart("big.bin")
        await store.put_part("big.bin", upload_id, 1, b"x" * (5 * 1024 * 1024))
        await journal.started(
            UploadRecord(store.url_for("big.bin"), upload_id, "s3://src/big.bin", "v1", 1, 1)
        )
        # The store's own start time (moto reports a fixed date in 2010).
        [listed] = [u async for u in store.list_multipart_uploads()]
        assert listed.initiated is not None
        young = await janitor.sweep(listed.initiated + timedelta(minutes=30))
        assert young.open == {destination: 1}
        assert young.aborted == []
        labels = {"destination": destination}
        assert metrics.registry.get_sample_value("replicator_uploads_open", labels) == 1

        later = await janitor.sweep(max(listed.initiated, datetime.now(UTC)) + timedelta(hours=2))
        assert (later.open, later.errors) == ({destination: 0}, [])
        assert len(later.aborted) == 1
        assert [u async for u in store.list_multipart_uploads()] == []
        assert await journal.find(store.url_for("big.bin")) is None
        assert metrics.registry.get_sample_value("replicator_uploads_open", labels) == 0
        assert metrics.registry.get_sample_value("replicator_uploads_aborted_total", labels) == 1
    finally:
        for opened_store in opened.values():
            await opened_store.close()
        await catalog.close()


@contextlib.asynccontextmanager
async def one_destination(
    destination: str, tmp_path: Path
) -> AsyncIterator[tuple[ObjectStore, CatalogJournal, UploadJanitor]]:
    """A janitor of one route's ``destination`` (its store created), with an hour's thresholds,
    and the catalog journal it reads."""
    config = load_config(
        {"routes": [{"name": "r", "source": "s3://src/", "destinations": [destination]}]}
    )
    store = open_store(destination)
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    journal = catalog.journal()
    janitor = UploadJanitor(
        Router(config),
        lambda _: store,
        journal,
        interval=timedelta(hours=1),
        abandon_after=timedelta(hours=1),
    )
    try:
        await store.create_container()
        yield store, journal, janitor
    finally:
        await store.close()
        await catalog.close()


async def test_an_upload_the_journal_saw_start_recently_is_kept_whatever_the_store_says(
    devstack: StackState, tmp_path: Path
) -> None:
    """moto reports every upload as started in 2010: a daemon starting while another copies
    (a striped upload's parts on their way from the whole group) must not abort it."""
    destination = f"s3://dst-{uuid.uuid4().hex[:10]}/"
    async with one_destination(destination, tmp_path) as (store, journal, janitor):
        upload_id = await store.create_multipart("big.bin")
        await journal.started(
            UploadRecord(store.url_for("big.bin"), upload_id, "s3://src/big.bin", "v1", 1, 1)
        )
        [listed] = [u async for u in store.list_multipart_uploads()]
        assert listed.initiated is not None
        assert listed.initiated < datetime.now(UTC) - timedelta(days=365)

        report = await janitor.sweep()
        assert (report.open, report.aborted) == ({destination: 1}, [])
        assert [u.upload_id async for u in store.list_multipart_uploads()] == [upload_id]


@pytest.mark.parametrize("scheme", ["s3", "gs", "az", "file"])
async def test_journal_rows_of_uploads_gone_from_the_store_are_forgotten(
    devstack: StackState, tmp_path: Path, scheme: str
) -> None:
    """A daemon killed between completing an upload and forgetting it in the journal (or a
    catalog that refused the forgetting) leaves a row for an upload the store no longer has:
    no later copy of that key needs it, so the janitor forgets it once old enough."""
    tag = uuid.uuid4().hex[:10]
    destination = (
        f"file://{tmp_path}/dest/" if scheme == "file" else f"{scheme}://dst-{tag}/replicas/"
    )
    elsewhere = f"file://{tmp_path}/elsewhere/"
    async with one_destination(destination, tmp_path) as (store, journal, janitor):
        completed = await store.create_multipart("done.bin")
        token = await store.put_part("done.bin", completed, 1, b"done")
        await journal.started(
            UploadRecord(store.url_for("done.bin"), completed, "s3://src/done.bin", "v1", 4, 4)
        )
        await store.complete_multipart("done.bin", completed, [token])
        other = UploadRecord(elsewhere + "x.bin", "u-1", "s3://src/x.bin", "v1", 4, 4)
        await journal.started(other)

        soon = await janitor.sweep(datetime.now(UTC))
        assert soon.forgotten == []
        assert await journal.find(store.url_for("done.bin")) is not None

        later = await janitor.sweep(datetime.now(UTC) + timedelta(hours=2))
        assert later.errors == []
        assert later.forgotten == [f"{store.url_for('done.bin')} ({completed})"]
        assert await journal.find(store.url_for("done.bin")) is None
        assert await journal.find(other.dest_url) == other, "another destination's row"


KILLED_WRITER = """
import asyncio, sys
from connectors import open_store

async def main() -> None:
    store = open_store(sys.argv[1])
    await store.put("huge.bin", bytearray(1024**3))

asyncio.run(main())
"""


async def test_a_single_write_killed_half_way_leaves_a_temporary_the_janitor_removes(
    tmp_path: Path,
) -> None:
    """A file store stages a single write before renaming it into place; a process killed in
    between leaves the staged file, which the store reports as an open upload (found without
    walking the tree) and the janitor removes once old enough."""
    destination = f"file://{tmp_path}/dest/"
    (tmp_path / "dest").mkdir()
    staged = tmp_path / "dest" / ".replicator-uploads" / "single-writes"
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", KILLED_WRITER, destination)
    try:
        deadline = time.monotonic() + 60
        while not (staged.is_dir() and any(staged.iterdir())):
            assert writer.returncode is None, "the write ended before it could be killed"
            assert time.monotonic() < deadline, "the write never started"
            await asyncio.sleep(0.005)
    finally:
        writer.kill()
        await writer.wait()
    store = open_store(destination)
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    config = load_config(
        {"routes": [{"name": "r", "source": "s3://src/", "destinations": [destination]}]}
    )
    janitor = UploadJanitor(
        Router(config),
        lambda url: store,
        catalog.journal(),
        interval=timedelta(hours=1),
        abandon_after=timedelta(hours=1),
    )
    try:
        assert [m async for m in store.list()] == [], "a staged write is not an object"
        [left] = [u async for u in store.list_multipart_uploads()]
        assert left.initiated is not None
        young = await janitor.sweep(left.initiated + timedelta(minutes=30))
        assert young.aborted == []
        later = await janitor.sweep(left.initiated + timedelta(hours=2))
        assert len(later.aborted) == 1
        assert [u async for u in store.list_multipart_uploads()] == []
        assert list(staged.iterdir()) == []
    finally:
        await store.close()
        await catalog.close()
