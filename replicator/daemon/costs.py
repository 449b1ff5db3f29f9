"""Cost accounting in the daemon (and in ``backfill``): the ledger's counts
(``replicator.engine.costs``) priced by the price table (``reconcile.pricing``), exported as
Prometheus counters at each scrape, and added to the catalog's daily totals in batches.

A batch is written every ``[costs] flush_interval`` (and when the daemon stops), in one
transaction, not one per request; its rows go to the day (UTC) of the flush, so a batch
counted just before midnight lands on the next day. A batch the catalog could not take is
kept and added to the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Metric
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from replicator.catalog import Catalog
from replicator.catalog.model import CostRow
from replicator.daemon.reconcile.pricing import Price, cost_of
from replicator.engine.costs import CLASSES, CostLedger, Usage, UsageKey
from replicator.errors import Unavailable

log = structlog.get_logger(__name__)


def price_rows(
    usages: Mapping[UsageKey, Usage], prices: Mapping[str, Price], now: datetime
) -> list[CostRow]:
    """The catalog rows of a batch counted up to ``now``, each with its estimated cost."""
    day = now.astimezone(UTC).date()
    return [
        CostRow(day, key, usage, cost_of(prices, key.scheme, usage).total_usd)
        for key, usage in sorted(usages.items())
    ]


class CostCounters(Collector):
    """The ledger's totals since the process started, read at each scrape."""

    def __init__(
        self, ledger: CostLedger | None = None, prices: Mapping[str, Price] | None = None
    ) -> None:
        self.ledger = ledger or CostLedger()
        self.prices: Mapping[str, Price] = prices or {}

    def collect(self) -> Iterator[Metric]:
        labels = ["route", "destination", "store"]
        requests = CounterMetricFamily(
            "replicator_store_requests",
            "Requests sent to a store for a route and destination (destination '' for the "
            "route's own work: the source's heads, listings), by class: get, put (objects, "
            "parts, creating and completing uploads), list (one page), head, delete, copy "
            "(server-side).",
            labels=[*labels, "class"],
        )
        read = CounterMetricFamily(
            "replicator_store_read_bytes",
            "Object bytes read from a store (GET bodies) for a route and destination.",
            labels=labels,
        )
        written = CounterMetricFamily(
            "replicator_store_written_bytes",
            "Object bytes written to a store (PUT bodies) for a route and destination.",
            labels=labels,
        )
        egress = CounterMetricFamily(
            "replicator_store_egress_bytes",
            "Bytes read from a store at another provider or region than the destination they "
            "were read for (server-side copies move none).",
            labels=labels,
        )
        cost = CounterMetricFamily(
            "replicator_estimated_cost_usd",
            "Estimated cost in US dollars of a route's requests and egress at a store, from "
            "the price table (requests at the store's prices, egress at its egress price).",
            labels=labels,
        )
        for key, usage in sorted(self.ledger.totals().items()):
            values = [key.route, key.destination, key.store]
            for kind in CLASSES:
                requests.add_metric([*values, kind.value], usage.count(kind))
            read.add_metric(values, usage.bytes_read)
            written.add_metric(values, usage.bytes_written)
            egress.add_metric(values, usage.egress_bytes)
            cost.add_metric(values, cost_of(self.prices, key.scheme, usage).total_usd)
        yield from (requests, read, written, egress, cost)


class CostFlusher:
    """Adds what the ledger counted to the catalog's daily totals, a batch at a time."""

    def __init__(
        self,
        ledger: CostLedger,
        catalog: Catalog,
        prices: Mapping[str, Price],
        *,
        interval: timedelta = timedelta(minutes=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.catalog = catalog
        self.prices = prices
        self.interval = interval
        self.clock = clock

    async def flush(self) -> int:
        """Write what was counted since the last flush; returns the rows written (0 when the
        catalog is unavailable: the batch is kept for the next flush)."""
        drained = self.ledger.drain()
        if not drained:
            return 0
        rows = price_rows(drained, self.prices, self.clock())
        try:
            await self.catalog.add_costs(rows)
        except Unavailable as exc:
            self.ledger.restore(drained)
            log.warning("cost totals kept for the next flush", error=str(exc))
            return 0
        except BaseException:
            self.ledger.restore(drained)
            raise
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every ``interval`` until ``stop``, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())
            await self.flush()
