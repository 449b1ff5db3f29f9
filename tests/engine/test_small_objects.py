"""Small objects cost as few requests as the stores allow: what a listing or the catalog
already says is not asked again."""

from __future__ import annotations

import os

from connectors.base import MiB, ObjectAttributes
from replicator.engine.metadata import replica_source
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import ABSENT, Copier
from tests.conftest import StoreFactory
from tests.engine.faults import FaultyStore
from tests.independent import read_object

FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
ATTRIBUTES = ObjectAttributes(content_type="text/csv", user_metadata={"owner": "lake"})


def copier() -> Copier:
    return Copier(part_size=8 * MiB, concurrency=4, retry=FAST_RETRY)


async def test_a_listed_object_costs_one_read_and_one_write(store_factory: StoreFactory) -> None:
    """An S3 listing omits attributes: one GET brings the bytes and what a HEAD would say,
    and a destination known to be empty is not asked."""
    source = FaultyStore(await store_factory("s3"))
    dest = FaultyStore(await store_factory("gs"))
    data = os.urandom(4096)
    await source.put("k", data, attributes=ATTRIBUTES)
    [listed] = [meta async for meta in source.list()]
    assert not listed.attributes_known
    source.calls.clear()
    result = await copier().copy(source, "k", dest, "k", observed=listed, dest_observed=ABSENT)
    assert result.status == "copied"
    assert source.calls == {"get": 1}
    assert dest.calls == {"put": 1}
    assert read_object(dest.url_for("k")) == data
    head = await dest.head("k")
    assert head.attributes.content_type == "text/csv"
    assert head.attributes.user_metadata["owner"] == "lake"
    assert replica_source(head.attributes.user_metadata) == source.url_for("k")


async def test_a_listed_replica_is_not_copied_back(store_factory: StoreFactory) -> None:
    """The replica mark comes with the one GET, before anything is written."""
    origin, middle = await store_factory("gs"), FaultyStore(await store_factory("s3"))
    back = FaultyStore(await store_factory("az"))
    await origin.put("k", b"data")
    await copier().copy(origin, "k", middle, "k")
    [listed] = [meta async for meta in middle.list()]
    result = await copier().copy(middle, "k", back, "k", observed=listed, dest_observed=ABSENT)
    assert result.status == "skipped"
    assert "replica" in (result.reason or "")
    assert back.calls == {}


async def test_an_object_changed_since_it_was_listed_is_copied_as_it_is_now(
    store_factory: StoreFactory,
) -> None:
    source = FaultyStore(await store_factory("s3"))
    dest = await store_factory("file")
    await source.put("k", b"listed version")
    [listed] = [meta async for meta in source.list()]
    current = os.urandom(20 * MiB)  # no longer small either
    await source.inner.put("k", current)
    result = await copier().copy(source, "k", dest, "k", observed=listed, dest_observed=ABSENT)
    assert result.status == "copied"
    assert read_object(dest.url_for("k")) == current


async def test_a_known_replica_is_skipped_without_a_request(store_factory: StoreFactory) -> None:
    """Destination metadata the caller holds (a listing with attributes, the catalog)
    decides the skip: no HEAD of either end beyond what the caller passed."""
    source = FaultyStore(await store_factory("gs"))
    dest = FaultyStore(await store_factory("az"))
    await source.put("k", os.urandom(1000), attributes=ATTRIBUTES)
    await copier().copy(source, "k", dest, "k")
    [listed_source] = [meta async for meta in source.list()]
    [listed_dest] = [meta async for meta in dest.list()]
    source.calls.clear()
    dest.calls.clear()
    result = await copier().copy(
        source, "k", dest, "k", observed=listed_source, dest_observed=listed_dest
    )
    assert result.status == "skipped"
    assert source.calls == {}
    assert dest.calls == {}
