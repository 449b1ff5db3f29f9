"""Applying one change event to every destination of its route (the worker's handler).

Applying one event (events are hints; the source's current state is the truth):

1. the catalog's per-key high-water accepts it (a stale event is a no-op, a duplicate is redone
   idempotently), except that repairs win over event order: an event of a listing (a scan,
   backfill or reconciliation) that the high-water finds stale, while some replica does not
   hold the source's current state, is accepted as a repair ordered just after the high-water
   (``Catalog.accept_repair``); the source is read again after that, so a repair never copies
   an older version than the high-water had seen;
2. the source is read afresh: if it exists, it is copied (pinned to the version seen) to each
   destination, and the verified replica is recorded; if it is gone (a definite "no such key"
   in a bucket that exists, or deleted while it was being copied), the deletion is applied
   under the route's delete policy and its per-minute safety limit; a source that is itself a
   replica is not replicated again (its rows are settled, so nothing stays pending);
3. the copies to the destinations of one event all finish (or fail) before the event counts
   as done or is tried again, so two copies of one key to one destination never overlap;
4. only then does the worker mark the record done, so its offset can be committed.

A missing or unreadable bucket (``ContainerNotFound``, ``PermissionDenied``) is an error of the
route: it is recorded as a failure and marks the route unhealthy (``health``); it never deletes
a replica.

Two operator controls gate each destination (``replicator.daemon.held``): a destination whose
replication is paused is not written; the change is held in the catalog and, once resumed,
published again to its key's partition, whose owner applies it here like any event (a listing's
event: a repair if the key's high-water moved past it). A destination that keeps failing gets
``retry_budget`` attempts at a change (the worker's backoff between them); past it, or at once
for a failure retrying cannot mend, the change stays in the failed list (``replicator
failed``) and the event is done there; ``replicator failed retry`` sends it back the same way
as a held change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import structlog

from connectors import open_store
from connectors.base import NotFound, ObjectMeta, ObjectStore, StoreError
from replicator.catalog import Catalog
from replicator.catalog.conflicts import AppliedDeletion
from replicator.catalog.model import (
    Acceptance,
    Change,
    LocationSpec,
    Replica,
    Role,
)
from replicator.daemon.deletes import (
    DeleteGuard,
    DeletionSweeper,
    NotOurReplica,
    RoutePaused,
    delete_replica,
)
from replicator.daemon.groups import GroupArbiter, Verdict
from replicator.daemon.health import RouteHealth
from replicator.daemon.held import ReplicationPauses
from replicator.daemon.listed import Listed
from replicator.engine.costs import CostLedger, attributed
from replicator.engine.metadata import replica_mismatch, replica_source
from replicator.engine.transfer import (
    ABSENT,
    Copier,
    CopyResult,
    SharedSourceRead,
    SourceGone,
    version_id,
)
from replicator.errors import Unavailable
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Route, Router, RoutingConfig, Target, group_chains

log = structlog.get_logger(__name__)

# The outcome at a destination whose change counts as failed (it is in the failed list).
FAILED = "failed"


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
        health: RouteHealth | None = None,
        pauses: ReplicationPauses | None = None,
        retry_budget: int = 5,
        ledger: CostLedger | None = None,
    ) -> None:
        self.router = router
        self.catalog = catalog
        self.copier = copier
        self.store_factory = store_factory
        self.guard = guard or DeleteGuard(catalog)
        self.health = health or RouteHealth()
        self.pauses = pauses or ReplicationPauses(catalog, router)
        self.retry_budget = retry_budget
        #: Counts the requests of each route and destination (``replicator.engine.costs``).
        self.ledger = ledger
        self.groups = GroupArbiter(catalog, copier.retry, self.guard)
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

    async def accept(self, events: Sequence[ChangeEvent]) -> None:
        """Record changes as pending before ingest publishes them (``record_accepted``)."""
        await record_accepted(self.catalog, self.router, events)

    def admission(self, event: ChangeEvent) -> AbstractAsyncContextManager[object]:
        """At most ``route.concurrency`` objects of the event's route are applied at once (when
        set), so that one busy route cannot overload its stores. The worker takes this before
        one of its slots, so events waiting here hold no slot other routes could use."""
        targets = self.router.targets(event.source_url)
        route = targets[0].route if targets else None
        if route is None or route.concurrency is None:
            return contextlib.nullcontext()
        gate = self._gates.get(route.name)
        if gate is None:
            gate = self._gates[route.name] = asyncio.Semaphore(route.concurrency)
        return gate

    async def __call__(self, event: ChangeEvent, listed: Listed | None = None) -> list[str]:
        """Apply ``event``; returns what happened at each destination. ``listed``: what a
        listing just showed of the event's key, used instead of HEADs of both ends."""
        targets = self.router.targets(event.source_url)
        if not targets:
            return []
        # The route's own requests (the source's head); each destination's are counted for
        # it (``_gated``).
        with attributed(self.ledger, targets[0].route.name):
            return await self._apply_event(event, targets, listed)

    async def _apply_event(
        self, event: ChangeEvent, targets: Sequence[Target], listed: Listed | None
    ) -> list[str]:
        change = Change.from_event(event)
        route = targets[0].route
        source, key = self.store(route.source), targets[0].relative_key
        locations = [t.destination.url for t in targets]
        shared = SharedSourceRead()
        current: ObjectMeta | None
        try:
            if listed is None:
                # The source is read while the change is accepted: a read is harmless, and it
                # is simply unused when the change turns out to be stale.
                acceptance, current = await asyncio.gather(
                    self.catalog.mark_pending(change, locations), self._head(source, key)
                )
            else:
                # A small listed object is read while the change is accepted, as the source
                # is HEADed above; its copies then take the bytes from ``shared``.
                dests = [self.store(location) for location in locations]
                acceptance, _ = await asyncio.gather(
                    self.catalog.mark_pending(change, locations),
                    self._prefetch(route, source, key, listed, dests, locations[0], shared),
                )
                current = listed.source
                if acceptance is Acceptance.STALE:
                    # Whether a stale event repairs anything is decided on the source and
                    # replicas as they are now, never on a listing.
                    current, listed = await self._head(source, key), None
        except StoreError as exc:
            if self.health.is_route_error(exc):
                self.health.failed(route.name, exc)
                await self._record_failure(change, targets, exc)
            raise
        settled: list[str] = []
        deleted_from = None
        if route.group is not None and await self.groups.is_echo(change):
            # Whatever the member holds now (another member's write may have reached it since)
            # and whether or not a newer change of the key came first; but a deletion another
            # group of a chain made at the member goes on to this group's other members.
            deleted_from = await self._echo_forwarded(change, acceptance, current)
            forwarded = [
                t for t in targets if deleted_from is not None and _forwards(t, deleted_from.member)
            ]
            settled = await self._settle_echo(change, [t for t in targets if t not in forwarded])
            if not forwarded:
                return settled
            targets, acceptance = forwarded, Acceptance.NEW
        if acceptance is Acceptance.STALE:
            repair = None
            if event.listed and not await self._in_sync(current, targets):
                repair = await self._accept_repair(change, targets, source, key)
            elif self.groups.deletion_outruns(change, route, current):
                # Applied as a repair, ordered after the replica's notification that overtook it.
                repair = await self._accept_repair(change, targets, source, key)
            if repair is None:
                log.info("stale event ignored", source=event.source_url, sequencer=event.sequencer)
                return ["stale"] * len(targets)
            change, current = repair
        origin = replica_source(current.attributes.user_metadata) if current else None
        if origin is not None and route.group is not None and change.deleted:
            # A replica of another member's write reached the member after its user deleted
            # the key: the deletion may still win the group's conflict rule.
            assert current is not None
            if await self.groups.delete_meets_replica(change, route, key, current, source):
                current, origin = None, None
        if origin is not None:
            # Another group of a chain forwards its replica; its own group never does.
            kept = [t for t in targets if not _forwards(t, origin)]
            if kept:
                settled += await self._settle_replica(change, kept, origin)
            targets = [t for t in targets if t not in kept]
            if not targets:
                return settled
        # Every destination's copy finishes before the event is done or tried again (no
        # overlapping copies of one key to one destination); one failing destination does
        # not cancel the others, which a retry then finds done.
        outcomes = await asyncio.gather(
            *(
                self._gated(change, target, source, key, current, shared, listed, deleted_from)
                for target in targets
            ),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        log.debug(
            "change applied",
            source=event.source_url,
            sequencer=change.sequencer,
            event_time=change.event_time.isoformat(),
            acceptance=acceptance.name,
            outcomes=[o if isinstance(o, str) else type(o).__name__ for o in outcomes],
        )
        if failures:
            raise _most_telling(failures)
        done = [o for o in outcomes if isinstance(o, str)]
        if FAILED not in done:
            # A destination failing for good (a missing container) keeps the route unhealthy.
            self.health.succeeded(route.name)
        return settled + done

    async def _settle_echo(self, change: Change, targets: Sequence[Target]) -> list[str]:
        """The store's notice of a deletion the group made at the member: nothing to apply
        (the deletion it echoes was decided under the group's rule, and a write elsewhere
        since must not lose to it)."""
        log.info("echo of the group's own deletion ignored", source=change.source_url)
        now = datetime.now(UTC)
        note = "the store's notice of a deletion the group made at this member"
        for target in targets:
            await self.catalog.mark_retained(change, target.destination.url, now, note=note)
        return ["echo"] * len(targets)

    async def _echo_forwarded(
        self, change: Change, acceptance: Acceptance, current: ObjectMeta | None
    ) -> AppliedDeletion | None:
        """The deletion an echo reports, for the other groups of a chain to forward (the
        catalog's row at the echoing member names the member it came from and its time); None
        for a stale echo, or one a write reached the member after."""
        if acceptance is Acceptance.STALE or current is not None:
            return None
        return await self.catalog.deleted_from(change.source_url)

    async def _prefetch(
        self,
        route: Route,
        source: ObjectStore,
        key: str,
        listed: Listed,
        dests: Sequence[ObjectStore],
        first: str,
        shared: SharedSourceRead,
    ) -> None:
        """Read a small listed object ahead of its copies, which share the read; counted for
        the route's first destination, as a copy that read it itself would be (so a read
        from another provider counts as egress)."""
        with attributed(self.ledger, route.name, first, dests[0].location):
            await self.copier.prefetch(source, key, listed.source, dests, shared)

    async def _head(self, source: ObjectStore, key: str) -> ObjectMeta | None:
        """The source's current state (None: it is gone: a missing key in a bucket that
        exists; a missing bucket raises ContainerNotFound)."""
        try:
            meta: ObjectMeta = await self.copier.retry.run(
                lambda: source.head(key), what="head source"
            )
        except NotFound:
            return None
        return meta

    async def _in_sync(self, current: ObjectMeta | None, targets: Sequence[Target]) -> bool:
        """Whether every destination holds a verified replica of the source's ``current``
        state (a listing's stale event then has nothing to repair)."""
        if current is None:
            return False
        for target in targets:
            try:
                existing = await self._head(self.store(target.destination.url), target.relative_key)
            except StoreError:
                return False  # not known to be in sync: the repair's copy finds out
            if existing is None:
                return False
            if replica_mismatch(current, version_id(current), existing) is not None:
                return False
        return True

    async def _accept_repair(
        self, change: Change, targets: Sequence[Target], source: ObjectStore, key: str
    ) -> tuple[Change, ObjectMeta | None] | None:
        """Accept a listing's stale event as a repair, then read the source again (see
        ``Catalog.accept_repair`` for why in that order); None if a newer change was accepted
        meanwhile, whose own event applies it."""
        repair = await self.catalog.accept_repair(change, [t.destination.url for t in targets])
        if repair is None:
            return None
        log.info("repair of a replica that missed a change", source=change.source_url)
        return repair, await self._head(source, key)

    async def _settle_replica(
        self, change: Change, targets: Sequence[Target], origin: str
    ) -> list[str]:
        """The source object is itself a replica (routes chained through a replica location):
        it is never replicated again, and its rows are settled so nothing stays pending."""
        note = f"the source is a replica of {origin}; replicas are not replicated again"
        now = datetime.now(UTC)
        for target in targets:
            await self.catalog.mark_retained(change, target.destination.url, now, note=note)
        log.info("source is a replica; not replicated", source=change.source_url, origin=origin)
        return ["replica"] * len(targets)

    async def _gated(
        self,
        change: Change,
        target: Target,
        source: ObjectStore,
        key: str,
        current: ObjectMeta | None,
        shared: SharedSourceRead,
        listed: Listed | None = None,
        deleted_from: AppliedDeletion | None = None,
    ) -> str:
        """The pause gate: a paused destination is not written; the change is held in the
        catalog (still to do), published again once the destination is resumed."""
        pause = await self.pauses.pause_of(target.destination.url)
        if pause is None:
            url = target.destination.url
            with attributed(self.ledger, target.route.name, url, self.store(url).location):
                return await self._apply(
                    change, target, source, key, current, shared, listed, deleted_from
                )
        reason = f"replication paused by {pause.paused_by}: {pause.reason}"
        await self.catalog.hold(change, target.destination.url, reason)
        return "held"

    async def _apply(
        self,
        change: Change,
        target: Target,
        source: ObjectStore,
        key: str,
        current: ObjectMeta | None,
        shared: SharedSourceRead,
        listed: Listed | None = None,
        deleted_from: AppliedDeletion | None = None,
    ) -> str:
        try:
            dest = self.store(target.destination.url)
            verdict = None
            if target.route.group is not None:
                verdict = await self.groups.decide(
                    change, target, current, dest, deleted_from=deleted_from
                )
                if not verdict.applies:
                    await self.catalog.mark_retained(
                        change, target.destination.url, datetime.now(UTC), note=verdict.note
                    )
                    return verdict.outcome
            if current is None:
                return await self._delete(change, target, verdict)
            try:
                result = await self.copier.copy(
                    source,
                    key,
                    dest,
                    target.relative_key,
                    observed=current,
                    # What the group's rule read of the destination is not read again,
                    # nor what the backfill's listing showed of it.
                    dest_observed=(
                        (verdict.existing or ABSENT)
                        if verdict is not None
                        else listed.dest(target.destination.url)
                        if listed
                        else None
                    ),
                    shared=shared,
                    # Only the replicas a chain's other group wrote are still to copy here.
                    forwarding=replica_source(current.attributes.user_metadata) is not None,
                )
            except SourceGone:
                # Deleted while it was being copied (a put quickly followed by a delete):
                # the event resolves to "source gone", as if it had been read just now.
                log.info("source deleted during its copy", source=change.source_url)
                return await self._delete(change, target)
            if result.destination is not None:
                await self.catalog.record_replica(
                    change, target.destination.url, Replica.from_copy(result)
                )
            elif (origin := _replica_origin(result)) is not None:
                # A listed source whose read showed it is itself a replica (a listing
                # without metadata could not tell): settled like one HEADed first.
                return (await self._settle_replica(change, [target], origin))[0]
            return result.status
        except Unavailable:
            raise
        except Exception as exc:
            if isinstance(exc, StoreError) and self.health.is_route_error(exc):
                self.health.failed(target.route.name, exc)
            attempts = await self.catalog.mark_failed(
                change, target.destination.url, str(exc)[:2000]
            )
            if not isinstance(exc, StoreError):
                raise
            if attempts is None:
                # The replica holds this change or a newer one already (a newer change's own
                # event applies it): this failure is not one to list or to retry.
                log.info(
                    "failure of a change already superseded",
                    replica=target.dest_url,
                    error=str(exc)[:500],
                )
                return "stale"
            if exc.retriable and attempts < self.retry_budget:
                raise
            # Retrying cannot mend it, or the budget is spent: the change is in the failed
            # list (``replicator failed retry`` sends it back); the other destinations and
            # the Kafka offset go on.
            log.error(
                "change failed at a destination; it is in the failed list",
                replica=target.dest_url,
                attempts=attempts,
                error=str(exc)[:500],
            )
            return FAILED

    async def _record_failure(
        self, change: Change, targets: Sequence[Target], exc: StoreError
    ) -> None:
        """Record a failure of the whole event (the source could not be read) at every
        destination, once the change is accepted, so the failed list shows it."""
        with contextlib.suppress(Unavailable):
            await self.catalog.mark_pending(change, [t.destination.url for t in targets])
            for target in targets:
                await self.catalog.mark_failed(change, target.destination.url, str(exc)[:2000])

    async def _delete(self, change: Change, target: Target, verdict: Verdict | None = None) -> str:
        """The source is gone: apply its deletion as the route's delete policy says.
        ``verdict``: a group's rule on it, which may let it delete another member's write."""
        route, location = target.route, target.destination.url
        now = datetime.now(UTC)
        # A copy of it killed mid-way will never be resumed: its upload goes now.
        await self.copier.abandon(self.store(location), target.relative_key)
        if route.delete_policy == "never":
            await self.catalog.mark_retained(change, location, now)
            return "retained"
        if verdict is not None and verdict.overrides is not None:
            try:
                deleted = await self.groups.delete_held(
                    route, self.store(location), target.relative_key, verdict.overrides.existing
                )
            except RoutePaused as exc:
                await self.catalog.pause_delete(change, location, when=now, reason=str(exc))
                return "delete_paused"
            if not deleted:
                note = "written again while being deleted: the newer write is kept"
                await self.catalog.mark_retained(change, location, now, note=note)
                return "not_ours"
            await self.groups.deleted(target.dest_url)
            await self.catalog.mark_deleted(change, location, datetime.now(UTC))
            return "deleted"
        if route.delete_policy == "delayed":
            assert route.delete_delay is not None  # the configuration guarantees it
            due = change.event_time + route.delete_delay
            await self.catalog.schedule_delete(change, location, due=due, decided_time=now)
            return "delete_scheduled"
        try:
            await delete_replica(self.store(location), target, change.source_url, self.guard)
        except RoutePaused as exc:
            # Held back, not lost: the sweeper carries it out once deletions are resumed.
            await self.catalog.pause_delete(change, location, when=now, reason=str(exc))
            return "delete_paused"
        except NotOurReplica as exc:
            # What is there was not written by this route for that source: nothing of ours
            # to delete, and the deletion is decided.
            await self.catalog.mark_retained(change, location, now, note=str(exc))
            return "not_ours"
        if route.group is not None:
            await self.groups.deleted(target.dest_url)
        await self.catalog.mark_deleted(change, location, datetime.now(UTC))
        return "deleted"

    def sweeper(self, interval: timedelta) -> DeletionSweeper:
        """The sweeper of deletions this applier's routes delay, sharing its stores and limits."""
        return DeletionSweeper(
            self.router,
            self.catalog,
            self.store,
            self.guard,
            self.copier.retry,
            interval=interval,
            ledger=self.ledger,
            group_deleted=self.groups.deleted,
        )


async def record_accepted(catalog: Catalog, router: Router, events: Sequence[ChangeEvent]) -> None:
    """Record changes as pending at every destination of their route, before they are
    published to Kafka: a change waiting there (a partition behind, a record in a worker's
    memory) then holds its route's watermark until it is applied. Applying it later finds it
    accepted already (a duplicate, redone as usual)."""
    routed = [event for event in events if router.targets(event.source_url)]
    acceptances = await asyncio.gather(
        *(
            catalog.mark_pending(
                Change.from_event(event),
                [t.destination.url for t in router.targets(event.source_url)],
            )
            for event in routed
        )
    )
    for event, acceptance in zip(routed, acceptances, strict=True):
        log.debug(
            "change accepted",
            source=event.source_url,
            sequencer=event.sequencer,
            event_time=event.event_time.isoformat(),
            acceptance=acceptance.name,
        )


def _forwards(target: Target, origin: str) -> bool:
    """Whether ``target``'s route forwards what another group of a chain did at its source
    on behalf of the member ``origin``."""
    return target.route.group is not None and target.route.group.forwards(origin)


def _replica_origin(result: CopyResult) -> str | None:
    """The object a skipped copy's source is a replica of, if that is why it was skipped."""
    if result.status != "skipped" or result.destination is not None:
        return None
    return replica_source(result.source.attributes.user_metadata)


def _most_telling(failures: Sequence[BaseException]) -> BaseException:
    """The failure that decides what the worker does with the event: an unavailable service
    first (it waits), then one worth retrying, then any."""
    for wanted in (Unavailable, StoreError):
        for failure in failures:
            if isinstance(failure, wanted) and (
                wanted is Unavailable or getattr(failure, "retriable", False)
            ):
                return failure
    return failures[0]


async def register_datasets(catalog: Catalog, config: RoutingConfig) -> None:
    """Each route is a dataset of the lake: its source and every destination location.

    Run at every start, so that a destination added to a route is registered (its events are
    recorded, not refused), and one removed from it keeps its history but no pending work: its
    changes will never be applied there, and they must not hold its lag or watermark.
    """
    known = {dataset.name: dataset for dataset in await catalog.datasets()}
    for linked, _ in {chain[0][0].name: chain for chain in group_chains(config.groups)}.values():
        # One dataset per chain of groups (a lone group is its own), named after its first
        # group, every member a source (each is written by its users).
        members = {m.url: m for group in linked for m in group.members}
        await catalog.add_dataset(
            linked[0].name, [LocationSpec(m.url, Role.SOURCE, m.region) for m in members.values()]
        )
    for route in config.routes:
        if route.group is not None:
            continue
        await catalog.add_dataset(
            route.name,
            [
                LocationSpec(route.source, Role.SOURCE),
                *(LocationSpec(d.url, Role.REPLICA, d.region) for d in route.destinations),
            ],
        )
        previous = known.get(route.name)
        if previous is None:
            continue
        configured = {d.url for d in route.destinations}
        added = configured - {loc.url for loc in previous.replicas}
        if added:
            log.warning(
                "destinations added to a route: new changes reach them from now on; run "
                "`replicator backfill` for the route to copy the objects it already has",
                route=route.name,
                destinations=sorted(added),
            )
        for location in previous.replicas:
            if location.url not in configured:
                dropped = await catalog.forget_pending(route.name, location.url)
                log.warning(
                    "destination removed from a route; its pending changes are dropped",
                    route=route.name,
                    destination=location.url,
                    pending_dropped=dropped,
                )
