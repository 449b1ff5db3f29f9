"""GCS members of replication groups applied in process, each store's notification handed to
the applier as a consumer would take it from the topic, in the order a test chooses (races
made deterministic), with the catalog to check afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from connectors.base import NotFound
from replicator.catalog import Catalog, open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.engine.transfer import Copier
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, load_config
from tests.groups.testbed import gcs_current, versioned_gcs_bucket


class NotifiedMembers:
    """Members ``gs://BUCKET/`` in the order of ``buckets``, addressed by index."""

    def __init__(self, applier: Applier, catalog: Catalog, buckets: list[str]) -> None:
        self.applier, self.catalog, self.buckets = applier, catalog, buckets
        self.urls = [f"gs://{bucket}/" for bucket in buckets]

    async def notify_write(self, member: int, key: str) -> list[str]:
        """The store's notification of the object now at ``member``, applied."""
        meta = await self.applier.store(self.urls[member]).head(key)
        assert meta.last_modified is not None, "GCS reports every object's time"
        return await self.applier(
            ChangeEvent(
                "put", meta.url, meta.version, "", meta.size, meta.etag, meta.last_modified, "gcs"
            )
        )

    async def notify_deletion(self, member: int, key: str, version: str | None) -> list[str]:
        """The store's notification that ``member`` lost ``key`` (now), applied."""
        return await self.applier(
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
        """What each member holds for ``key``, read with GCS's own JSON API."""
        found = [await gcs_current(http, bucket, key) for bucket in self.buckets]
        return [None if f is None else f[0] for f in found]

    async def pending(self) -> list[int]:
        """Each route's changes not yet applied."""
        return [lag.pending_ops for lag in await self.catalog.route_lag(percentiles=False)]


@contextlib.asynccontextmanager
async def notified_members(
    tmp_path: Path, buckets: list[str], groups: list[dict[str, object]]
) -> AsyncIterator[NotifiedMembers]:
    """Versioned buckets ``buckets`` and an applier of ``groups`` (as the file writes them) on a
    catalog of its own."""
    routing = load_config({"groups": groups})
    async with aiohttp.ClientSession() as http:
        for bucket in buckets:
            await versioned_gcs_bucket(http, bucket)
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    await register_datasets(catalog, routing)
    applier = Applier(Router(routing), catalog, Copier())
    try:
        yield NotifiedMembers(applier, catalog, buckets)
    finally:
        await applier.close()
        await catalog.close()
