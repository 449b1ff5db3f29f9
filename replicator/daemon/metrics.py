"""Everything the daemon exports on ``/metrics``, built in one registry.

* the catalog's figures (``replicator.catalog.lag.LagMetrics``): replication latency,
  failures, and per-route gauges read from the shared catalog at each scrape;
* ``replicator_route_deletes_paused`` (set by the deletion guard),
  ``replicator_destination_paused`` (set from the replication pauses) and
  ``replicator_route_healthy`` (set by the routes' health);
* this daemon's event counters: changes applied, sent to the DLQ, retried;
* its cost accounting (``replicator.daemon.costs``): requests by class, bytes read, written
  and leaving a provider or region, and their estimated cost, per route, destination and
  store;
* the process itself (CPU, memory, open files, garbage collections, Python version).

``deploy/`` (the Grafana dashboard, the KEDA trigger) uses only names exported here; a test
reads them from :func:`exported_names` so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Metric,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from replicator.catalog.lag import LagMetrics
from replicator.daemon.costs import CostCounters
from replicator.pipeline.worker import WorkerStats


class EventCounters(Collector):
    """Counters of this daemon's worker, read from its stats at each scrape."""

    def __init__(self) -> None:
        self.stats = WorkerStats()

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        yield CounterMetricFamily(
            "replicator_events_applied",
            "Change events this daemon applied (copied, deleted, or found already done).",
            value=stats.applied,
        )
        yield CounterMetricFamily(
            "replicator_events_dead_lettered",
            "Change events this daemon sent to the dead-letter topic.",
            value=stats.dead_lettered,
        )
        yield CounterMetricFamily(
            "replicator_events_failed_unexpectedly",
            "Change events whose processing raised an unexpected error (a bug, or input "
            "nobody foresaw); each was dead-lettered with the error.",
            value=stats.failed_unexpectedly,
        )
        yield CounterMetricFamily(
            "replicator_events_retried",
            "Retries of change events after a retriable failure.",
            value=stats.retries,
        )


class DaemonMetrics:
    """The daemon's registry and the metric objects that record into it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lag = LagMetrics(self.registry)
        self.deletes_paused = Gauge(
            "replicator_route_deletes_paused",
            "1 while a route's deletions are paused (its delete limit was exceeded, or an "
            "operator paused them).",
            ["route"],
            registry=self.registry,
        )
        self.destination_paused = Gauge(
            "replicator_destination_paused",
            "1 while replication to a destination is paused by an operator (replicator pause), "
            "else 0; its changes are held in the catalog meanwhile.",
            ["route", "destination"],
            registry=self.registry,
        )
        self.uploads_open = Gauge(
            "replicator_uploads_open",
            "Multipart uploads open at a destination at the last sweep (copies in progress, "
            "and abandoned ones still to abort).",
            ["destination"],
            registry=self.registry,
        )
        self.uploads_aborted = Counter(
            "replicator_uploads_aborted",
            "Abandoned multipart uploads this daemon aborted.",
            ["destination"],
            registry=self.registry,
        )
        self.failed_retried = Counter(
            "replicator_failed_changes_retried",
            "Failed changes this daemon sent back to be applied on its own, once their retry "
            "budget was spent on retriable errors ([copy] retry_failed_after ago).",
            ["route", "destination"],
            registry=self.registry,
        )
        self.stripe_parts = Counter(
            "replicator_stripe_parts",
            "Part tasks of striped copies this daemon took, by outcome: copied, dropped (the "
            "upload gone, halted or the part already there), halted (the source changed or "
            "the part failed: the upload stops for the group).",
            ["outcome"],
            registry=self.registry,
        )
        self.route_healthy = Gauge(
            "replicator_route_healthy",
            "0 while a route's source or destination cannot be used (bucket missing, access "
            "refused), else 1.",
            ["route"],
            registry=self.registry,
        )
        self.reconcile_drift = Counter(
            "replicator_reconcile_drift",
            "Keys the periodic reconciliation found out of sync, by kind (missing, different, "
            "extra: a replica whose source is gone).",
            ["route", "kind"],
            registry=self.registry,
        )
        self.reconcile_runs = Counter(
            "replicator_reconcile_runs",
            "Periodic reconciliations of a route this daemon ran, by outcome (ok, failed).",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.reconcile_last_run = Gauge(
            "replicator_reconcile_last_run_timestamp_seconds",
            "When this daemon last finished a reconciliation of the route.",
            ["route"],
            registry=self.registry,
        )
        self.events = EventCounters()
        self.registry.register(self.events)
        self.costs = CostCounters()
        self.registry.register(self.costs)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry`` can expose, including the ``_total``, ``_bucket``,
    ``_count``, ``_sum`` and ``_created`` series of counters and histograms, whether or not
    a labelled series has been recorded yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "unknown": ("",),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
        names.update(sample.name for sample in family.samples)
    return names
