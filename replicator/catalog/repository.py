"""The catalog's repository API: one ``Catalog`` over one open database (SQLite or
PostgreSQL), composed of the parts in the sibling modules:

* ``base``: the database and the index of datasets and locations;
* ``writes``: accepting source changes and recording replicas (the concurrency rules are there);
* ``deletions``: the queue of delayed (and paused) deletions;
* ``controls``: pauses and the fleet-wide delete budget;
* ``held``: changes waiting in the catalog to be published again (held by a pause, or sent
  back from the failed list);
* ``queries``: listings, locate, export, checkpoints;
* ``lag_queries``: what is behind, and each route's lag and watermark;
* ``reconciliation``: leases and the findings of periodic reconciliations;
* ``costs``: daily totals of the requests, bytes and estimated cost per route.
* ``conflicts``: the conflicts of replication groups.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Self

from replicator.catalog.base import MAX_LIST, _Index
from replicator.catalog.batching import GroupCommit
from replicator.catalog.conflicts import ConflictRecords
from replicator.catalog.controls import RouteControls
from replicator.catalog.costs import CostRecords
from replicator.catalog.database import Database, open_database
from replicator.catalog.deletions import ScheduledDeletions
from replicator.catalog.held import HeldChanges
from replicator.catalog.journal import CatalogJournal
from replicator.catalog.lag import DEFAULT_SLO, LagMetrics
from replicator.catalog.lag_queries import LagQueries
from replicator.catalog.queries import CatalogQueries
from replicator.catalog.reconciliation import ReconcileRecords
from replicator.catalog.writes import ReplicaWrites, _Write

__all__ = ["MAX_LIST", "Catalog", "open_catalog"]


async def open_catalog(
    url: str,
    *,
    metrics: LagMetrics | None = None,
    slo: timedelta = DEFAULT_SLO,
) -> Catalog:
    """Open (creating or migrating as needed) the catalog at ``url``."""
    database = await open_database(url)
    return Catalog(database, metrics=metrics, slo=slo)


class Catalog(
    ReplicaWrites,
    ScheduledDeletions,
    RouteControls,
    HeldChanges,
    CatalogQueries,
    LagQueries,
    ReconcileRecords,
    CostRecords,
    ConflictRecords,
):
    """The repository API over one open catalog database."""

    def __init__(
        self,
        database: Database,
        *,
        metrics: LagMetrics | None = None,
        slo: timedelta = DEFAULT_SLO,
    ) -> None:
        self.database = database
        self.metrics = metrics
        self.slo = slo
        self._index: _Index | None = None
        self._statements: dict[str, Any] = {}
        self._writes: GroupCommit[_Write] = GroupCommit(self._apply)

    @property
    def url(self) -> str:
        return self.database.display_url

    async def close(self) -> None:
        await self._writes.close()
        await self.database.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def journal(self) -> CatalogJournal:
        """An UploadJournal for the copy engine, persisted in this catalog."""
        return CatalogJournal(self.database)
