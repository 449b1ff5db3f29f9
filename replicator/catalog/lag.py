"""Consistency lag per replication route (source location -> destination location).

The figures follow S3 Replication Time Control's four (replication latency, operations pending,
bytes pending, operations failed) and add p50/p99 latency, the age of the oldest pending change
and a watermark. Definitions:

* latency of one replica: the destination store's time of the verified write minus the source
  store's event time (both store clocks; clock skew between stores can make it slightly
  negative, which is counted as zero);
* pending: changes accepted and not yet applied and verified (pending, failed or stale rows);
  failed is the part of them whose last attempt failed;
* watermark T: every accepted source change with event time < T is replicated and verified.
  It is the event time of the oldest unapplied change, or, with nothing unapplied, the newest
  applied event time. A change superseded by a newer change of the same key before it was
  copied counts as unapplied until the newer one is applied.

This module is pure apart from the Prometheus metric objects, which live in a registry passed
in (gauges mirror the shared catalog, so every daemon exports the same values; counters and the
histogram count what this process did, and add up across daemons).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DEFAULT_SLO = timedelta(minutes=15)
#: A hold on a route's watermark that means "nothing can be promised yet" (a notification
#: queue never seen empty): the route has no watermark while it stands.
NO_PROMISE = datetime.min.replace(tzinfo=UTC)
# Replication latency spans seconds (small objects, same region) to hours (backlogs).
LATENCY_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True, order=True)
class Route:
    source: str
    destination: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}"


def nearest_rank(count: int, quantile: float) -> int:
    """The 0-based index of the ``quantile`` of ``count`` sorted values (nearest-rank method:
    the smallest value with at least that fraction of values at or below it)."""
    if count <= 0:
        raise ValueError("no values")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile {quantile} is not within [0, 1]")
    return max(0, math.ceil(quantile * count) - 1)


def percentile(sorted_values: Sequence[float], quantile: float) -> float | None:
    """The nearest-rank ``quantile`` of already sorted values; None for no values."""
    if not sorted_values:
        return None
    return sorted_values[nearest_rank(len(sorted_values), quantile)]


def watermark(
    oldest_unapplied: datetime | None, newest_applied: datetime | None
) -> datetime | None:
    """The route's watermark from the oldest unapplied and the newest applied event times."""
    if oldest_unapplied == NO_PROMISE:
        return None
    return oldest_unapplied if oldest_unapplied is not None else newest_applied


@dataclass(frozen=True)
class RouteLag:
    """The consistency figures of one route at one moment."""

    route: Route
    pending_ops: int
    pending_bytes: int
    failed_ops: int
    replicated_ops: int
    latency_max_seconds: float | None
    latency_p50_seconds: float | None
    latency_p99_seconds: float | None
    slo_missed: int
    oldest_pending: datetime | None
    watermark: datetime | None
    deletes_scheduled: int = 0
    next_delete_due: datetime | None = None

    def delete_overdue_seconds(self, now: datetime) -> float:
        """How long the earliest scheduled deletion has been due (0: none is due yet)."""
        if self.next_delete_due is None:
            return 0.0
        return max(0.0, (now - self.next_delete_due).total_seconds())

    def oldest_pending_age(self, now: datetime) -> float | None:
        if self.oldest_pending is None:
            return None
        return max(0.0, (now - self.oldest_pending).total_seconds())

    def as_dict(self, now: datetime) -> dict[str, object]:
        return {
            "route": str(self.route),
            "source": self.route.source,
            "destination": self.route.destination,
            "operations_pending": self.pending_ops,
            "bytes_pending": self.pending_bytes,
            "operations_failed": self.failed_ops,
            "operations_replicated": self.replicated_ops,
            "replication_latency_seconds": self.latency_max_seconds,
            "latency_p50_seconds": self.latency_p50_seconds,
            "latency_p99_seconds": self.latency_p99_seconds,
            "slo_missed": self.slo_missed,
            "oldest_pending_age_seconds": self.oldest_pending_age(now),
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "deletes_scheduled": self.deletes_scheduled,
            "next_delete_due": self.next_delete_due.isoformat() if self.next_delete_due else None,
        }


class LagMetrics:
    """The Prometheus side of the lag figures, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.latency = Histogram(
            "replicator_replication_latency_seconds",
            "Source event time to verified destination write, per replicated change.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.failed = Counter(
            "replicator_operations_failed",
            "Replication attempts that failed.",
            ["route"],
            registry=registry,
        )
        self.slo_missed = Counter(
            "replicator_slo_missed",
            "Changes replicated later than the latency objective.",
            ["route"],
            registry=registry,
        )
        self.pending = Gauge(
            "replicator_operations_pending",
            "Accepted source changes not yet replicated and verified.",
            ["route"],
            registry=registry,
        )
        self.pending_bytes = Gauge(
            "replicator_bytes_pending",
            "Bytes of the source changes not yet replicated and verified.",
            ["route"],
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "replicator_oldest_pending_age_seconds",
            "Age of the oldest source change not yet replicated and verified.",
            ["route"],
            registry=registry,
        )
        self.watermark = Gauge(
            "replicator_watermark_timestamp_seconds",
            "Every source change with an earlier event time is replicated and verified.",
            ["route"],
            registry=registry,
        )
        self.deletes_scheduled = Gauge(
            "replicator_deletes_scheduled",
            "Replica deletions a delayed delete policy has scheduled and not yet carried out.",
            ["route"],
            registry=registry,
        )
        self.delete_overdue = Gauge(
            "replicator_delete_overdue_seconds",
            "How long the earliest scheduled deletion has been due (0: none is due).",
            ["route"],
            registry=registry,
        )
        self._routes: set[str] = set()

    def observe_replicated(self, route: Route, lag_seconds: float, *, missed_slo: bool) -> None:
        self.latency.labels(str(route)).observe(max(0.0, lag_seconds))
        if missed_slo:
            self.slo_missed.labels(str(route)).inc()

    def observe_failed(self, route: Route) -> None:
        self.failed.labels(str(route)).inc()

    def update(self, lags: Sequence[RouteLag], now: datetime) -> None:
        """Set the gauges from the catalog's current figures; routes gone lose their series."""
        current = {str(lag.route) for lag in lags}
        for gone in self._routes - current:
            for gauge in (
                self.pending,
                self.pending_bytes,
                self.oldest_pending_age,
                self.watermark,
                self.deletes_scheduled,
                self.delete_overdue,
            ):
                try:
                    gauge.remove(gone)
                except KeyError:
                    continue
        self._routes = current
        for lag in lags:
            name = str(lag.route)
            self.pending.labels(name).set(lag.pending_ops)
            self.pending_bytes.labels(name).set(lag.pending_bytes)
            age = lag.oldest_pending_age(now)
            self.oldest_pending_age.labels(name).set(age or 0.0)
            self.deletes_scheduled.labels(name).set(lag.deletes_scheduled)
            self.delete_overdue.labels(name).set(lag.delete_overdue_seconds(now))
            if lag.watermark is None:
                try:
                    self.watermark.remove(name)
                except KeyError:
                    continue
            else:
                self.watermark.labels(name).set(lag.watermark.timestamp())
