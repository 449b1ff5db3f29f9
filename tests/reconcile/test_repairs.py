"""Repairs win over event order: a listing's event that the key's high-water finds stale (a
native notification was seen for the key) is still applied when a replica does not hold the
source's current state, and never lets an older version overwrite a newer one. Real stores
(S3 source on moto, GCS replica on fake-gcs-server) and a real catalog."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base import NotFound, ObjectStore
from replicator.catalog import Catalog, open_catalog
from replicator.catalog.sequencer import change_key, repair_key, sequencer_key
from replicator.daemon.applier import Applier, register_datasets
from replicator.devstack import StackState
from replicator.engine.transfer import Copier
from replicator.pipeline.events import ChangeEvent, scan_event
from replicator.pipeline.rules import Router, load_config
from tests.independent import read_object

SECOND = timedelta(seconds=1)


@dataclass
class Bed:
    applier: Applier
    catalog: Catalog
    source: ObjectStore
    replica: ObjectStore
    source_url: str
    dest_url: str
    dataset: str

    def native(self, kind: str, key: str, when: datetime) -> ChangeEvent:
        """A notification with a native sequencer (these always sort above a listing's)."""
        return ChangeEvent(
            kind=kind,  # type: ignore[arg-type]
            source_url=self.source_url + key,
            version=None,
            sequencer=f"{int(when.timestamp() * 1e6):020d}",
            size=None,
            etag=None,
            event_time=when,
            origin="s3",
        )

    async def listed(self, key: str) -> ChangeEvent:
        """The event a listing scan makes of the object at ``key`` now."""
        meta = await self.source.head(key)
        return scan_event(meta.url, meta.size, meta.etag, meta.version, meta.last_modified)

    def listed_gone(self, key: str) -> ChangeEvent:
        """The event a reconciliation makes of a replica whose source is gone."""
        return ChangeEvent(
            kind="delete",
            source_url=self.source_url + key,
            version=None,
            sequencer="",
            size=None,
            etag=None,
            event_time=datetime.now(UTC),
            origin="scan",
        )

    async def state(self, key: str) -> str:
        [entry] = await self.catalog.ls(self.dataset, key, limit=1, include_deleted=True)
        [status] = [loc for loc in entry.locations if loc.location == self.dest_url]
        return status.state


@pytest.fixture
async def bed(devstack: StackState, tmp_path: Path) -> AsyncIterator[Bed]:
    suffix = uuid.uuid4().hex[:10]
    source_url, dest_url = f"s3://src-{suffix}/data/", f"gs://dst-{suffix}/data/"
    route = {"name": f"r{suffix}", "source": source_url, "destinations": [dest_url]}
    config = load_config({"routes": [route]})
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    await register_datasets(catalog, config)
    applier = Applier(Router(config), catalog, Copier())
    source, replica = applier.store(source_url), applier.store(dest_url)
    await source.create_container()
    await replica.create_container()
    try:
        yield Bed(applier, catalog, source, replica, source_url, dest_url, f"r{suffix}")
    finally:
        await applier.close()
        await catalog.close()


async def test_a_listing_repairs_a_replica_whose_event_was_lost(bed: Bed) -> None:
    """The second write's notification is lost: the listing's event, older by sequencer than
    the first write's notification, still brings the second version over."""
    now = datetime.now(UTC)
    await bed.source.put("k.bin", b"first")
    assert await bed.applier(bed.native("put", "k.bin", now)) == ["copied"]
    await bed.source.put("k.bin", b"second")  # its notification is lost

    assert await bed.applier(await bed.listed("k.bin")) == ["copied"]
    assert read_object(bed.replica.url_for("k.bin")) == b"second"
    assert await bed.state("k.bin") == "replicated"


async def test_a_listing_of_a_key_in_sync_changes_nothing(bed: Bed) -> None:
    now = datetime.now(UTC)
    await bed.source.put("k.bin", b"only")
    assert await bed.applier(bed.native("put", "k.bin", now)) == ["copied"]
    before = await bed.replica.head("k.bin")

    assert await bed.applier(await bed.listed("k.bin")) == ["stale"]
    assert (await bed.replica.head("k.bin")).etag == before.etag


async def test_a_listing_repairs_a_lost_deletion(bed: Bed) -> None:
    now = datetime.now(UTC)
    await bed.source.put("k.bin", b"doomed")
    assert await bed.applier(bed.native("put", "k.bin", now)) == ["copied"]
    await bed.source.delete("k.bin")  # its notification is lost

    assert await bed.applier(bed.listed_gone("k.bin")) == ["deleted"]
    with pytest.raises(NotFound):
        await bed.replica.head("k.bin")
    assert await bed.state("k.bin") == "deleted"


async def test_a_repair_never_lets_an_older_version_win(bed: Bed) -> None:
    """After a repair, the notification it overtook is stale (the repair copied a newer
    state), and a newer notification is still applied."""
    now = datetime.now(UTC)
    await bed.source.put("k.bin", b"v1")
    assert await bed.applier(bed.native("put", "k.bin", now)) == ["copied"]
    await bed.source.put("k.bin", b"v2")  # its notification arrives only after the repair
    listed = await bed.listed("k.bin")
    await bed.source.put("k.bin", b"v3")  # written after the listing, before the repair

    assert await bed.applier(listed) == ["copied"]
    assert read_object(bed.replica.url_for("k.bin")) == b"v3"
    assert await bed.applier(bed.native("put", "k.bin", now)) == ["stale"]
    assert read_object(bed.replica.url_for("k.bin")) == b"v3"

    await bed.source.put("k.bin", b"v4")
    assert await bed.applier(bed.native("put", "k.bin", now + SECOND)) == ["copied"]
    assert read_object(bed.replica.url_for("k.bin")) == b"v4"


@given(
    st.text("0123456789ABCDEF", min_size=1, max_size=64),
    st.text("0123456789ABCDEF", min_size=1, max_size=64),
    st.integers(0, 2**52),
)
def test_a_repair_orders_after_its_high_water_and_before_newer_changes(
    seen: str, other: str, micros: int
) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    high = sequencer_key(seen)
    repair = repair_key(high, moment)
    assert repair > high
    later = sequencer_key(other)
    assert (later > repair) == (later > high)
    # Stored again, a repair key keeps its order; repairing it again moves it forward.
    assert change_key("s3://b/k", repair, moment) == repair
    assert repair_key(repair, moment + timedelta(microseconds=1)) > repair
