"""A route's ``concurrency`` bounds how many of its objects are applied at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors import open_store
from connectors.base import ObjectMeta, ObjectStore
from replicator.catalog import open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.devstack import StackState
from replicator.engine.transfer import Copier
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, load_config
from tests.engine.faults import FaultyStore
from tests.independent import read_object


class CountingStore(FaultyStore):
    """Counts the source heads in progress at once (one per object being applied)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.active = 0
        self.most = 0

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(0.05)  # widen the window in which applications overlap
            return await super().head(key, version=version)
        finally:
            self.active -= 1


async def test_route_concurrency_bounds_objects_in_flight(
    devstack: StackState, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    source_url, dest_url = f"s3://src-{suffix}/", f"gs://dst-{suffix}/"
    config = load_config(
        {
            "routes": [
                {
                    "name": "narrow",
                    "source": source_url,
                    "destinations": [dest_url],
                    "concurrency": 2,
                }
            ]
        }
    )
    counted: dict[str, CountingStore] = {}

    def stores(url: str) -> ObjectStore:
        counted[url] = CountingStore(open_store(url))
        return counted[url]

    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    applier = Applier(Router(config), catalog, Copier(), store_factory=stores)
    try:
        await register_datasets(catalog, config)
        for url in (source_url, dest_url):
            async with open_store(url) as plain:
                await plain.create_container()
        source, dest = applier.store(source_url), applier.store(dest_url)
        keys = [f"k{n}" for n in range(12)]
        for key in keys:
            await source.put(key, key.encode())
        now = datetime.now(UTC)
        events = [
            ChangeEvent(
                "put", source_url + key, None, "", None, None, now - timedelta(seconds=1), "scan"
            )
            for key in keys
        ]
        outcomes = await asyncio.gather(*(applier(event) for event in events))
        assert outcomes == [["copied"]] * len(keys)
        # Each application heads the source once, and the copy heads it again inside the gate.
        assert 1 < counted[source_url].most <= 2
        for key in keys:
            assert read_object(dest.url_for(key)) == key.encode()
    finally:
        await applier.close()
        await catalog.close()
