"""The copy engine's upload journal in the catalog: round trips, and a copy resumed after a
crash by a new engine on a new catalog connection."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from connectors import open_store
from connectors.base import ChecksumKind, PartToken
from replicator.catalog import Catalog, CatalogJournal, open_catalog
from replicator.engine import hashing
from replicator.engine.hashing import FINGERPRINT_BLOCK
from replicator.engine.journal import Halt
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import Copier, CopyResult, DonePart, UploadRecord
from tests.engine.faults import FaultyStore

PART = FINGERPRINT_BLOCK
PARTS = 12
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


def done_part(number: int) -> DonePart:
    digest = bytes(range(number, number + 16))
    token = PartToken(number, f"etag-{number}", PART, {ChecksumKind.CRC32C: f"crc{number}=="})
    return DonePart(token, 0xFFFF_FFF0 + number, ((number - 1, digest),))


class TestJournal:
    async def test_upload_record_round_trips(
        self, catalog: Catalog, catalog_url: str, tmp_path: Path
    ) -> None:
        """Every field of an upload and of its parts (tokens, checksums, CRC32C, fingerprint
        block digests) reads back from another connection as written."""
        journal = catalog.journal()
        dest = f"file://{tmp_path}/dest/{os.urandom(4).hex()}"
        record = UploadRecord(dest, "upload-1", "s3://lake/k", "v1", PART, 3 * PART)
        await journal.started(record)
        for number in (1, 3):
            await journal.part_done(record, done_part(number))
        assert sorted(record.parts) == [1, 3]
        other = await open_catalog(catalog_url)
        try:
            found = await other.journal().find(dest)
        finally:
            await other.close()
        assert found == record

    async def test_a_new_upload_replaces_the_old_one(
        self, catalog: Catalog, tmp_path: Path
    ) -> None:
        """Starting a new upload to a destination forgets the old upload's parts, and finishing
        the old one (by its id) leaves the new one alone."""
        journal = catalog.journal()
        dest = f"file://{tmp_path}/dest/{os.urandom(4).hex()}"
        old = UploadRecord(dest, "upload-old", "s3://lake/k", "v1", PART, 2 * PART)
        await journal.started(old)
        await journal.part_done(old, done_part(1))
        new = UploadRecord(dest, "upload-new", "s3://lake/k", "v2", PART, 2 * PART)
        await journal.started(new)
        await journal.finished(old)
        found = await journal.find(dest)
        assert found is not None
        assert (found.upload_id, found.source_version, found.parts) == ("upload-new", "v2", {})
        await journal.finished(new)
        assert await journal.find(dest) is None


class _KilledProcessJournal:
    """What a killed process leaves: every part it reported, but no cleanup ('finished')."""

    def __init__(self, inner: CatalogJournal) -> None:
        self.inner = inner

    async def find(self, dest_url: str) -> UploadRecord | None:
        return await self.inner.find(dest_url)

    async def started(self, record: UploadRecord) -> None:
        await self.inner.started(record)

    async def part_done(self, record: UploadRecord, part: DonePart) -> None:
        await self.inner.part_done(record, part)

    async def finished(self, record: UploadRecord) -> None:
        return None

    async def published(self, record: UploadRecord) -> None:
        await self.inner.published(record)

    async def halt(self, record: UploadRecord, halt: Halt, because: str) -> None:
        await self.inner.halt(record, halt, because)


async def test_a_crashed_copy_resumes_from_its_completed_parts(
    catalog_url: str, tmp_path: Path
) -> None:
    """A many-part copy crashed after some parts is resumed by a new engine with a new
    catalog connection: only the missing parts are uploaded again, and the bytes are exact."""
    # A memory source: between two file stores the copy is the kernel's, not in parts.
    stores = [open_store(f"mem://{tmp_path.name}-source"), open_store(f"file://{tmp_path}/dest")]
    for store in stores:
        await store.create_container()
    source, dest = (FaultyStore(store) for store in stores)
    data = os.urandom(PARTS * PART - 12345)
    await source.put("lake/events.bin", data)
    crash_after = 5

    copying: asyncio.Task[CopyResult] | None = None

    async def crash(read_number: int) -> None:
        # The process dies while reading the next part: nothing after this point runs.
        if read_number == crash_after + 1 and copying is not None:
            copying.cancel()
            await asyncio.Event().wait()

    source.before_read = crash
    dest.ignore_aborts = True
    first = await open_catalog(catalog_url)
    try:
        crashing = Copier(
            part_size=PART,
            concurrency=1,
            retry=FAST_RETRY,
            journal=_KilledProcessJournal(first.journal()),
        )
        copying = asyncio.create_task(
            crashing.copy(source, "lake/events.bin", dest, "replica/events.bin")
        )
        with pytest.raises(asyncio.CancelledError):
            await copying
    finally:
        await first.close()
    assert len(dest.parts_uploaded) == crash_after

    source.before_read = None
    dest.parts_uploaded.clear()
    second = await open_catalog(catalog_url)
    try:
        engine = Copier(part_size=PART, concurrency=4, retry=FAST_RETRY, journal=second.journal())
        result = await engine.copy(source, "lake/events.bin", dest, "replica/events.bin")
        assert await second.journal().find(dest.url_for("replica/events.bin")) is None
    finally:
        await second.close()
    assert result.parts == PARTS
    assert result.parts_resumed == crash_after
    assert sorted(dest.parts_uploaded) == list(range(crash_after + 1, PARTS + 1))
    assert len(dest.parts_uploaded) < PARTS
    assert (tmp_path / "dest" / "replica" / "events.bin").read_bytes() == data
    assert result.fingerprint == hashing.fingerprint(data)


async def test_an_upload_left_for_an_overwritten_version_is_aborted(
    catalog_url: str, tmp_path: Path
) -> None:
    """A copy crashed mid-upload, then the source was overwritten: the next copy cannot resume
    that upload (another version), so it aborts it instead of leaving it behind for ever."""
    # A memory source: between two file stores the copy is the kernel's, not in parts.
    stores = [open_store(f"mem://{tmp_path.name}-source"), open_store(f"file://{tmp_path}/dest")]
    for store in stores:
        await store.create_container()
    source, dest = (FaultyStore(store) for store in stores)
    await source.put("lake/events.bin", os.urandom(PARTS * PART - 1))
    copying: asyncio.Task[CopyResult] | None = None

    async def crash(read_number: int) -> None:
        if read_number == 3 and copying is not None:
            copying.cancel()
            await asyncio.Event().wait()

    source.before_read = crash
    dest.ignore_aborts = True
    first = await open_catalog(catalog_url)
    try:
        crashing = Copier(
            part_size=PART,
            concurrency=1,
            retry=FAST_RETRY,
            journal=_KilledProcessJournal(first.journal()),
        )
        copying = asyncio.create_task(
            crashing.copy(source, "lake/events.bin", dest, "replica/events.bin")
        )
        with pytest.raises(asyncio.CancelledError):
            await copying
    finally:
        await first.close()
    assert [u.upload_id async for u in dest.list_multipart_uploads()], "no upload was left"

    source.before_read = None
    dest.ignore_aborts = False
    newer = os.urandom(PARTS * PART - 7)
    await source.put("lake/events.bin", newer)
    second = await open_catalog(catalog_url)
    try:
        engine = Copier(part_size=PART, concurrency=4, retry=FAST_RETRY, journal=second.journal())
        result = await engine.copy(source, "lake/events.bin", dest, "replica/events.bin")
        assert result.parts_resumed == 0
        assert await second.journal().find(dest.url_for("replica/events.bin")) is None
    finally:
        await second.close()
    assert [u async for u in dest.list_multipart_uploads()] == []
    assert (tmp_path / "dest" / "replica" / "events.bin").read_bytes() == newer
