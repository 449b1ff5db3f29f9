"""A route's ``concurrency`` bounds how many of its objects are applied at once, without
letting the events waiting for it hold the daemon's worker slots."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors import open_store
from connectors.base import ObjectMeta, ObjectStore
from replicator.catalog import open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.service import make_worker
from replicator.devstack import StackState
from replicator.engine.transfer import Copier
from replicator.pipeline.bus import AsyncConsumer
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, load_config
from tests.engine.faults import FaultyStore
from tests.independent import read_object
from tests.worker.bed import FAST_RETRY, Bed, until


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

        async def apply(event: ChangeEvent) -> list[str]:
            async with applier.admission(event):
                return await applier(event)

        outcomes = await asyncio.gather(*(apply(event) for event in events))
        assert outcomes == [["copied"]] * len(keys)
        # Each application heads the source once, and the copy heads it again inside the gate.
        assert 1 < counted[source_url].most <= 2
        for key in keys:
            assert read_object(dest.url_for(key)) == key.encode()
    finally:
        await applier.close()
        await catalog.close()


class HeldSource(FaultyStore):
    """A source whose heads wait until the test lets them go."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.release = asyncio.Event()
        self.waiting = 0

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        self.waiting += 1
        await self.release.wait()
        return await super().head(key, version=version)


async def test_a_busy_route_does_not_hold_every_worker_slot(
    devstack: StackState, tmp_path: Path
) -> None:
    """Events queued behind a route's concurrency limit wait without a worker slot: another
    route's events are applied meanwhile (the daemon's worker, on the real broker)."""
    suffix = uuid.uuid4().hex[:10]
    narrow_src, other_src = f"s3://narrow-{suffix}/", f"s3://other-{suffix}/"
    narrow_dst, other_dst = f"gs://narrow-{suffix}/", f"gs://other-{suffix}/"
    config = load_config(
        {
            "routes": [
                {
                    "name": "narrow",
                    "source": narrow_src,
                    "destinations": [narrow_dst],
                    "concurrency": 1,
                },
                {"name": "other", "source": other_src, "destinations": [other_dst]},
            ]
        }
    )
    held: list[HeldSource] = []

    def stores(url: str) -> ObjectStore:
        store = open_store(url)
        if url == narrow_src:
            held.append(HeldSource(store))
            return held[-1]
        return store

    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    applier = Applier(Router(config), catalog, Copier(), store_factory=stores)
    bed = Bed(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    worker = make_worker(
        AsyncConsumer(bed.settings, [bed.topic]),
        bed.producer,
        applier,
        workers=2,
        dlq_topic=bed.dlq,
        retry=FAST_RETRY,
        commit_interval_s=0.2,
    )
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        await register_datasets(catalog, config)
        for url in (narrow_src, other_src, narrow_dst, other_dst):
            async with open_store(url) as plain:
                await plain.create_container()
        async with open_store(other_src) as other:
            await other.put("k", b"other")
        now = datetime.now(UTC) - timedelta(seconds=1)
        for number in range(4):
            url = f"{narrow_src}n{number}"
            await bed.publish(
                url, ChangeEvent("put", url, None, "", None, None, now, "scan").to_json()
            )
        url = f"{other_src}k"
        await bed.publish(url, ChangeEvent("put", url, None, "", None, None, now, "scan").to_json())
        running = asyncio.create_task(worker.run(stop))
        await until(lambda: bool(held) and held[0].waiting == 1)
        # The narrow route's first event holds its only place; the rest of it waits there.
        await until(lambda: worker.stats.applied == 1, seconds=30)
        assert read_object(f"{other_dst}k") == b"other"
        held[0].release.set()
        await until(lambda: worker.stats.applied == 5, seconds=60)
    finally:
        stop.set()
        if running is not None:
            await running
        await bed.producer.close()
        await applier.close()
        await catalog.close()
