"""A group whose deletions are delayed: a member's user deleting a key leaves the other
members' replicas in place for ``delete_delay`` (a safety net against mistaken deletes), then
the sweeper removes them; the members' notice of that removal is the group's own (an echo,
not a new deletion), and a member's own write made during the delay is never removed and
wins over the earlier deletion everywhere.

Two GCS buckets; the applier is handed each store's notification as a consumer would take
it, and the sweeper is run at chosen times, so the test is deterministic.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from connectors.base import NotFound
from replicator.catalog import Catalog, open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.deletes import DeletionSweeper
from replicator.devstack import StackState
from replicator.engine.transfer import Copier
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, load_config
from tests.groups.testbed import gcs_current, gcs_delete, gcs_put, next_second, versioned_gcs_bucket

DELAY = timedelta(hours=1)


class Pair:
    def __init__(self, applier: Applier, catalog: Catalog, buckets: list[str]) -> None:
        self.applier, self.catalog, self.buckets = applier, catalog, buckets
        self.urls = [f"gs://{bucket}/" for bucket in buckets]
        self.sweeper: DeletionSweeper = applier.sweeper(timedelta(seconds=1))

    async def notify_write(self, member: int, key: str) -> None:
        meta = await self.applier.store(self.urls[member]).head(key)
        await self.applier(
            ChangeEvent(
                "put", meta.url, meta.version, "", meta.size, meta.etag, meta.last_modified, "gcs"
            )
        )

    async def notify_deletion(self, member: int, key: str, version: str | None) -> None:
        await self.applier(
            ChangeEvent(
                "delete", self.urls[member] + key, version, "", None, None, datetime.now(UTC), "gcs"
            )
        )

    async def version_at(self, member: int, key: str) -> str | None:
        try:
            return (await self.applier.store(self.urls[member]).head(key)).version
        except NotFound:
            return None

    async def holds(self, http: aiohttp.ClientSession, key: str) -> list[bytes | None]:
        found = [await gcs_current(http, bucket, key) for bucket in self.buckets]
        return [None if f is None else f[0] for f in found]


def config(a: str, b: str, suffix: str, **policy: str) -> dict[str, object]:
    return {"groups": [{"name": f"lake-{suffix}", "members": [a, b], **policy}]}


@pytest.fixture
async def pair(devstack: StackState, tmp_path: Path) -> AsyncIterator[Pair]:
    suffix = uuid.uuid4().hex[:10]
    buckets = [f"dla-{suffix}", f"dlb-{suffix}"]
    a, b = (f"gs://{bucket}/" for bucket in buckets)
    routing = load_config(config(a, b, suffix, delete_policy="delayed", delete_delay="1h"))
    async with aiohttp.ClientSession() as http:
        for bucket in buckets:
            await versioned_gcs_bucket(http, bucket)
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    await register_datasets(catalog, routing)
    applier = Applier(Router(routing), catalog, Copier())
    try:
        yield Pair(applier, catalog, buckets)
    finally:
        await applier.close()
        await catalog.close()


async def test_replicas_outlive_the_deletion_then_go_and_their_notice_is_an_echo(
    pair: Pair,
) -> None:
    a, b = 0, 1
    async with aiohttp.ClientSession() as http:
        await gcs_put(http, pair.buckets[a], "k.bin", b"at A")
        await pair.notify_write(a, "k.bin")
        assert await pair.holds(http, "k.bin") == [b"at A"] * 2

        version = await pair.version_at(a, "k.bin")
        await gcs_delete(http, pair.buckets[a], "k.bin")
        deleted_at = datetime.now(UTC)
        await pair.notify_deletion(a, "k.bin", version)
        # Still at B for the delay.
        assert await pair.holds(http, "k.bin") == [None, b"at A"]
        early = await pair.sweeper.sweep(deleted_at + DELAY / 2)
        assert early.deleted == 0
        assert await pair.holds(http, "k.bin") == [None, b"at A"]

        due = await pair.sweeper.sweep(deleted_at + DELAY + timedelta(minutes=1))
        assert due.deleted == 1
        at_b = await pair.version_at(b, "k.bin")
        assert await pair.holds(http, "k.bin") == [None, None]
        # B's store reports the removal: the group's own deletion, nothing more to do.
        outcomes = await pair.applier(
            ChangeEvent(
                "delete", pair.urls[b] + "k.bin", at_b, "", None, None, datetime.now(UTC), "gcs"
            )
        )
        assert outcomes == ["echo"]
    lags = await pair.catalog.route_lag(percentiles=False)
    assert [lag.pending_ops for lag in lags] == [0] * len(lags)


async def test_a_write_at_the_other_member_during_the_delay_is_kept_and_wins(
    pair: Pair,
) -> None:
    a, b = 0, 1
    async with aiohttp.ClientSession() as http:
        await gcs_put(http, pair.buckets[a], "k.bin", b"at A")
        await pair.notify_write(a, "k.bin")
        version = await pair.version_at(a, "k.bin")
        await gcs_delete(http, pair.buckets[a], "k.bin")
        deleted_at = datetime.now(UTC)
        await pair.notify_deletion(a, "k.bin", version)

        # B's user writes the key while A's deletion waits: it is B's own write.
        await next_second()
        await gcs_put(http, pair.buckets[b], "k.bin", b"at B, later")
        report = await pair.sweeper.sweep(deleted_at + DELAY + timedelta(minutes=1))
        assert report.deleted == 0
        assert await pair.holds(http, "k.bin") == [None, b"at B, later"]

        # Its notification copies it to A: later than A's deletion, it wins there too.
        await pair.notify_write(b, "k.bin")
        assert await pair.holds(http, "k.bin") == [b"at B, later"] * 2
