"""Deletions under a route's delete policy, on both backends: retained replicas, delayed
deletions scheduled, claimed once, settled, and replaced by a newer change."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from replicator.catalog import Catalog, ReplicaState, open_catalog
from replicator.catalog.database import _upgrade
from tests.catalog.conftest import DatasetFactory, store_url
from tests.catalog.test_replicas import T0, change, replica_of, verified

DAY = timedelta(days=1)


async def test_a_retained_replica_counts_as_applied(
    catalog: Catalog, make_dataset: DatasetFactory
) -> None:
    ds = await make_dataset(replicas=1)
    gs = store_url(ds, "gs")
    put = change(ds, "k", 1)
    await catalog.mark_pending(put)
    await catalog.record_replica(put, gs, verified(put))
    gone = change(ds, "k", 2, at=10, deleted=True)
    await catalog.mark_pending(gone)
    assert await catalog.mark_retained(gone, gs, T0 + timedelta(seconds=11))
    assert (await replica_of(catalog, ds, "k", gs))["state"] == "retained"
    [lag] = await catalog.route_lag(destination=gs)
    assert lag.pending_ops == 0
    assert await catalog.stale(destination=gs) == []


async def test_a_delayed_deletion_is_due_at_its_time_and_settles_once(
    catalog: Catalog, make_dataset: DatasetFactory
) -> None:
    ds = await make_dataset()
    gs, az = store_url(ds, "gs"), store_url(ds, "az")
    gone = change(ds, "k", 2, at=10, deleted=True)
    await catalog.mark_pending(gone)
    due = gone.event_time + DAY
    for location in (gs, az):
        assert await catalog.schedule_delete(gone, location, due=due, decided_time=T0)
    # A duplicate of the deletion keeps the first due time.
    assert not await catalog.schedule_delete(gone, gs, due=due + DAY, decided_time=T0)
    assert (await replica_of(catalog, ds, "k", gs))["state"] == "delete_scheduled"

    mine = [item for item in await catalog.due_deletes(due) if item.dataset == ds.name]
    assert sorted(item.location for item in mine) == sorted([gs, az])
    assert not [i for i in await catalog.due_deletes(due - timedelta(seconds=1)) if i in mine]
    [first, second] = mine
    assert first.source_url == ds.sources[0].url + "k"
    assert first.url == first.location + "k"

    # Two sweepers: each deletion is claimed by one of them.
    lease = due + timedelta(minutes=5)
    claims = await asyncio.gather(*(catalog.claim_delete(first, lease) for _ in range(2)))
    assert sorted(claims) == [False, True]
    assert first.location not in {
        i.location for i in await catalog.due_deletes(due) if i.dataset == ds.name
    }
    assert await catalog.settle_delete(first, ReplicaState.DELETED, when=due)
    assert not await catalog.settle_delete(first, ReplicaState.DELETED, when=due)
    assert (await replica_of(catalog, ds, "k", first.location))["state"] == "deleted"

    assert await catalog.settle_delete(
        second, ReplicaState.STALE, when=due, error="the source exists again"
    )
    stale = await catalog.stale(destination=second.location)
    assert [(s.key, s.state, s.last_error) for s in stale] == [
        ("k", ReplicaState.STALE, "the source exists again")
    ]


async def test_a_newer_write_replaces_a_scheduled_deletion(
    catalog: Catalog, make_dataset: DatasetFactory
) -> None:
    ds = await make_dataset(replicas=1)
    gs = store_url(ds, "gs")
    gone = change(ds, "k", 2, at=10, deleted=True)
    await catalog.mark_pending(gone)
    await catalog.schedule_delete(gone, gs, due=gone.event_time + DAY, decided_time=T0)
    [item] = [i for i in await catalog.due_deletes(T0 + 2 * DAY) if i.dataset == ds.name]

    back = change(ds, "k", 3, at=20)
    await catalog.mark_pending(back)
    assert [i for i in await catalog.due_deletes(T0 + 2 * DAY) if i.dataset == ds.name] == []
    await catalog.record_replica(back, gs, verified(back))
    # The sweeper's view of the old deletion is out of date: settling it changes nothing.
    assert not await catalog.claim_delete(item, T0 + 3 * DAY)
    assert not await catalog.settle_delete(item, ReplicaState.DELETED, when=T0 + 2 * DAY)
    status = await replica_of(catalog, ds, "k", gs)
    assert (status["state"], status["fresh"]) == ("replicated", True)


async def test_a_catalog_of_the_first_schema_upgrades_with_its_rows(tmp_path: Path) -> None:
    """Opening a catalog created before delete policies existed migrates it in place."""
    url = f"sqlite:///{tmp_path}/old.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/old.db")
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, "0001")
        await conn.execute(
            text("INSERT INTO datasets (id, name, created_at) VALUES (1, 'd', '2024-01-01');")
        )
        for location_id, where, role in ((1, "s3://b/p/", "source"), (2, "gs://c/p/", "replica")):
            await conn.execute(
                text(
                    "INSERT INTO locations (id, dataset_id, url, role, created_at) "
                    f"VALUES ({location_id}, 1, '{where}', '{role}', '2024-01-01')"
                )
            )
        await conn.execute(
            text(
                "INSERT INTO replicas (dataset_id, key, location_id, source_location_id, state, "
                "source_sequencer, source_event_time, attempts, updated_at) VALUES "
                "(1, 'k', 2, 1, 'replicated', '0', '2024-01-01', 1, '2024-01-01')"
            )
        )
    await engine.dispose()
    catalog = await open_catalog(url)
    try:
        [dataset] = await catalog.datasets()
        assert dataset.name == "d"
        [lag] = await catalog.route_lag()
        assert lag.pending_ops == 0
        gone = change(dataset, "k", 2, deleted=True)
        await catalog.mark_pending(gone)
        assert await catalog.schedule_delete(gone, "gs://c/p/", due=T0 + DAY, decided_time=T0)
    finally:
        await catalog.close()


async def test_scheduled_deletions_show_in_the_route_figures(
    catalog: Catalog, make_dataset: DatasetFactory
) -> None:
    ds = await make_dataset(replicas=1)
    gs = store_url(ds, "gs")
    for n, key in enumerate(("a", "b")):
        gone = change(ds, key, 2, at=10 + n, deleted=True)
        await catalog.mark_pending(gone)
        await catalog.schedule_delete(gone, gs, due=gone.event_time + DAY, decided_time=T0)
    [lag] = await catalog.route_lag(destination=gs)
    assert lag.deletes_scheduled == 2
    assert lag.next_delete_due == T0 + timedelta(seconds=10) + DAY
    assert lag.delete_overdue_seconds(T0) == 0.0
    assert lag.delete_overdue_seconds(T0 + 2 * DAY) > 0
    assert lag.pending_ops == 0
