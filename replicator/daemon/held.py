"""Pausing replication to a destination for the whole fleet, and handing the changes held in
the catalog meanwhile back to Kafka once it is resumed.

An operator pauses a route, or one destination of it (``replicator pause``, or ``POST
/controls/pauses``); the pause lives in the catalog. Every daemon reads the pauses at most
``PAUSES_TTL_S`` old (``ReplicationPauses``): while a destination is paused, the applier
copies and deletes nothing there and marks the event's change ``held`` in the catalog (still
to do: its lag grows, its watermark stays), and the worker moves the Kafka offset on.

Every daemon runs a ``HeldChangesRunner``: once a destination is no longer paused (resumed by
hand, or its ``until`` passed, whichever daemon is alive notices), it hands the held changes
back to Kafka: it publishes a change event per held change to the changes topic, keyed by the
source URL like every change event, and the owner of the key's partition applies it in the
key's order (``replicator.pipeline.ownership``). So a held change and a newer change of its
key are never written by two daemons at once, and an older version never lands after a newer
one. The same runner hands over the failed changes an operator sent back (``replicator failed
retry``), and, on its own, the failed changes whose retry budget was spent on retriable
errors (a store throttling or unreachable for longer than the budget's backoff) once
``retry_failed_after`` has passed since their last failure: an outage that outlasts the budget
converges without an operator, while a failure retrying cannot mend (its budget not spent: it
went to the failed list at once) waits for one.

The event carries the held change's own stored sequencer, so the worker finds it the key's
newest change (a duplicate, applied again) unless a newer change was accepted since; it is
marked as a listing's event (origin ``scan``), so that if the key's high-water moved past it
while a replica does not hold the source's current state, it is applied as a repair ordered
after that high-water (``Applier``: repairs win over event order). Applying it reads the
source afresh, as for any event; a destination paused again (or still paused in the owner's
view of the pauses, at most ``PAUSES_TTL_S`` old) holds it again, to be published again.

Each held change is claimed in the catalog with a lease before it is published, so the fleet
publishes it once per lease (the rows of one change held at several destinations are taken
by one daemon and published as one event); it stays ``held`` (pending: its lag grows, its
watermark stays) until the worker applies it, and is published again if it still is once the
lease ends (a duplicate is harmless: events are hints). If Kafka does not take it, the claim
is given back after ``retry_after`` and it is published again then. The worker retries a
change that fails at its destination like any event; past the retry budget it is in the
failed list again. A held change whose destination no route has any more is put in the
failed list, not published.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter, Gauge

from replicator.catalog import Catalog, HeldChange, Pause
from replicator.pipeline.bus import CHANGES_TOPIC, AsyncProducer, BusError
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ingest.publisher import send_change
from replicator.pipeline.rules import Router

log = structlog.get_logger(__name__)

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
        # One read at a time: the copies of a burst all find the view stale at once.
        self._reading = asyncio.Lock()

    async def refresh(self, *, force: bool = False) -> dict[str, Pause]:
        """Destination URL -> the pause in force there."""
        if not force and time.monotonic() - self._read_at < PAUSES_TTL_S:
            return self.paused
        async with self._reading:
            if not force and time.monotonic() - self._read_at < PAUSES_TTL_S:
                return self.paused  # read by another task meanwhile
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
    """Hands held changes whose destination is not paused to their key's partition owner
    (see the module's docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        pauses: ReplicationPauses,
        router: Router,
        producer: AsyncProducer,
        *,
        changes_topic: str = CHANGES_TOPIC,
        interval: timedelta = timedelta(seconds=1),
        lease: timedelta = timedelta(minutes=5),
        retry_after: timedelta = timedelta(seconds=10),
        batch: int = 200,
        retry_failed_after: timedelta | None = None,
        retry_budget: int = 1,
        retried_counter: Counter | None = None,
    ) -> None:
        self.catalog = catalog
        self.pauses = pauses
        self.router = router
        self.producer = producer
        self.changes_topic = changes_topic
        self.interval = interval
        self.lease = lease
        self.retry_after = retry_after
        self.batch = batch
        self.retry_failed_after = retry_failed_after
        self.retry_budget = retry_budget
        self.retried_counter = retried_counter

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            taken = 0
            try:
                taken = await self.run_once()
            except Exception as exc:
                # The catalog being unreachable for a while must not stop the daemon.
                log.error("handing over held changes failed; trying again later", error=str(exc))
            if taken < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval.total_seconds())

    async def run_once(self, now: datetime | None = None) -> int:
        """Publish the held changes takeable at ``now``; returns how many were taken (those
        Kafka did not take are given back, to be taken again after ``retry_after``)."""
        now = now or datetime.now(UTC)
        for pause in await self.catalog.end_expired_pauses(now):
            log.warning(
                "scheduled resume: pause ended",
                route=pause.route,
                destination=pause.destination or None,
                scope=str(pause.scope),
                until=pause.until.isoformat() if pause.until else None,
            )
        if self.retry_failed_after is not None:
            await self._retry_spent_budgets(now - self.retry_failed_after)
        paused = await self.pauses.refresh(force=True)
        routes = {(p.route, p.destination) for p in paused.values()}
        found = await self.catalog.held_changes(now, paused=routes, limit=self.batch)
        # One event applies a change at every destination of its route: the rows of one
        # change held at several destinations share it.
        changes: defaultdict[tuple[str, str], list[HeldChange]] = defaultdict(list)
        for item in found:
            changes[item.source_url, item.sequencer].append(item)
        until = now + self.lease
        taken = 0
        handing: list[list[HeldChange]] = []
        for rows in changes.values():
            claimed = await self._claim(rows, now, until)
            taken += len(claimed)
            routed = [item for item in claimed if await self._still_routed(item)]
            if routed:
                handing.append(routed)
        await asyncio.gather(*(self._hand_over(items) for items in handing))
        return taken

    async def _retry_spent_budgets(self, failed_before: datetime) -> None:
        sent = await self.catalog.retry_failed(
            min_attempts=self.retry_budget, failed_before=failed_before, limit=self.batch
        )
        if not sent:
            return
        for item in sent:
            if self.retried_counter is not None:
                self.retried_counter.labels(item.dataset, item.location).inc()
        log.warning(
            "failed changes sent back to be applied again",
            changes=len(sent),
            examples=[item.url for item in sent[:5]],
        )

    async def _claim(
        self, rows: Sequence[HeldChange], now: datetime, until: datetime
    ) -> list[HeldChange]:
        """Claim the rows of one change in order, up to the first another daemon holds: the
        daemon that takes a change's first row then takes the others, and the change is
        published once."""
        claimed = []
        for item in rows:
            if not await self.catalog.claim_held(item, now, until):
                break
            claimed.append(item)
        return claimed

    async def _still_routed(self, item: HeldChange) -> bool:
        targets = self.router.targets(item.source_url)
        if any(t.destination.url == item.location for t in targets):
            return True
        await self.catalog.mark_failed(
            item.change, item.location, "no route replicates this source there any more"
        )
        log.error("held change has no route any more; it is in the failed list", replica=item.url)
        return False

    async def _hand_over(self, items: Sequence[HeldChange]) -> None:
        event = held_event(items[0])
        try:
            await send_change(
                self.producer,
                self.changes_topic,
                event,
                self.router.ordering_key(event.source_url),
            )
        except BusError as exc:
            not_before = datetime.now(UTC) + self.retry_after
            for item in items:
                await self.catalog.defer_held(item, not_before)
            log.warning(
                "held change not published; trying again later",
                source=event.source_url,
                retry_after_s=self.retry_after.total_seconds(),
                error=str(exc),
            )
            return
        log.info(
            "held change handed to its partition's owner",
            source=event.source_url,
            destinations=[item.location for item in items],
        )


def held_event(item: HeldChange) -> ChangeEvent:
    """The change event that has ``item`` applied by its key's partition owner: its very
    change (the stored sequencer), marked as a listing's so that it repairs a replica the
    key's newer high-water would otherwise leave behind (see the module's docstring)."""
    return ChangeEvent(
        kind="delete" if item.deleted else "put",
        source_url=item.source_url,
        version=item.version,
        sequencer=item.sequencer,
        size=item.size,
        etag=None,
        event_time=item.event_time,
        origin="scan",
    )
