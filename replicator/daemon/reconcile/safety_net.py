"""The daemon's safety net: a periodic reconciliation that catches lost events.

Every ``[reconcile] interval``, one daemon of the group (the holder of the ``reconcile`` lease
in the catalog, renewed while it works and kept for an interval after) compares each route's
source with its destinations (the streamed compare of ``engine``; each member of a
replication group with every other, ``members``) and publishes a change
event for every key that drifted: missing or stale at a destination, or a replica whose
source is gone (its deletion's event was lost). The fleet applies those events as any other,
in per-key order (one writer per key): the applier repairs a key even when its high-water
came from a notification, and a deletion follows the route's delete policy and its
per-minute limit (``DeleteGuard``). Each run's findings are recorded in the catalog
(``reconcile_runs``) and counted in Prometheus
(``replicator_reconcile_drift_total`` by route and kind).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from connectors.base import ObjectStore
from replicator.catalog import Catalog
from replicator.catalog.reconciliation import ReconcileRun
from replicator.daemon.metrics import DaemonMetrics
from replicator.daemon.reconcile.actions import PublishActions
from replicator.daemon.reconcile.engine import Options, Reconciler, Tally
from replicator.engine.costs import CostLedger, attributed
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.rules import Route, Router

log = structlog.get_logger(__name__)

LEASE = "reconcile"
#: How long the lease outlives its holder's last renewal (a daemon that died mid-run).
LEASE_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class SafetyNetSettings:
    interval: timedelta
    max_delete: int = 10_000
    transfers: int = 16


class SafetyNet:
    def __init__(
        self,
        router: Router,
        catalog: Catalog,
        stores: Callable[[str], ObjectStore],
        publisher: Publisher,
        settings: SafetyNetSettings,
        *,
        metrics: DaemonMetrics | None = None,
        holder: str | None = None,
        ledger: CostLedger | None = None,
    ) -> None:
        self.router = router
        self.catalog = catalog
        self.stores = stores
        self.publisher = publisher
        self.settings = settings
        self.metrics = metrics
        # Its listings are counted as the route's requests (``replicator.engine.costs``).
        self.ledger = ledger
        self.holder = holder or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every ``interval`` (the first time one interval after the start) until
        ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval.total_seconds())
            if stop.is_set():
                return
            try:
                await self.reconcile()
            except Exception as exc:
                log.error("reconciliation failed; trying again next interval", error=str(exc))

    async def reconcile(self) -> list[ReconcileRun]:
        """One reconciliation of every route, if this daemon holds the lease."""
        if not await self.catalog.take_lease(LEASE, self.holder, LEASE_TTL):
            log.debug("another daemon holds the reconciliation lease")
            return []
        runs: list[ReconcileRun] = []
        renewing = asyncio.create_task(self._renew())
        try:
            for route in self.router.config.routes:
                runs.append(await self._reconcile(route))
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        # Kept for an interval: the group's other daemons, whose timers run on their own,
        # skip this interval's reconciliation instead of repeating it; the holder renews it
        # at its next run, and if it dies the lease expires and another daemon takes over.
        await self.catalog.take_lease(LEASE, self.holder, self.settings.interval)
        return runs

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL.total_seconds() / 3)
            if not await self.catalog.take_lease(LEASE, self.holder, LEASE_TTL):
                log.error("the reconciliation lease was lost; another daemon took it")

    async def _reconcile(self, route: Route) -> ReconcileRun:
        started = datetime.now(UTC)
        source = self.stores(route.source)
        reconciler = Reconciler(
            source,
            [self.stores(d.url) for d in route.destinations],
            PublishActions(self.publisher, source),
            Options(
                transfers=self.settings.transfers,
                delete=True,
                max_delete=self.settings.max_delete,
            ),
            checkpoints=self.catalog,
            checkpoint_name=f"safety-net/{route.name}",
            group=route.group,
        )
        error: str | None = None
        try:
            with attributed(self.ledger, route.name):
                tally = await reconciler.run()
        except Exception as exc:
            tally, error = reconciler.tally, str(exc)[:2000]
            log.error("reconciliation of a route failed", route=route.name, error=error)
        run = _run(route.name, self.holder, started, tally, error)
        await self.catalog.record_reconcile_run(run)
        self._export(run)
        if run.missing or run.different or run.extra:
            log.warning(
                "drift found and repairs published",
                route=route.name,
                missing=run.missing,
                different=run.different,
                extra=run.extra,
                repairs=run.repairs,
            )
        return run

    def _export(self, run: ReconcileRun) -> None:
        if self.metrics is None:
            return
        for kind in ("missing", "different", "extra"):
            self.metrics.reconcile_drift.labels(run.route, kind).inc(getattr(run, kind))
        outcome = "failed" if run.error or run.failed else "ok"
        self.metrics.reconcile_runs.labels(run.route, outcome).inc()
        self.metrics.reconcile_last_run.labels(run.route).set(run.finished_at.timestamp())


def _run(
    route: str, holder: str, started: datetime, tally: Tally, error: str | None
) -> ReconcileRun:
    return ReconcileRun(
        route=route,
        holder=holder,
        started_at=started,
        finished_at=datetime.now(UTC),
        compared=tally.compared,
        in_sync=tally.in_sync,
        missing=tally.missing,
        different=tally.different,
        extra=tally.extra,
        repairs=tally.published,
        failed=tally.failed,
        error=error,
    )
