"""Pausing replication to a destination for the whole fleet, and applying the changes held in
the catalog meanwhile.

An operator pauses a route, or one destination of it (``replicator pause``, or ``POST
/controls/pauses``); the pause lives in the catalog. Every daemon reads the pauses at most
``PAUSES_TTL_S`` old (``ReplicationPauses``): while a destination is paused, the applier
copies and deletes nothing there and marks the event's change ``held`` in the catalog (still
to do: its lag grows, its watermark stays), and the worker moves the Kafka offset on.

Every daemon runs a ``HeldChangesRunner``: once a destination is no longer paused (resumed by
hand, or its ``until`` passed, whichever daemon is alive notices), it applies the held changes
from their catalog rows, reading each source afresh, without going back to Kafka. The same
runner applies failed changes an operator sent back (``replicator failed retry``). Each held
change is claimed in the catalog with a lease, so daemons apply it once and one that dies
leaves it to the others; a change that fails again waits a backoff, and after
``retry_budget`` attempts it stays in the failed list.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Gauge

from connectors.base import StoreError
from replicator.catalog import Catalog, HeldChange, Pause, ReplicaState
from replicator.engine.retry import RetryPolicy
from replicator.errors import Unavailable
from replicator.pipeline.rules import Router

log = structlog.get_logger(__name__)

# Applies one held change at its destination (``Applier.apply_held``); returns what happened.
HeldApply = Callable[[HeldChange], Awaitable[str]]

# How long a daemon trusts what it last read of the replication pauses: a pause or a resume
# reaches every daemon within this time.
PAUSES_TTL_S = 2.0


class ReplicationPauses:
    """The destinations whose replication is paused, as the catalog said at most
    ``PAUSES_TTL_S`` ago; sets ``replicator_destination_paused`` for the router's
    destinations."""

    def __init__(
        self, catalog: Catalog, router: Router | None = None, gauge: Gauge | None = None
    ) -> None:
        self.catalog = catalog
        self.router = router
        self.gauge = gauge
        self.paused: dict[str, Pause] = {}
        self._read_at = float("-inf")

    async def refresh(self, *, force: bool = False) -> dict[str, Pause]:
        """Destination URL -> the pause in force there."""
        if force or time.monotonic() - self._read_at >= PAUSES_TTL_S:
            self.paused = await self.catalog.paused_destinations()
            self._read_at = time.monotonic()
            self._export()
        return self.paused

    async def pause_of(self, destination: str) -> Pause | None:
        return (await self.refresh()).get(destination)

    def _export(self) -> None:
        if self.gauge is None or self.router is None:
            return
        for route in self.router.config.routes:
            for dest in route.destinations:
                self.gauge.labels(route.name, dest.url).set(1 if dest.url in self.paused else 0)


class HeldChangesRunner:
    """Applies held changes whose destination is not paused (see the module's docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        pauses: ReplicationPauses,
        apply: HeldApply,
        *,
        retry_budget: int,
        backoff: RetryPolicy | None = None,
        interval: timedelta = timedelta(seconds=1),
        lease: timedelta = timedelta(minutes=5),
        batch: int = 200,
        concurrency: int = 16,
    ) -> None:
        self.catalog = catalog
        self.pauses = pauses
        self.apply = apply
        self.retry_budget = retry_budget
        self.backoff = backoff or RetryPolicy(base_delay=1.0, max_delay=300.0)
        self.interval = interval
        self.lease = lease
        self.batch = batch
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            applied = 0
            try:
                applied = await self.run_once()
            except Exception as exc:
                # The catalog being unreachable for a while must not stop the daemon.
                log.error("applying held changes failed; trying again later", error=str(exc))
            if applied < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval.total_seconds())

    async def run_once(self, now: datetime | None = None) -> int:
        """Apply the held changes takeable at ``now``; returns how many were taken."""
        now = now or datetime.now(UTC)
        for pause in await self.catalog.end_expired_pauses(now):
            log.warning(
                "scheduled resume: pause ended",
                route=pause.route,
                destination=pause.destination or None,
                scope=str(pause.scope),
                until=pause.until.isoformat() if pause.until else None,
            )
        paused = await self.pauses.refresh(force=True)
        routes = {(p.route, p.destination) for p in paused.values()}
        found = await self.catalog.held_changes(now, paused=routes, limit=self.batch)
        until = now + self.lease
        taken = [item for item in found if await self.catalog.claim_held(item, now, until)]
        await asyncio.gather(*(self._apply(item) for item in taken))
        return len(taken)

    async def _apply(self, item: HeldChange) -> None:
        async with self._slots:
            try:
                outcome = await self.apply(item)
            except Unavailable as exc:
                # The lease ends and the change is taken again, by this daemon or another.
                log.warning("held change not applied: a service is unavailable", error=str(exc))
                return
            except Exception as exc:
                await self._failed(item, exc)
                return
        log.info("held change applied", replica=item.url, outcome=outcome)

    async def _failed(self, item: HeldChange, exc: Exception) -> None:
        """The applier recorded the failed attempt (the row is ``failed``): within the budget
        it is held again after a backoff; past it, it stays in the failed list."""
        attempts = item.attempts + 1
        retriable = isinstance(exc, StoreError) and exc.retriable
        if retriable and attempts < self.retry_budget:
            delay = self.backoff.base_delay * 2 ** (attempts - 1)
            delay = min(self.backoff.max_delay, random.uniform(delay / 2, delay))
            not_before = datetime.now(UTC) + timedelta(seconds=delay)
            failed = dataclasses.replace(item, state=ReplicaState.FAILED)
            await self.catalog.hold_again(failed, not_before)
            log.warning(
                "held change failed; trying again",
                replica=item.url,
                attempt=attempts,
                delay=round(delay, 3),
                error=str(exc),
            )
            return
        log.error(
            "held change failed; it is in the failed list (replicator failed retry)",
            replica=item.url,
            attempts=attempts,
            error=str(exc),
        )
