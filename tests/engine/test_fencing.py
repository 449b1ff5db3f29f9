"""One key, one writer, even when a writer does not know it lost its claim: a copy held back
just before its final write (a worker paused past its partition's revocation) while another
copies a newer version must not land over it, on every destination store and for single
puts, multipart completions and server-side copies."""

from __future__ import annotations

import asyncio
import os

import pytest

from connectors import open_store
from connectors.base import MiB
from replicator.engine.metadata import replica_source_version
from replicator.engine.planner import Strategy
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import Copier, version_id
from tests.conftest import StoreFactory
from tests.engine.faults import FaultyStore
from tests.independent import read_object

PART = 5 * MiB
SIZES = {"single": 1000, "multipart": 2 * PART + 7}
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


def copier() -> Copier:
    return Copier(part_size=PART, concurrency=2, retry=FAST_RETRY)


@pytest.mark.parametrize("dest_scheme", ["s3", "gs", "az", "file"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("replica_there", [False, True], ids=["absent", "old-replica"])
async def test_a_stale_writer_cannot_land_over_a_newer_copy(
    store_factory: StoreFactory, dest_scheme: str, size: str, replica_there: bool
) -> None:
    source = await store_factory("s3")
    dest = await store_factory(dest_scheme)
    old, new = os.urandom(SIZES[size]), os.urandom(SIZES[size])
    if replica_there:
        # The destination already holds an older replica: the fence is its etag.
        await source.put("k", os.urandom(100))
        assert (await copier().copy(source, "k", dest, "k")).status == "copied"
    await source.put("k", old)

    held = FaultyStore(dest)
    reached, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        held.before_final_write = None
        reached.set()
        await release.wait()

    held.before_final_write = hold
    stale = asyncio.create_task(copier().copy(source, "k", held, "k"))
    await asyncio.wait_for(reached.wait(), 60)

    # Meanwhile the key's new owner copies the source's next version.
    current = await source.put("k", new)
    assert (await copier().copy(source, "k", dest, "k")).status == "copied"

    release.set()
    result = await asyncio.wait_for(stale, 120)

    assert read_object(dest.url_for("k")) == new
    landed = await dest.head("k")
    assert replica_source_version(landed.attributes.user_metadata) == version_id(current)
    # The held writer looked again and found the new version already there.
    assert result.status == "skipped"
    assert [u async for u in dest.list_multipart_uploads()] == []


@pytest.mark.parametrize("scheme", ["s3", "gs", "az", "file"])
@pytest.mark.parametrize("replica_there", [False, True], ids=["absent", "old-replica"])
async def test_a_stale_server_side_copy_does_not_land_over_the_new_owners(
    store_factory: StoreFactory, scheme: str, replica_there: bool
) -> None:
    """Within one store the destination copies by itself. A copy held just before it asks
    for the copy, while the key's new owner copies the same version, does not write again
    over the new owner's replica: it looks again and finds it (without the fence it would
    copy over it, and a copy slower than the new owner's could land an older version)."""
    source = await store_factory(scheme)
    dest = open_store(source.url_for("replicas/"))
    try:
        await dest.create_container()
        if replica_there:
            await source.put("k", os.urandom(100))
            assert (await copier().copy(source, "k", dest, "k")).status == "copied"
        await source.put("k", os.urandom(1000))

        held = FaultyStore(dest)
        reached, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            held.before_final_write = None
            reached.set()
            await release.wait()

        held.before_final_write = hold
        stale = asyncio.create_task(copier().copy(source, "k", held, "k"))
        await asyncio.wait_for(reached.wait(), 60)

        owner = await copier().copy(source, "k", dest, "k")
        assert owner.status == "copied"
        assert owner.strategy is Strategy.SERVER_SIDE
        landed = await dest.head("k")

        release.set()
        result = await asyncio.wait_for(stale, 120)

        assert result.status == "skipped", "the stale copy wrote over the new owner's replica"
        again = await dest.head("k")
        assert (again.etag, again.version, again.last_modified) == (
            landed.etag,
            landed.version,
            landed.last_modified,
        )
        assert read_object(dest.url_for("k")) == await source.read("k")
    finally:
        await dest.close()
