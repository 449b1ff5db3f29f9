"""A reconciliation hands the applier what its listings showed of each key, so a small object
costs one read of the source and one write of the destination: no HEAD of either end. The
listing is only a hint where it could be out of date: the read is pinned to the listed
version, a source that is itself a replica is still settled as one, and a stale event is
decided on the stores as they are. Real stores (S3 source on moto, GCS replica on
fake-gcs-server) behind a counting wrapper, and a real catalog."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors import open_store
from connectors.base import ObjectAttributes
from replicator.catalog import Catalog, open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.listed import Listed
from replicator.daemon.reconcile import ApplierActions, Options, Reconciler
from replicator.devstack import StackState
from replicator.engine.metadata import SOURCE_KEY
from replicator.engine.transfer import Copier
from replicator.pipeline.events import ChangeEvent, scan_event
from replicator.pipeline.rules import Router, load_config
from tests.engine.faults import FaultyStore
from tests.independent import read_object


@dataclass
class Bed:
    applier: Applier
    catalog: Catalog
    source: FaultyStore
    replica: FaultyStore
    source_url: str
    dest_url: str
    dataset: str

    def reconciler(self) -> Reconciler:
        actions = ApplierActions(self.applier, self.source, [self.dest_url])
        return Reconciler(self.source, [self.replica], actions, Options(transfers=4))

    async def listed(self, key: str) -> tuple[ChangeEvent, Listed]:
        """A listing's event for ``key`` and what the listings showed (nothing at the
        replica)."""
        [meta] = [m async for m in self.source.inner.list(key)]
        event = scan_event(meta.url, meta.size, meta.etag, meta.version, meta.last_modified)
        return event, Listed(meta, {self.dest_url: None})

    async def states(self) -> dict[str, str]:
        found = {}
        for entry in await self.catalog.ls(self.dataset, "", limit=1000):
            [status] = [loc for loc in entry.locations if loc.location == self.dest_url]
            found[entry.key] = status.state
        return found


@pytest.fixture
async def bed(devstack: StackState, tmp_path: Path) -> AsyncIterator[Bed]:
    suffix = uuid.uuid4().hex[:10]
    source_url, dest_url = f"s3://src-{suffix}/data/", f"gs://dst-{suffix}/data/"
    route = {"name": f"r{suffix}", "source": source_url, "destinations": [dest_url]}
    config = load_config({"routes": [route]})
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    await register_datasets(catalog, config)
    applier = Applier(
        Router(config), catalog, Copier(), store_factory=lambda url: FaultyStore(open_store(url))
    )
    source, replica = applier.store(source_url), applier.store(dest_url)
    assert isinstance(source, FaultyStore)
    assert isinstance(replica, FaultyStore)
    await source.create_container()
    await replica.create_container()
    try:
        yield Bed(applier, catalog, source, replica, source_url, dest_url, f"r{suffix}")
    finally:
        await applier.close()
        await catalog.close()


async def test_a_backfilled_small_object_costs_one_read_and_one_write(bed: Bed) -> None:
    """Neither end is HEADed: the listing described both; every replica is verified and in
    the catalog."""
    keys = [f"obj-{i:02d}" for i in range(12)]
    for key in keys:
        await bed.source.inner.put(key, key.encode() * 100)

    tally = await bed.reconciler().run()

    assert (tally.copied, tally.failed) == (12, 0)
    assert bed.source.calls == {"get": 12}
    assert bed.replica.calls == {"put": 12}
    assert await bed.states() == dict.fromkeys(keys, "replicated")
    for key in keys:
        assert read_object(bed.replica.url_for(key)) == key.encode() * 100


async def test_a_source_changed_since_its_listing_is_copied_as_it_is_now(bed: Bed) -> None:
    """The read is pinned to the listed version: the newer one is found and copied whole."""
    await bed.source.inner.put("k.bin", b"listed")
    event, listed = await bed.listed("k.bin")
    await bed.source.inner.put("k.bin", b"written after the listing")

    assert await bed.applier(event, listed) == ["copied"]
    assert read_object(bed.replica.url_for("k.bin")) == b"written after the listing"
    assert await bed.states() == {"k.bin": "replicated"}


async def test_a_listed_source_that_is_a_replica_is_settled_not_copied(bed: Bed) -> None:
    """S3's listing shows no metadata: the read that does show it finds the replica mark, and
    the key is settled (nothing stays pending), as when the source was HEADed first."""
    marks = ObjectAttributes(user_metadata={SOURCE_KEY: "gs://elsewhere/k.bin"})
    await bed.source.inner.put("k.bin", b"a replica", attributes=marks)
    event, listed = await bed.listed("k.bin")

    assert await bed.applier(event, listed) == ["replica"]
    assert bed.replica.calls["put"] == 0
    assert await bed.states() == {"k.bin": "retained"}


async def test_a_stale_listing_event_is_decided_on_the_stores_as_they_are(bed: Bed) -> None:
    """The key's high-water came from a notification: whether the listing's event repairs
    anything is found by reading both ends, not from the listing (here: in sync)."""
    await bed.source.inner.put("k.bin", b"only")
    native = ChangeEvent(
        kind="put",
        source_url=bed.source_url + "k.bin",
        version=None,
        sequencer=f"{int(datetime.now(UTC).timestamp() * 1e6):020d}",
        size=None,
        etag=None,
        event_time=datetime.now(UTC),
        origin="s3",
    )
    assert await bed.applier(native) == ["copied"]
    event, _ = await bed.listed("k.bin")
    # What a listing taken before the copy would have shown: no replica.
    listed = Listed((await bed.listed("k.bin"))[1].source, {bed.dest_url: None})
    bed.replica.calls.clear()

    assert await bed.applier(event, listed) == ["stale"]
    assert bed.replica.calls["put"] == 0
