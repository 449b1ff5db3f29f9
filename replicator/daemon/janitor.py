"""Abandoned multipart uploads: a daemon killed mid-copy leaves an open upload (S3 parts, GCS
part objects under ``.replicator-uploads/``, an Azure upload marker with uncommitted blocks, a
file store's staging directory). A copy of the same version redone later resumes it, and one of
a newer version aborts it (``engine.transfer``); the janitor finds the rest: every
``[uploads] sweep_interval`` it lists the open uploads at each route destination, exports how
many there are, and aborts (and forgets in the journal) those older than ``abandon_after`` by
the store's account and by the journal's, where it has one.
It also forgets journal rows that old whose upload the store no longer has: a daemon killed
between completing an upload and forgetting it (or a catalog that refused the forgetting)
leaves one, and no later copy needs it (a copy of that key finds the replica in place).

Several daemons may sweep at once: aborting an upload twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter, Gauge

from connectors.base import NotSupported, ObjectStore, StoreError
from replicator.catalog.journal import CatalogJournal
from replicator.engine.costs import CostLedger, attributed
from replicator.pipeline.rules import Router

log = structlog.get_logger(__name__)


@dataclass
class JanitorReport:
    open: dict[str, int] = field(default_factory=dict)
    aborted: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class UploadJanitor:
    def __init__(
        self,
        router: Router,
        stores: Callable[[str], ObjectStore],
        journal: CatalogJournal,
        *,
        interval: timedelta,
        abandon_after: timedelta,
        open_gauge: Gauge | None = None,
        aborted_counter: Counter | None = None,
        ledger: CostLedger | None = None,
    ) -> None:
        self.router = router
        self.stores = stores
        self.journal = journal
        self.interval = interval
        self.abandon_after = abandon_after
        self.open_gauge = open_gauge
        self.aborted_counter = aborted_counter
        self.ledger = ledger

    def destinations(self) -> list[str]:
        return sorted({d.url for r in self.router.config.routes for d in r.destinations})

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                report = await self.sweep()
                if report.aborted:
                    log.info("abandoned uploads aborted", uploads=report.aborted)
                if report.forgotten:
                    log.info("journal rows of finished uploads forgotten", uploads=report.forgotten)
            except Exception as exc:
                log.error("upload sweep failed; trying again later", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())

    async def sweep(self, now: datetime | None = None) -> JanitorReport:
        """List every destination's open uploads; abort those started before
        ``now - abandon_after``."""
        now = now or datetime.now(UTC)
        cutoff = now - self.abandon_after
        report = JanitorReport()
        for destination in self.destinations():
            store = self.stores(destination)
            # A destination's housekeeping is no one route's: counted under the route "".
            with attributed(self.ledger, "", destination, store.location):
                await self._sweep(destination, store, cutoff, report)
        return report

    async def _sweep(
        self, destination: str, store: ObjectStore, cutoff: datetime, report: JanitorReport
    ) -> None:
        try:
            uploads = [upload async for upload in store.list_multipart_uploads()]
        except NotSupported:
            return
        except StoreError as exc:
            report.errors.append(f"{destination}: {exc}")
            return
        remaining = len(uploads)
        # The journal's start of an upload counts too: a store may report an earlier one than
        # the truth (moto reports every upload as started in 2010), and a striped upload's
        # parts may still be on their way from the whole group.
        journaled = await self.journal.started_since(store.url_for(""), cutoff)
        for upload in uploads:
            # An upload whose start the store does not report may be a live copy's.
            if upload.initiated is None or upload.initiated > cutoff:
                continue
            if (store.url_for(upload.key), upload.upload_id) in journaled:
                continue
            try:
                await store.abort_multipart(upload.key, upload.upload_id)
            except StoreError as exc:
                report.errors.append(f"{store.url_for(upload.key)}: {exc}")
                continue
            await self.journal.forget(store.url_for(upload.key), upload.upload_id)
            remaining -= 1
            report.aborted.append(f"{store.url_for(upload.key)} ({upload.upload_id})")
            if self.aborted_counter is not None:
                self.aborted_counter.labels(destination).inc()
        # Listed before the journal is read: a row started since is younger than the cutoff.
        still_open = {(store.url_for(upload.key), upload.upload_id) for upload in uploads}
        for dest_url, upload_id in await self.journal.stale(store.url_for(""), cutoff):
            if (dest_url, upload_id) not in still_open:
                await self.journal.forget(dest_url, upload_id)
                report.forgotten.append(f"{dest_url} ({upload_id})")
        report.open[destination] = remaining
        if self.open_gauge is not None:
            self.open_gauge.labels(destination).set(remaining)
