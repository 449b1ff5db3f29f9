"""The copy engine on the real emulators: every direction, every size class, every failure."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from connectors.base import (
    ChecksumKind,
    IntegrityError,
    MiB,
    NotFound,
    ObjectAttributes,
    TransientError,
)
from replicator.engine import hashing
from replicator.engine.metadata import replica_fingerprint, replica_source, replica_source_version
from replicator.engine.planner import Strategy
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import ByteBudget, Copier, SharedSourceRead
from tests.conftest import StoreFactory
from tests.engine.faults import FaultyStore
from tests.independent import read_object

PART = 8 * MiB
SIZES = {
    "empty": 0,
    "one-byte": 1,
    "part-minus-one": PART - 1,
    "one-part": PART,
    "two-parts-plus-one": 2 * PART + 1,
    "several-parts": 4 * PART + 12345,
}
CLOUDS = ("s3", "gs", "az", "file")
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


def copier(**kwargs: object) -> Copier:
    return Copier(part_size=PART, concurrency=4, retry=FAST_RETRY, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("source_scheme", CLOUDS)
@pytest.mark.parametrize("dest_scheme", CLOUDS)
async def test_every_direction_every_size(
    store_factory: StoreFactory, source_scheme: str, dest_scheme: str
) -> None:
    """Destination bytes equal source bytes, read back by an independent client; attributes
    and replica marks travel along; a second copy is a no-op."""
    source = await store_factory(source_scheme)
    dest = source if source_scheme == dest_scheme else await store_factory(dest_scheme)
    payloads = {name: os.urandom(size) for name, size in SIZES.items()}
    attributes = ObjectAttributes(
        content_type="application/x-test", cache_control="no-cache", user_metadata={"owner": "lake"}
    )
    for name, data in payloads.items():
        await source.put(f"src/{name}", data, attributes=attributes)
    engine = copier()
    results = await asyncio.gather(
        *(engine.copy(source, f"src/{name}", dest, f"dst/{name}") for name in payloads)
    )
    for (name, data), result in zip(payloads.items(), results, strict=True):
        assert result.status == "copied", name
        assert read_object(dest.url_for(f"dst/{name}")) == data, name
        head = await dest.head(f"dst/{name}")
        assert head.attributes.content_type == "application/x-test"
        assert head.attributes.cache_control == "no-cache"
        user = head.attributes.user_metadata
        assert user["owner"] == "lake"
        assert replica_source(user) == source.url_for(f"src/{name}")
        assert replica_source_version(user) == result.source_version
        if result.strategy is not Strategy.SERVER_SIDE:
            assert result.fingerprint == hashing.fingerprint(data)
        if result.ordered_upload:
            # One upload session: an ordinary object with the store's MD5 of the whole (its
            # metadata was fixed when the upload started, so the fingerprint is not in it).
            assert head.checksums[ChecksumKind.MD5] == hashing.checksum_b64(ChecksumKind.MD5, data)
            assert replica_fingerprint(user) is None
        elif result.strategy is Strategy.SINGLE or (
            result.strategy is Strategy.MULTIPART and dest.limits.metadata_at_complete
        ):
            assert replica_fingerprint(user) == result.fingerprint
    strategies = {r.strategy for r in results}
    if source_scheme == dest_scheme:
        assert strategies == {Strategy.SERVER_SIDE}
    else:
        assert strategies == {Strategy.SINGLE, Strategy.MULTIPART}
    again = await asyncio.gather(
        *(engine.copy(source, f"src/{name}", dest, f"dst/{name}") for name in payloads)
    )
    assert {r.status for r in again} == {"skipped"}


async def test_replica_is_never_replicated_back(store_factory: StoreFactory) -> None:
    """Copying a replica (marked in its metadata) is skipped, which breaks loops."""
    a, b = await store_factory("file"), await store_factory("gs")
    await a.put("k", b"data")
    await copier().copy(a, "k", b, "k")
    back = await copier().copy(b, "k", a, "k-back")
    assert back.status == "skipped"
    assert "replica" in (back.reason or "")
    with pytest.raises(NotFound):
        await a.head("k-back")


# Not s3: the engine sends the CRC32C of the bytes it read and the store must refuse bytes that
# do not match it, which moto never does (it stores and echoes whatever checksum it is sent,
# a known gap of the emulator). S3 itself answers BadDigest.
@pytest.mark.parametrize("dest_scheme", [s for s in CLOUDS if s != "s3"])
async def test_byte_flipped_in_flight_is_caught(
    store_factory: StoreFactory, dest_scheme: str
) -> None:
    """A byte damaged between the read and the destination is detected; the damaged part is
    sent again and the replica is exact."""
    # file -> file is a kernel copy: no part passes through the process to be damaged.
    source = await store_factory("mem" if dest_scheme == "file" else "file")
    dest = FaultyStore(await store_factory(dest_scheme))
    data = os.urandom(3 * PART)
    await source.put("k", data)
    dest.flip_next_parts = 1
    result = await copier().copy(source, "k", dest, "k")
    assert result.status == "copied"
    assert dest.flip_next_parts == 0
    assert read_object(dest.url_for("k")) == data


async def test_persistent_damage_fails_and_leaves_nothing(store_factory: StoreFactory) -> None:
    """Damage on every attempt fails the copy: no object, no upload left behind."""
    source = await store_factory("file")
    dest = FaultyStore(await store_factory("az"))
    await source.put("k", os.urandom(2 * PART + 1))
    dest.flip_next_parts = 100
    with pytest.raises(IntegrityError):
        await copier().copy(source, "k", dest, "k")
    with pytest.raises(NotFound):
        await dest.head("k")
    assert [u async for u in dest.list_multipart_uploads()] == []


async def test_damaged_source_read_is_caught(store_factory: StoreFactory) -> None:
    """Bytes read that do not match the source's own CRC32C fail the copy."""
    source = FaultyStore(await store_factory("gs"))
    dest = await store_factory("file")
    await source.put("k", os.urandom(1000))
    source.flip_reads = 100
    with pytest.raises(IntegrityError, match="source reports"):
        await copier().copy(source, "k", dest, "k")
    with pytest.raises(NotFound):
        await dest.head("k")


@pytest.mark.parametrize("source_scheme", ["s3", "gs", "az", "file"])
async def test_source_overwritten_mid_copy(store_factory: StoreFactory, source_scheme: str) -> None:
    """The source changes while parts are in flight: the replica is exactly one version."""
    source = FaultyStore(await store_factory(source_scheme))
    dest = await store_factory("file" if source_scheme != "file" else "gs")
    first, second = os.urandom(4 * PART), os.urandom(4 * PART)
    await source.put("k", first)

    async def overwrite_once(read_number: int) -> None:
        if read_number == 2:
            await source.inner.put("k", second)

    source.before_read = overwrite_once
    result = await copier().copy(source, "k", dest, "k")
    replica = read_object(dest.url_for("k"))
    assert replica in (first, second)
    assert result.fingerprint == hashing.fingerprint(replica)
    assert [u async for u in dest.list_multipart_uploads()] == []


@pytest.mark.parametrize("source_scheme", ["s3", "gs", "az", "file"])
@pytest.mark.parametrize("size", [1000, 3 * PART])
async def test_metadata_observed_before_an_overwrite_is_not_trusted(
    store_factory: StoreFactory, source_scheme: str, size: int
) -> None:
    """A caller's HEAD taken before the source changed saves a request, never a stale copy:
    the reads pinned to it fail and the copy restarts on the current version."""
    source = await store_factory(source_scheme)
    dest = await store_factory("file" if source_scheme != "file" else "gs")
    await source.put("k", os.urandom(size))
    observed = await source.head("k")
    current = os.urandom(size + 1)
    await source.put("k", current)
    result = await copier().copy(source, "k", dest, "k", observed=observed)
    assert read_object(dest.url_for("k")) == current
    assert result.source.etag != observed.etag
    assert result.fingerprint == hashing.fingerprint(current)


async def test_copies_to_several_destinations_share_one_source_read(
    store_factory: StoreFactory,
) -> None:
    source = FaultyStore(await store_factory("s3"))
    dests = [await store_factory(scheme) for scheme in ("gs", "az", "file")]
    data = os.urandom(100_000)
    await source.put("k", data)
    shared = SharedSourceRead()
    engine = copier()
    results = await asyncio.gather(
        *(engine.copy(source, "k", dest, "k", shared=shared) for dest in dests)
    )
    assert [r.status for r in results] == ["copied"] * 3
    assert source.reads == 1
    for dest in dests:
        assert read_object(dest.url_for("k")) == data


async def test_a_failed_shared_read_is_not_reused(store_factory: StoreFactory) -> None:
    """The source overwritten under a shared read: every copy restarts and reads again."""
    source = FaultyStore(await store_factory("s3"))
    dests = [await store_factory(scheme) for scheme in ("gs", "az")]
    await source.put("k", b"first")
    current = b"second version"

    async def overwrite_once(read_number: int) -> None:
        if read_number == 1:
            await source.inner.put("k", current)

    source.before_read = overwrite_once
    shared = SharedSourceRead()
    observed = await source.head("k")
    engine = copier()
    await asyncio.gather(
        *(engine.copy(source, "k", d, "k", observed=observed, shared=shared) for d in dests)
    )
    for dest in dests:
        assert read_object(dest.url_for("k")) == current


class BrokenStreams(FaultyStore):
    """A store whose streamed reads break after their first chunk."""

    async def read_stream(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> AsyncIterator[bytes]:
        yield await self.read(key, start, min(end, start + PART), if_match=if_match)
        raise TransientError("connection reset mid-stream", url=self.url_for(key))


async def test_parts_are_read_in_streamed_stripes(store_factory: StoreFactory) -> None:
    """From a store that streams, each stripe of consecutive parts is one request."""
    source = FaultyStore(await store_factory("s3"))
    # Parallel parts: to GCS, an object this small would go in order as one stream.
    dest = await store_factory("az")
    data = os.urandom(6 * PART + 3)
    await source.put("k", data)
    result = await Copier(part_size=PART, concurrency=3, retry=FAST_RETRY).copy(
        source, "k", dest, "k"
    )
    assert result.parts == 7
    assert source.reads == 3  # stripes of 3, 3 and 1 parts
    assert read_object(dest.url_for("k")) == data


async def test_a_broken_stream_falls_back_to_reading_parts_alone(
    store_factory: StoreFactory,
) -> None:
    source = BrokenStreams(await store_factory("s3"))
    dest = await store_factory("az")
    data = os.urandom(5 * PART + 1)
    await source.put("k", data)
    result = await Copier(part_size=PART, concurrency=2, retry=FAST_RETRY).copy(
        source, "k", dest, "k"
    )
    assert result.fingerprint == hashing.fingerprint(data)
    assert read_object(dest.url_for("k")) == data


@pytest.mark.parametrize("dest_scheme", CLOUDS)
async def test_cancelled_copy_leaves_nothing(store_factory: StoreFactory, dest_scheme: str) -> None:
    """Cancelling a copy mid-way aborts its upload: no object, no upload, no staged parts."""
    source = FaultyStore(await store_factory("mem" if dest_scheme == "file" else "file"))
    dest = await store_factory(dest_scheme)
    await source.put("k", os.urandom(6 * PART))
    started = asyncio.Event()

    async def signal_then_stall(read_number: int) -> None:
        if read_number >= 3:
            started.set()
            await asyncio.sleep(3600)

    source.before_read = signal_then_stall
    task = asyncio.create_task(Copier(part_size=PART, concurrency=2).copy(source, "k", dest, "k"))
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(NotFound):
        await dest.head("k")
    assert [u async for u in dest.list_multipart_uploads()] == []
    assert [m.key async for m in dest.list()] == []


async def test_memory_stays_within_budget(store_factory: StoreFactory) -> None:
    """An object 8x the byte budget never has more than the budget in flight."""
    source = await store_factory("file")
    # Parallel parts: to GCS, an object this small would go in order, one part at a time.
    dest = await store_factory("az")
    budget = ByteBudget(2 * PART)
    await source.put("big", os.urandom(16 * PART))
    engine = Copier(part_size=PART, concurrency=8, budget=budget, retry=FAST_RETRY)
    result = await engine.copy(source, "big", dest, "big")
    assert result.parts == 16
    assert budget.peak <= budget.capacity
    assert budget.peak == 2 * PART, "the budget, not concurrency, limited the parts in flight"
    assert budget.in_use == 0


async def test_throttling_is_retried(store_factory: StoreFactory) -> None:
    """Injected 503 SlowDown responses on both ends are retried and the copy succeeds."""
    source = FaultyStore(await store_factory("s3"))
    dest = FaultyStore(await store_factory("az"))
    data = os.urandom(2 * PART + 5)
    await source.put("k", data)
    source.throttle_next = 3
    dest.throttle_next = 3
    result = await copier().copy(source, "k", dest, "k")
    assert result.status == "copied"
    assert source.throttle_next == dest.throttle_next == 0
    assert read_object(dest.url_for("k")) == data


async def test_resume_uploads_only_missing_parts(store_factory: StoreFactory) -> None:
    """A copy that failed after some parts resumes from its journal, re-sending the rest."""
    source = FaultyStore(await store_factory("file"))
    dest = FaultyStore(await store_factory("az"))
    data = os.urandom(6 * PART)
    await source.put("k", data)
    engine = Copier(part_size=PART, concurrency=1, retry=FAST_RETRY)

    async def crash_after_three(read_number: int) -> None:
        if read_number == 4:
            raise SimulatedCrash

    source.before_read = crash_after_three
    # A killed process neither aborts its upload nor clears its journal record.
    dest.ignore_aborts = True
    record_keeper = engine.journal
    engine.journal = _NoForgetJournal(record_keeper)  # type: ignore[assignment]
    with pytest.raises(SimulatedCrash):
        await engine.copy(source, "k", dest, "k")
    source.before_read = None
    dest.parts_uploaded.clear()
    engine.journal = record_keeper
    assert [u async for u in dest.list_multipart_uploads()] != []
    result = await engine.copy(source, "k", dest, "k")
    assert result.parts_resumed == 3
    assert sorted(dest.parts_uploaded) == [4, 5, 6]
    assert read_object(dest.url_for("k")) == data
    assert result.fingerprint == hashing.fingerprint(data)


class SimulatedCrash(Exception):
    """Stands for the process dying in the middle of a copy."""


class _NoForgetJournal:
    """Forwards everything but 'finished': the record a killed process leaves behind."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def finished(self, record: object) -> None:
        return None
