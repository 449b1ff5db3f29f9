"""Applying one change event to every destination of its route (the worker's handler).

Applying one event (events are hints; the source's current state is the truth):

1. the catalog's per-key high-water accepts it (a stale event is a no-op, a duplicate is redone
   idempotently);
2. the source is read afresh: if it exists, it is copied (pinned to the version seen) to each
   destination, and the verified replica is recorded; if it is gone, the deletion is applied
   under the route's delete policy and its per-minute safety limit;
3. only then does the worker mark the record done, so its offset can be committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from connectors import open_store
from connectors.base import NotFound, ObjectMeta, ObjectStore
from replicator.catalog import Catalog
from replicator.catalog.model import Acceptance, Change, LocationSpec, Replica, Role
from replicator.daemon.deletes import DeleteGuard, DeletionSweeper, delete_replica
from replicator.engine.transfer import Copier, SharedSourceRead
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import (
    Route,
    Router,
    RoutingConfig,
    Target,
)

log = structlog.get_logger(__name__)


class Applier:
    """Applies one change event to every destination of its route (the worker's handler)."""

    def __init__(
        self,
        router: Router,
        catalog: Catalog,
        copier: Copier,
        *,
        store_factory: Callable[[str], ObjectStore] = open_store,
        guard: DeleteGuard | None = None,
    ) -> None:
        self.router = router
        self.catalog = catalog
        self.copier = copier
        self.store_factory = store_factory
        self.guard = guard or DeleteGuard()
        self._stores: dict[str, ObjectStore] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}

    def store(self, root_url: str) -> ObjectStore:
        """Stores are rooted at route locations, so a relative key is the same at every end."""
        store = self._stores.get(root_url)
        if store is None:
            store = self._stores[root_url] = self.store_factory(root_url)
        return store

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()

    async def __call__(self, event: ChangeEvent) -> list[str]:
        """Apply ``event``; returns what happened at each destination."""
        targets = self.router.targets(event.source_url)
        if not targets:
            return []
        change = Change(
            event.source_url,
            event.sequencer,
            event.event_time,
            event.version,
            event.size,
            event.etag,
            event.kind == "delete",
        )
        route = targets[0].route
        source, key = self.store(route.source), targets[0].relative_key
        async with self._gate(route):
            # The source is read while the change is accepted: a read is harmless, and it is
            # simply unused when the change turns out to be stale.
            acceptance, current = await asyncio.gather(
                self.catalog.mark_pending(change, [t.destination.url for t in targets]),
                self._head(source, key),
            )
            if acceptance is Acceptance.STALE:
                log.info("stale event ignored", source=event.source_url, sequencer=event.sequencer)
                return ["stale"] * len(targets)
            shared = SharedSourceRead()
            return list(
                await asyncio.gather(
                    *(
                        self._apply(change, target, source, key, current, shared)
                        for target in targets
                    )
                )
            )

    async def _head(self, source: ObjectStore, key: str) -> ObjectMeta | None:
        """The source's current state (None: it is gone)."""
        try:
            meta: ObjectMeta = await self.copier.retry.run(
                lambda: source.head(key), what="head source"
            )
        except NotFound:
            return None
        return meta

    def _gate(self, route: Route) -> asyncio.Semaphore | contextlib.nullcontext[None]:
        """At most ``route.concurrency`` objects of one route are applied at once (when set),
        so that one busy route cannot take every worker slot or overload its stores."""
        if route.concurrency is None:
            return contextlib.nullcontext()
        gate = self._gates.get(route.name)
        if gate is None:
            gate = self._gates[route.name] = asyncio.Semaphore(route.concurrency)
        return gate

    async def _apply(
        self,
        change: Change,
        target: Target,
        source: ObjectStore,
        key: str,
        current: ObjectMeta | None,
        shared: SharedSourceRead,
    ) -> str:
        try:
            if current is None:
                return await self._delete(change, target)
            dest = self.store(target.destination.url)
            result = await self.copier.copy(
                source, key, dest, target.relative_key, observed=current, shared=shared
            )
            if result.destination is not None:
                await self.catalog.record_replica(
                    change, target.destination.url, Replica.from_copy(result)
                )
            return result.status
        except Exception as exc:
            await self.catalog.mark_failed(change, target.destination.url, str(exc)[:2000])
            raise

    async def _delete(self, change: Change, target: Target) -> str:
        """The source is gone: apply its deletion as the route's delete policy says."""
        route, location = target.route, target.destination.url
        now = datetime.now(UTC)
        if route.delete_policy == "never":
            await self.catalog.mark_retained(change, location, now)
            return "retained"
        if route.delete_policy == "delayed":
            assert route.delete_delay is not None  # the configuration guarantees it
            due = change.event_time + route.delete_delay
            await self.catalog.schedule_delete(change, location, due=due, decided_time=now)
            return "delete_scheduled"
        await delete_replica(self.store(location), target, change.source_url, self.guard)
        await self.catalog.mark_deleted(change, location, datetime.now(UTC))
        return "deleted"

    def sweeper(self, interval: timedelta) -> DeletionSweeper:
        """The sweeper of deletions this applier's routes delay, sharing its stores and limits."""
        return DeletionSweeper(
            self.router, self.catalog, self.store, self.guard, self.copier.retry, interval=interval
        )


async def register_datasets(catalog: Catalog, config: RoutingConfig) -> None:
    """Each route is a dataset of the lake: its source and every destination location."""
    known = {dataset.name for dataset in await catalog.datasets()}
    for route in config.routes:
        if route.name in known:
            continue
        await catalog.add_dataset(
            route.name,
            [
                LocationSpec(route.source, Role.SOURCE),
                *(LocationSpec(d.url, Role.REPLICA, d.region) for d in route.destinations),
            ],
        )
