"""Deleting replicas: the per-route safety limit, the guarded deletion itself, and the sweeper
that carries out deletions a route's delayed delete policy scheduled.

A replica is deleted only if it carries this product's replica mark naming the deleted source
object, only with an If-Match on the version just checked (a replica rewritten in between is
left alone), and at most ``max_deletes_per_minute`` times a minute per route.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import CollectorRegistry, Gauge

from connectors.base import NotFound, ObjectStore
from replicator.catalog import Catalog, ReplicaState, ScheduledDelete
from replicator.engine.metadata import replica_source
from replicator.engine.retry import RetryPolicy
from replicator.pipeline.rules import Route, Router, Target
from replicator.pipeline.worker import PermanentFailure

log = structlog.get_logger(__name__)


class RoutePaused(PermanentFailure):
    """The route went past its deletion limit; its deletions wait for an operator."""


class NotOurReplica(PermanentFailure):
    """The object at the destination is not a replica of the deleted source object."""


class DeleteGuard:
    """At most ``limit`` deletions per minute per route; past it the route's deletions stop
    until an operator looks (they go to the DLQ, nothing is deleted)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._recent: dict[str, deque[float]] = {}
        self.paused: set[str] = set()
        self._paused_gauge = (
            Gauge(
                "replicator_route_deletes_paused",
                "1 while a route's deletions are paused for exceeding max_deletes_per_minute.",
                ["route"],
                registry=registry,
            )
            if registry is not None
            else None
        )

    def admit(self, route: Route) -> None:
        if route.name in self.paused:
            raise RoutePaused(f"route {route.name!r} is paused: delete limit exceeded")
        window = self._recent.setdefault(route.name, deque())
        now = time.monotonic()
        while window and now - window[0] > 60:
            window.popleft()
        if len(window) >= route.max_deletes_per_minute:
            self.paused.add(route.name)
            if self._paused_gauge is not None:
                self._paused_gauge.labels(route.name).set(1)
            log.error(
                "delete limit exceeded; pausing deletions of the route",
                route=route.name,
                limit=route.max_deletes_per_minute,
                alert=True,
            )
            raise RoutePaused(
                f"route {route.name!r} exceeded {route.max_deletes_per_minute} deletes per "
                "minute; deletions paused"
            )
        window.append(now)


async def delete_replica(
    dest: ObjectStore, target: Target, source_url: str, guard: DeleteGuard
) -> bool:
    """Delete the replica of ``source_url`` at ``target``; False if nothing is there."""
    try:
        existing = await dest.head(target.relative_key)
    except NotFound:
        return False
    if replica_source(existing.attributes.user_metadata) != source_url:
        raise NotOurReplica(f"{target.dest_url} is not a replica of {source_url}; not deleting it")
    guard.admit(target.route)
    try:
        await dest.delete(target.relative_key, if_match=existing.etag)
    except NotFound:
        return False
    return True


@dataclass
class SweepReport:
    deleted: int = 0
    cancelled: int = 0
    retained: int = 0
    deferred: int = 0
    errors: list[str] = field(default_factory=list)


class DeletionSweeper:
    """Carries out scheduled deletions once due, checking again that the source is still gone.

    Every daemon runs one; each deletion is claimed in the catalog first (its due time moves
    ``lease`` ahead), so concurrent sweepers do not both act on it and a sweeper that dies
    leaves it due again when the lease ends. A deletion that cannot be done now (route paused,
    store unreachable, replica changed meanwhile) is simply tried again after the lease.
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
    ) -> None:
        self.router = router
        self.catalog = catalog
        self.stores = stores
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
            if not await self.catalog.claim_delete(item, now + self.lease):
                continue
            try:
                await self._settle(item, now, report)
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

    async def _settle(self, item: ScheduledDelete, now: datetime, report: SweepReport) -> None:
        target = next(
            (t for t in self.router.targets(item.source_url) if t.destination.url == item.location),
            None,
        )
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
            await delete_replica(dest, target, item.source_url, self.guard)
        except NotOurReplica as exc:
            await self.catalog.settle_delete(item, ReplicaState.STALE, when=now, error=str(exc))
            report.cancelled += 1
            return
        await self.catalog.settle_delete(item, ReplicaState.DELETED, when=now)
        report.deleted += 1
        log.info("scheduled deletion done", replica=item.url, due=item.due.isoformat())
