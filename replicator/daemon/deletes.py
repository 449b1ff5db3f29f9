"""Deleting replicas: the per-route safety limit, the guarded deletion itself, and the sweeper
that carries out deletions later (scheduled by a delayed delete policy, or held back while a
route's deletions were paused).

A replica is deleted only if it carries this product's replica mark naming the deleted source
object (and, when the catalog recorded which replica that was, only that very object), only
with an If-Match on the version just checked (a replica rewritten in between is left alone),
and at most ``max_deletes_per_minute`` times a minute per route across the whole fleet: past
it the route's deletions are paused in the catalog, every daemon holds its deletions back
(recorded ``delete_paused``, still to do), and ``replicator deletes resume ROUTE`` lets the
sweepers carry them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Gauge

from connectors.base import NotFound, ObjectMeta, ObjectStore, PreconditionFailed
from replicator.catalog import Catalog, PauseScope, ReplicaState, ScheduledDelete
from replicator.engine.costs import CostLedger, attributed
from replicator.engine.metadata import replica_source
from replicator.engine.retry import RetryPolicy
from replicator.pipeline.rules import Route, Router, Target
from replicator.pipeline.worker import PermanentFailure

log = structlog.get_logger(__name__)

GUARD = "delete guard"
# How long a daemon trusts what it last read of the pauses: an operator's resume reaches every
# daemon within this time.
PAUSES_TTL_S = 2.0


class RoutePaused(Exception):
    """The route's deletions are paused (its delete limit was exceeded, or an operator paused
    them): the deletion waits in the catalog until they are resumed."""


class NotOurReplica(PermanentFailure):
    """The object at the destination is not the replica of the deleted source object."""


class DeleteGuard:
    """At most ``max_deletes_per_minute`` deletions per route and minute for the whole fleet
    (counted in the catalog); past it the route's deletions are paused there until an operator
    resumes them. Every daemon honours a pause within ``PAUSES_TTL_S``."""

    def __init__(self, catalog: Catalog, paused_gauge: Gauge | None = None) -> None:
        """``paused_gauge``: ``replicator_route_deletes_paused`` (``DaemonMetrics``)."""
        self.catalog = catalog
        self.paused: set[str] = set()
        self._read_at = float("-inf")
        # One read at a time: the copies of a burst all find the view stale at once.
        self._reading = asyncio.Lock()
        self._paused_gauge = paused_gauge

    async def refresh(self, *, force: bool = False) -> set[str]:
        """The routes whose deletions are paused, as the catalog says (read at most every
        ``PAUSES_TTL_S`` unless ``force``)."""
        if not force and time.monotonic() - self._read_at < PAUSES_TTL_S:
            return self.paused
        async with self._reading:
            if not force and time.monotonic() - self._read_at < PAUSES_TTL_S:
                return self.paused  # read by another task meanwhile
            pauses = await self.catalog.pauses()
            paused = {
                p.route for p in pauses if p.scope is PauseScope.DELETES and not p.destination
            }
            self._read_at = time.monotonic()
            if self._paused_gauge is not None:
                for route in self.paused | paused:
                    self._paused_gauge.labels(route).set(1 if route in paused else 0)
            self.paused = paused
        return self.paused

    async def is_paused(self, route: Route) -> bool:
        return route.name in await self.refresh()

    async def admit(self, route: Route, now: datetime | None = None) -> None:
        """Take one deletion from the route's budget of ``now``'s minute, or raise
        RoutePaused."""
        if await self.is_paused(route):
            raise RoutePaused(f"deletions of route {route.name!r} are paused")
        if await self.catalog.admit_delete(route.name, route.max_deletes_per_minute, now):
            return
        reason = f"more than {route.max_deletes_per_minute} deletions in a minute"
        await self.catalog.pause(
            route.name, scope=PauseScope.DELETES, reason=reason, paused_by=GUARD
        )
        await self.refresh(force=True)
        log.error(
            "delete limit exceeded; deletions of the route are paused until resumed "
            "(replicator deletes resume ROUTE)",
            route=route.name,
            limit=route.max_deletes_per_minute,
            alert=True,
        )
        raise RoutePaused(f"route {route.name!r} exceeded {reason}; its deletions are paused")


async def delete_replica(
    dest: ObjectStore,
    target: Target,
    source_url: str,
    guard: DeleteGuard,
    *,
    replica_etag: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Delete the replica of ``source_url`` at ``target``; False if nothing is there.

    ``replica_etag``: the replica the catalog recorded; an object there with another etag was
    written since (a newer version of the source) and is not deleted.
    """
    try:
        existing = await dest.head(target.relative_key)
    except NotFound:
        return False
    _check_ours(existing, target, source_url, replica_etag)
    await guard.admit(target.route, now)
    try:
        await dest.delete(target.relative_key, if_match=existing.etag)
    except NotFound:
        return False
    except PreconditionFailed:
        # The object is no longer the one checked. Either it is gone: a retry of a deletion
        # that landed while its answer was lost, which is done; or it was written since, and
        # that newer version is not deleted.
        try:
            now_there = await dest.head(target.relative_key)
        except NotFound:
            return True
        raise NotOurReplica(
            f"{target.dest_url} was written again while being deleted (etag {now_there.etag}, "
            f"not {existing.etag}): a newer version is not deleted"
        ) from None
    return True


def _check_ours(
    existing: ObjectMeta, target: Target, source_url: str, replica_etag: str | None
) -> None:
    if replica_source(existing.attributes.user_metadata) != source_url:
        raise NotOurReplica(f"{target.dest_url} is not a replica of {source_url}; not deleting it")
    if replica_etag is not None and existing.etag != replica_etag:
        raise NotOurReplica(
            f"{target.dest_url} was written again since its deletion was decided (etag "
            f"{existing.etag}, not {replica_etag}): a newer version is not deleted"
        )


@dataclass
class SweepReport:
    deleted: int = 0
    cancelled: int = 0
    retained: int = 0
    deferred: int = 0
    errors: list[str] = field(default_factory=list)


class DeletionSweeper:
    """Carries out deletions once due (scheduled by a delayed policy, or held back by a pause
    that has been lifted), checking again that the source is still gone and that the replica
    is the one whose deletion was decided.

    Every daemon runs one; each deletion is claimed in the catalog first (its due time moves
    ``lease`` ahead), so concurrent sweepers do not both act on it and a sweeper that dies
    leaves it due again when the lease ends. Deletions of a route whose deletions are paused
    are left unclaimed; one that cannot be done now (store unreachable) is tried again after
    the lease.
    """

    def __init__(
        self,
        router: Router,
        catalog: Catalog,
        stores: Callable[[str], ObjectStore],
        guard: DeleteGuard,
        retry: RetryPolicy,
        *,
        interval: timedelta = timedelta(minutes=1),
        lease: timedelta = timedelta(minutes=5),
        batch: int = 500,
        ledger: CostLedger | None = None,
        group_deleted: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.router = router
        # Told of every member object a group's delayed deletion removes, so that the member's
        # store's notice of it is known as the group's own (``GroupArbiter.deleted``).
        self.group_deleted = group_deleted
        self.catalog = catalog
        self.stores = stores
        # Counts each deletion's requests for its route and destination.
        self.ledger = ledger
        self.guard = guard
        self.retry = retry
        self.interval = interval
        self.lease = lease
        self.batch = batch

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                report = await self.sweep()
                if report.deleted or report.cancelled or report.retained:
                    log.info(
                        "scheduled deletions swept",
                        deleted=report.deleted,
                        cancelled=report.cancelled,
                        retained=report.retained,
                        deferred=report.deferred,
                    )
            except Exception as exc:
                # The catalog being unreachable for a while must not stop the daemon.
                log.error("deletion sweep failed; trying again later", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        """Act on every deletion due at ``now`` (default: the current time)."""
        now = now or datetime.now(UTC)
        report = SweepReport()
        for item in await self.catalog.due_deletes(now, limit=self.batch):
            target = self._target(item)
            if target is not None and await self.guard.is_paused(target.route):
                report.deferred += 1
                continue
            if not await self.catalog.claim_delete(item, now + self.lease):
                continue
            try:
                if target is None:
                    await self._settle(item, target, now, report)
                else:
                    url = target.destination.url
                    location = self.stores(url).location
                    with attributed(self.ledger, target.route.name, url, location):
                        await self._settle(item, target, now, report)
            except RoutePaused:
                # The limit was reached meanwhile: due again as soon as it is lifted.
                report.deferred += 1
                claimed = dataclasses.replace(item, due=now + self.lease)
                await self.catalog.claim_delete(claimed, now)
            except Exception as exc:
                report.deferred += 1
                report.errors.append(f"{item.url}: {exc}")
                log.warning(
                    "scheduled deletion deferred",
                    replica=item.url,
                    error=str(exc),
                    retry_after_s=self.lease.total_seconds(),
                )
        return report

    def _target(self, item: ScheduledDelete) -> Target | None:
        return next(
            (t for t in self.router.targets(item.source_url) if t.destination.url == item.location),
            None,
        )

    async def _settle(
        self, item: ScheduledDelete, target: Target | None, now: datetime, report: SweepReport
    ) -> None:
        if target is None or target.route.delete_policy == "never":
            why = (
                "no route replicates the source here any more"
                if target is None
                else f"route {target.route.name!r} now keeps replicas (delete_policy = never)"
            )
            await self.catalog.settle_delete(item, ReplicaState.RETAINED, when=now, error=why)
            report.retained += 1
            return
        source = self.stores(target.route.source)
        try:
            await self.retry.run(lambda: source.head(target.relative_key), what="head source")
        except NotFound:
            pass
        else:
            await self.catalog.settle_delete(
                item,
                ReplicaState.STALE,
                when=now,
                error="the source exists again; the scheduled deletion was cancelled",
            )
            report.cancelled += 1
            return
        dest = self.stores(target.destination.url)
        try:
            await delete_replica(
                dest, target, item.source_url, self.guard, replica_etag=item.replica_etag, now=now
            )
        except NotOurReplica as exc:
            await self.catalog.settle_delete(item, ReplicaState.STALE, when=now, error=str(exc))
            report.cancelled += 1
            return
        if target.route.group is not None and self.group_deleted is not None:
            await self.group_deleted(target.dest_url)
        await self.catalog.settle_delete(item, ReplicaState.DELETED, when=now)
        report.deleted += 1
        log.info("scheduled deletion done", replica=item.url, due=item.due.isoformat())
