"""Source deletions applied under each route delete policy, on real stores (S3 source on moto,
GCS replica on fake-gcs-server) with a real catalog; the sweeper is driven with explicit times
so that a day's delay is tested without waiting for it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.base import NotFound, ObjectStore
from replicator.catalog import Catalog, PauseScope, open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.deletes import DeletionSweeper
from replicator.devstack import StackState
from replicator.engine.transfer import Copier
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, load_config
from tests.independent import read_object

HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


@dataclass
class Bed:
    applier: Applier
    sweeper: DeletionSweeper
    catalog: Catalog
    source: ObjectStore
    replica: ObjectStore
    source_url: str
    dest_url: str
    dataset: str

    def event(self, kind: str, key: str, when: datetime) -> ChangeEvent:
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

    async def state(self, key: str) -> tuple[str, str | None]:
        [entry] = await self.catalog.ls(self.dataset, key, limit=1, include_deleted=True)
        [status] = [loc for loc in entry.locations if loc.location == self.dest_url]
        return status.state, status.last_error


async def make_bed(tmp_path: Path, **route: Any) -> AsyncIterator[Bed]:
    suffix = uuid.uuid4().hex[:10]
    source_url, dest_url = f"s3://src-{suffix}/data/", f"gs://dst-{suffix}/data/"
    config = load_config(
        {
            "routes": [
                {"name": f"r{suffix}", "source": source_url, "destinations": [dest_url], **route}
            ]
        }
    )
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    await register_datasets(catalog, config)
    applier = Applier(Router(config), catalog, Copier())
    source, replica = applier.store(source_url), applier.store(dest_url)
    await source.create_container()
    await replica.create_container()
    try:
        yield Bed(
            applier,
            applier.sweeper(timedelta(seconds=1)),
            catalog,
            source,
            replica,
            source_url,
            dest_url,
            f"r{suffix}",
        )
    finally:
        await applier.close()
        await catalog.close()


@pytest.fixture
async def delayed(devstack: StackState, tmp_path: Path) -> AsyncIterator[Bed]:
    async for bed in make_bed(tmp_path, delete_policy="delayed", delete_delay="1h"):
        yield bed


async def replicate(bed: Bed, key: str, data: bytes, when: datetime) -> None:
    await bed.source.put(key, data)
    assert await bed.applier(bed.event("put", key, when)) == ["copied"]


async def test_delayed_deletion_waits_for_its_due_time(delayed: Bed) -> None:
    now = datetime.now(UTC)
    await replicate(delayed, "a.bin", b"payload", now)
    await delayed.source.delete("a.bin")
    gone = delayed.event("delete", "a.bin", now + SECOND)
    assert await delayed.applier(gone) == ["delete_scheduled"]
    assert read_object(delayed.replica.url_for("a.bin")) == b"payload"
    assert await delayed.state("a.bin") == ("delete_scheduled", None)

    early = await delayed.sweeper.sweep(now + HOUR)
    assert early.deleted == 0
    assert read_object(delayed.replica.url_for("a.bin")) == b"payload"

    report = await delayed.sweeper.sweep(now + HOUR + SECOND)
    assert (report.deleted, report.errors) == (1, [])
    with pytest.raises(NotFound):
        await delayed.replica.head("a.bin")
    assert await delayed.state("a.bin") == ("deleted", None)
    assert (await delayed.sweeper.sweep(now + 2 * HOUR)).deleted == 0


async def test_a_source_written_again_cancels_the_deletion(delayed: Bed) -> None:
    now = datetime.now(UTC)
    await replicate(delayed, "b.bin", b"first", now)
    await delayed.source.delete("b.bin")
    await delayed.applier(delayed.event("delete", "b.bin", now + SECOND))
    await delayed.source.put("b.bin", b"second")  # its event is still on its way

    report = await delayed.sweeper.sweep(now + 2 * HOUR)
    assert (report.deleted, report.cancelled) == (0, 1)
    assert read_object(delayed.replica.url_for("b.bin")) == b"first"
    state, error = await delayed.state("b.bin")
    assert state == "stale"
    assert error is not None
    assert "exists again" in error

    later = now + 2 * SECOND
    assert await delayed.applier(delayed.event("put", "b.bin", later)) == ["copied"]
    assert read_object(delayed.replica.url_for("b.bin")) == b"second"


async def test_an_object_that_is_not_our_replica_is_never_deleted(delayed: Bed) -> None:
    now = datetime.now(UTC)
    await replicate(delayed, "c.bin", b"ours", now)
    await delayed.source.delete("c.bin")
    await delayed.applier(delayed.event("delete", "c.bin", now + SECOND))
    await delayed.replica.put("c.bin", b"written by someone else")

    report = await delayed.sweeper.sweep(now + 2 * HOUR)
    assert (report.deleted, report.cancelled) == (0, 1)
    assert read_object(delayed.replica.url_for("c.bin")) == b"written by someone else"
    state, error = await delayed.state("c.bin")
    assert state == "stale"
    assert error is not None
    assert "not a replica" in error


async def test_a_paused_route_defers_due_deletions(devstack: StackState, tmp_path: Path) -> None:
    async for bed in make_bed(
        tmp_path, delete_policy="delayed", delete_delay="1h", max_deletes_per_minute=0
    ):
        now = datetime.now(UTC)
        await replicate(bed, "d.bin", b"kept", now)
        await bed.source.delete("d.bin")
        await bed.applier(bed.event("delete", "d.bin", now + SECOND))
        report = await bed.sweeper.sweep(now + 2 * HOUR)
        assert (report.deleted, report.deferred, report.errors) == (0, 1, [])
        assert read_object(bed.replica.url_for("d.bin")) == b"kept"
        assert (await bed.state("d.bin"))[0] == "delete_scheduled"
        # The limit paused the route's deletions: later sweeps leave them alone unclaimed.
        assert bed.dataset in await bed.applier.guard.refresh(force=True)
        assert (await bed.sweeper.sweep(now + 3 * HOUR)).deferred == 1
        assert read_object(bed.replica.url_for("d.bin")) == b"kept"


async def test_deletions_past_the_limit_wait_in_the_catalog_until_resumed(
    devstack: StackState, tmp_path: Path
) -> None:
    """A propagating route past its delete limit: the deletions held back are recorded as
    still to do (they hold the watermark), nothing is dead-lettered, and once an operator
    resumes the route's deletions the sweeper carries them out."""
    async for bed in make_bed(tmp_path, max_deletes_per_minute=1):
        now = datetime.now(UTC)
        for key in ("h1", "h2"):
            await replicate(bed, key, key.encode(), now)
            await bed.source.delete(key)
        assert await bed.applier(bed.event("delete", "h1", now + SECOND)) == ["deleted"]
        assert await bed.applier(bed.event("delete", "h2", now + 2 * SECOND)) == ["delete_paused"]
        assert read_object(bed.replica.url_for("h2")) == b"h2"
        assert (await bed.state("h2"))[0] == "delete_paused"
        [lag] = await bed.catalog.route_lag(destination=bed.dest_url)
        assert lag.pending_ops == 1
        assert lag.watermark is not None
        assert lag.watermark <= now + 2 * SECOND
        # Paused: the sweeper leaves it; resumed (by any process): it is carried out.
        assert (await bed.sweeper.sweep(now + 2 * HOUR)).deleted == 0
        assert await bed.catalog.resume(bed.dataset, scope=PauseScope.DELETES)
        await bed.applier.guard.refresh(force=True)
        report = await bed.sweeper.sweep(now + 2 * HOUR)
        assert (report.deleted, report.errors) == (1, [])
        with pytest.raises(NotFound):
            await bed.replica.head("h2")
        assert (await bed.state("h2"))[0] == "deleted"
        [lag] = await bed.catalog.route_lag(destination=bed.dest_url)
        assert lag.pending_ops == 0


async def test_the_sweeper_never_deletes_a_newer_version_of_the_replica(delayed: Bed) -> None:
    """The source is deleted (deletion scheduled), written again and copied, then deleted
    again before either event is applied: the sweeper deletes only the replica whose deletion
    was scheduled, not the newer one (its own deletion gets its own delay)."""
    now = datetime.now(UTC)
    await replicate(delayed, "v.bin", b"version 1", now)
    await delayed.source.delete("v.bin")
    await delayed.applier(delayed.event("delete", "v.bin", now + SECOND))
    await delayed.source.put("v.bin", b"version 2")
    await delayed.applier.copier.copy(delayed.source, "v.bin", delayed.replica, "v.bin")
    await delayed.source.delete("v.bin")

    report = await delayed.sweeper.sweep(now + 2 * HOUR)
    assert (report.deleted, report.cancelled) == (0, 1)
    assert read_object(delayed.replica.url_for("v.bin")) == b"version 2"
    state, error = await delayed.state("v.bin")
    assert state == "stale"
    assert error is not None
    assert "written again" in error


async def test_never_policy_retains_replicas(devstack: StackState, tmp_path: Path) -> None:
    async for bed in make_bed(tmp_path, delete_policy="never"):
        now = datetime.now(UTC)
        await replicate(bed, "e.bin", b"forever", now)
        await bed.source.delete("e.bin")
        assert await bed.applier(bed.event("delete", "e.bin", now + SECOND)) == ["retained"]
        assert read_object(bed.replica.url_for("e.bin")) == b"forever"
        assert await bed.state("e.bin") == ("retained", None)
        [lag] = await bed.catalog.route_lag(destination=bed.dest_url)
        assert lag.pending_ops == 0


async def test_propagate_policy_deletes_at_once(devstack: StackState, tmp_path: Path) -> None:
    async for bed in make_bed(tmp_path):
        now = datetime.now(UTC)
        await replicate(bed, "f.bin", b"short-lived", now)
        await bed.source.delete("f.bin")
        assert await bed.applier(bed.event("delete", "f.bin", now + SECOND)) == ["deleted"]
        with pytest.raises(NotFound):
            await bed.replica.head("f.bin")


async def test_a_route_changed_to_never_keeps_scheduled_replicas(
    devstack: StackState, tmp_path: Path
) -> None:
    """Deletions scheduled under a delayed policy are not carried out once the configuration
    says the route never deletes."""
    async for bed in make_bed(tmp_path, delete_policy="delayed", delete_delay="1h"):
        now = datetime.now(UTC)
        await replicate(bed, "g.bin", b"precious", now)
        await bed.source.delete("g.bin")
        await bed.applier(bed.event("delete", "g.bin", now + SECOND))
        route = bed.applier.router.config.routes[0]
        changed = load_config(
            {
                "routes": [
                    {
                        "name": route.name,
                        "source": route.source,
                        "destinations": [bed.dest_url],
                        "delete_policy": "never",
                    }
                ]
            }
        )
        bed.sweeper.router = Router(changed)
        report = await bed.sweeper.sweep(now + 2 * HOUR)
        assert (report.deleted, report.retained) == (0, 1)
        assert read_object(bed.replica.url_for("g.bin")) == b"precious"
        assert (await bed.state("g.bin"))[0] == "retained"
