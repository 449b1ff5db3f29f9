"""A deletion forwarded along a chain of groups is judged at the time its user deleted, not
when the shared member's store reported it: a write made at the far end in between wins.

Three GCS buckets, A <-> B and B <-> C. The applier is handed each store's notification in
the order that makes the race (as a consumer would take them from the topic), so it is
deterministic: C's user deletes a key the chain had copied everywhere, the second group
deletes it at B; a second later A's user writes the key again; then B's notice of the
deletion arrives, before A's write is notified. The rule names A's write (later than the
deletion): it must be kept at A, recorded as the conflict's winner, and reach B and C.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from connectors.base import NotFound
from replicator.catalog import Catalog, open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.devstack import StackState
from replicator.engine.transfer import Copier
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, load_config
from tests.groups.testbed import gcs_current, gcs_delete, gcs_put, next_second, versioned_gcs_bucket

KEY = "k.bin"


class Chain:
    def __init__(self, applier: Applier, catalog: Catalog, buckets: list[str]) -> None:
        self.applier, self.catalog, self.buckets = applier, catalog, buckets
        self.urls = [f"gs://{bucket}/" for bucket in buckets]

    async def notify_write(self, member: int) -> None:
        """The store's notification of the object now at ``member``, applied."""
        store = self.applier.store(self.urls[member])
        meta = await store.head(KEY)
        await self.applier(
            ChangeEvent(
                "put",
                meta.url,
                meta.version,
                "",
                meta.size,
                meta.etag,
                meta.last_modified,
                "gcs",
            )
        )

    async def notify_deletion(self, member: int, version: str | None) -> None:
        """The store's notification that ``member`` lost the key (now), applied."""
        await self.applier(
            ChangeEvent(
                "delete",
                self.urls[member] + KEY,
                version,
                "",
                None,
                None,
                datetime.now(UTC),
                "gcs",
            )
        )

    async def version_at(self, member: int) -> str | None:
        try:
            return (await self.applier.store(self.urls[member]).head(KEY)).version
        except NotFound:
            return None


@pytest.fixture
async def chain(devstack: StackState, tmp_path: Path) -> AsyncIterator[Chain]:
    suffix = uuid.uuid4().hex[:10]
    buckets = [f"cda-{suffix}", f"cdb-{suffix}", f"cdc-{suffix}"]
    a, b, c = (f"gs://{bucket}/" for bucket in buckets)
    config = load_config(
        {
            "groups": [
                {"name": f"ab-{suffix}", "members": [a, b]},
                {"name": f"bc-{suffix}", "members": [b, c]},
            ]
        }
    )
    async with aiohttp.ClientSession() as http:
        for bucket in buckets:
            await versioned_gcs_bucket(http, bucket)
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    await register_datasets(catalog, config)
    applier = Applier(Router(config), catalog, Copier())
    try:
        yield Chain(applier, catalog, buckets)
    finally:
        await applier.close()
        await catalog.close()


async def test_a_write_after_the_users_deletion_beats_its_late_notice(chain: Chain) -> None:
    a, b, c = 0, 1, 2
    async with aiohttp.ClientSession() as http:
        # C's write, copied by the second group to B and forwarded by the first to A.
        await gcs_put(http, chain.buckets[c], KEY, b"first")
        await chain.notify_write(c)
        await chain.notify_write(b)
        assert [await gcs_current(http, bucket, KEY) is not None for bucket in chain.buckets] == [
            True
        ] * 3

        # C's user deletes it; the second group deletes it at B.
        at_c = await chain.version_at(c)
        await gcs_delete(http, chain.buckets[c], KEY)
        at_b = await chain.version_at(b)
        await chain.notify_deletion(c, at_c)
        assert await gcs_current(http, chain.buckets[b], KEY) is None

        # A second later A's user writes the key again; B's notice of the deletion comes
        # first (it is later than A's write by the store's clock).
        await next_second()
        await gcs_put(http, chain.buckets[a], KEY, b"second, at A")
        await next_second()
        await chain.notify_deletion(b, at_b)
        kept = await gcs_current(http, chain.buckets[a], KEY)
        assert kept is not None, "A's write was deleted by the late notice of an earlier deletion"
        assert kept[0] == b"second, at A"

        # A's own notification then spreads it along the chain.
        await chain.notify_write(a)
        await chain.notify_write(b)
        held = [await gcs_current(http, bucket, KEY) for bucket in chain.buckets]
        assert [None if h is None else h[0] for h in held] == [b"second, at A"] * 3

    # Every change is recorded as applied: nothing holds a watermark back.
    lags = await chain.catalog.route_lag(percentiles=False)
    assert lags
    assert [lag.pending_ops for lag in lags] == [0] * len(lags)
    found = await chain.catalog.conflicts()
    # A's write won over C's deletion (no version), once for the chain.
    assert [(f.key, f.winner_member, f.loser_member, f.loser_version) for f in found] == [
        (KEY, chain.urls[a], chain.urls[c], None)
    ]
