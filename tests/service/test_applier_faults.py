"""The applier under everyday faults, on real stores and a real catalog: a missing bucket never
deletes replicas, a source deleted mid-copy resolves to a deletion, replicas of replicas leave
nothing pending, route changes take effect without dead-letters, and the copies of one event
all finish before it fails."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors import open_store
from connectors.base import (
    Buffer,
    ChecksumKind,
    ContainerNotFound,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    TransientError,
)
from replicator.catalog import Catalog, open_catalog
from replicator.catalog.model import Change, ReplicaState
from replicator.daemon.applier import Applier, register_datasets
from replicator.devstack import StackState
from replicator.engine.transfer import Copier
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, RoutingConfig, load_config
from tests.engine.faults import FaultyStore
from tests.independent import delete_container, read_object


def suffix() -> str:
    return uuid.uuid4().hex[:10]


def event(kind: str, url: str, seconds_ago: float = 1.0, sequencer: str = "") -> ChangeEvent:
    return ChangeEvent(
        kind=kind,  # type: ignore[arg-type]
        source_url=url,
        version=None,
        sequencer=sequencer,
        size=None,
        etag=None,
        event_time=datetime.now(UTC) - timedelta(seconds=seconds_ago),
        origin="scan",
    )


def routes(*specs: dict[str, Any]) -> RoutingConfig:
    return load_config({"routes": list(specs)})


async def state_of(catalog: Catalog, dataset: str, key: str, location: str) -> str:
    [entry] = await catalog.ls(dataset, key, limit=1, include_deleted=True)
    [status] = [loc for loc in entry.locations if loc.location == location]
    return status.state


@pytest.fixture
async def catalog(tmp_path: Path) -> Any:
    opened = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    yield opened
    await opened.close()


class TestMissingBuckets:
    @pytest.mark.parametrize("scheme", ["s3", "gs"])
    async def test_events_of_a_missing_source_bucket_never_delete_replicas(
        self, devstack: StackState, catalog: Catalog, scheme: str
    ) -> None:
        """The source bucket is deleted (or the route names one that does not exist): put and
        delete events of its objects fail as errors of the route; the replicas stay."""
        tag = suffix()
        source_url, dest_url = f"{scheme}://src-{tag}/", f"az://dst-{tag}/"
        config = routes({"name": f"r{tag}", "source": source_url, "destinations": [dest_url]})
        await register_datasets(catalog, config)
        applier = Applier(Router(config), catalog, Copier())
        source, dest = applier.store(source_url), applier.store(dest_url)
        try:
            await source.create_container()
            await dest.create_container()
            await source.put("k", b"replicated")
            assert await applier(event("put", source_url + "k")) == ["copied"]
            await source.delete("k")
            await asyncio.to_thread(delete_container, source_url)
            for kind in ("put", "delete"):
                with pytest.raises(ContainerNotFound):
                    await applier(event(kind, source_url + "k", seconds_ago=0.5))
            assert read_object(dest.url_for("k")) == b"replicated"
            assert f"r{tag}" in applier.health.problems()
            assert await state_of(catalog, f"r{tag}", "k", dest_url) == "failed"
        finally:
            await applier.close()


class DeletingSource(FaultyStore):
    """Deletes the object on its first read: a put quickly followed by a delete."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.deleted = False

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> bytes:
        if not self.deleted:
            self.deleted = True
            await self.inner.delete(key)
        return await super().read(key, start, end, if_match=if_match, version=version)


async def test_a_source_deleted_mid_copy_resolves_to_its_deletion(
    devstack: StackState, catalog: Catalog
) -> None:
    """The put event finds the source gone when its copy restarts: the event applies the
    deletion (here: nothing to delete), no error, nothing dead-lettered."""
    tag = suffix()
    source_url, dest_url = f"s3://src-{tag}/", f"gs://dst-{tag}/"
    config = routes({"name": f"r{tag}", "source": source_url, "destinations": [dest_url]})
    await register_datasets(catalog, config)
    wrapped: dict[str, ObjectStore] = {}

    def stores(url: str) -> ObjectStore:
        store = open_store(url)
        wrapped[url] = DeletingSource(store) if url == source_url else store
        return wrapped[url]

    applier = Applier(Router(config), catalog, Copier(), store_factory=stores)
    try:
        await applier.store(source_url).create_container()
        await applier.store(dest_url).create_container()
        await applier.store(source_url).put("k", b"short-lived")
        assert await applier(event("put", source_url + "k")) == ["deleted"]
        assert await state_of(catalog, f"r{tag}", "k", dest_url) == str(ReplicaState.DELETED)
    finally:
        await applier.close()


async def test_replicas_of_replicas_leave_nothing_pending(
    devstack: StackState, catalog: Catalog
) -> None:
    """Routes chained through a replica location (A -> B/in/, B/ -> C): the replica written
    into B is not replicated again, and route B's rows are settled, so its watermark is not
    frozen."""
    tag = suffix()
    a, b, c = f"s3://a-{tag}/", f"gs://b-{tag}/", f"az://c-{tag}/"
    config = routes(
        {"name": f"ab{tag}", "source": a, "destinations": [b + "in/"]},
        {"name": f"bc{tag}", "source": b, "destinations": [c]},
    )
    await register_datasets(catalog, config)
    applier = Applier(Router(config), catalog, Copier())
    try:
        for url in (a, b, c):
            await applier.store(url).create_container()
        await applier.store(a).put("k", b"data")
        assert await applier(event("put", a + "k", seconds_ago=2)) == ["copied"]
        assert await applier(event("put", b + "in/k", seconds_ago=1)) == ["replica"]
        lags = {str(lag.route): lag for lag in await catalog.route_lag(destination=c)}
        [lag] = lags.values()
        assert lag.pending_ops == 0
        assert lag.watermark is not None
    finally:
        await applier.close()


async def test_route_changes_take_effect_without_dead_letters(
    devstack: StackState, catalog: Catalog
) -> None:
    """A destination added to a route is registered at start and its events are applied; one
    removed keeps no pending work."""
    tag = suffix()
    source_url, first, second = f"s3://src-{tag}/", f"gs://one-{tag}/", f"az://two-{tag}/"
    name = f"r{tag}"
    before = routes({"name": name, "source": source_url, "destinations": [first]})
    after = routes({"name": name, "source": source_url, "destinations": [first, second]})
    await register_datasets(catalog, before)
    applier = Applier(Router(before), catalog, Copier())
    try:
        for url in (source_url, first, second):
            await applier.store(url).create_container()
        await applier.store(source_url).put("k", b"v1")
        assert await applier(event("put", source_url + "k", seconds_ago=3)) == ["copied"]
    finally:
        await applier.close()
    await register_datasets(catalog, after)
    applier = Applier(Router(after), catalog, Copier())
    try:
        await applier.store(source_url).put("k", b"v2")
        assert await applier(event("put", source_url + "k", seconds_ago=2)) == ["copied"] * 2
        assert read_object(second + "k") == b"v2"
    finally:
        await applier.close()
    # A change accepted for both, then the second destination is removed before it is applied.
    await catalog.mark_pending(
        Change.from_event(event("put", source_url + "k", seconds_ago=1)), [first, second]
    )
    await register_datasets(catalog, before)
    lags = {lag.route.destination: lag for lag in await catalog.route_lag()}
    assert second not in lags or lags[second].pending_ops == 0
    assert lags[first].pending_ops == 1


class SlowStore(FaultyStore):
    """A destination whose puts take a while, counting the puts in progress."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.active = 0

    async def put(
        self,
        key: str,
        data: Buffer,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> ObjectMeta:
        self.active += 1
        try:
            await asyncio.sleep(1.0)
            return await super().put(
                key,
                data,
                attributes=attributes,
                create_only=create_only,
                if_match=if_match,
                checksums=checksums,
            )
        finally:
            self.active -= 1


class BrokenStore(FaultyStore):
    async def put(
        self,
        key: str,
        data: Buffer,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> ObjectMeta:
        raise TransientError("injected 503", url=self.url_for(key))


async def test_every_copy_of_an_event_finishes_before_it_fails(
    devstack: StackState, catalog: Catalog
) -> None:
    """One destination fails at once while another is still copying: the event fails only
    after that copy finished, so a retry never overlaps it (one writer per key)."""
    tag = suffix()
    source_url, slow_url, broken_url = f"s3://src-{tag}/", f"gs://s-{tag}/", f"az://b-{tag}/"
    config = routes(
        {"name": f"r{tag}", "source": source_url, "destinations": [slow_url, broken_url]}
    )
    await register_datasets(catalog, config)
    slow: list[SlowStore] = []

    def stores(url: str) -> ObjectStore:
        store = open_store(url)
        if url == slow_url:
            slow.append(SlowStore(store))
            return slow[-1]
        return BrokenStore(store) if url == broken_url else store

    applier = Applier(Router(config), catalog, Copier(), store_factory=stores)
    try:
        for url in (source_url, slow_url, broken_url):
            await applier.store(url).create_container()
        await applier.store(source_url).put("k", b"data")
        with pytest.raises(TransientError):
            await applier(event("put", source_url + "k"))
        assert slow[0].active == 0, "a copy of the failed event is still writing"
        assert read_object(slow_url + "k") == b"data"
    finally:
        await applier.close()
