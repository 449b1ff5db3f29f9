"""Lag computations (pure) and the Prometheus metric objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from replicator.catalog.lag import LagMetrics, Route, RouteLag, nearest_rank, percentile, watermark

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0, 1))
def test_percentile_is_a_value_with_that_share_at_or_below(values: list[float], q: float) -> None:
    """The nearest-rank percentile is one of the values; at least a fraction q of the values
    are at or below it, and fewer than that are strictly below it."""
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    assert sum(v <= p for v in ordered) >= q * len(ordered)
    assert sum(v < p for v in ordered) < max(q * len(ordered), 1)


def test_percentile_edges() -> None:
    """p50 and p99 of 1..100 are 50 and 99; nothing gives None; bad arguments raise."""
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        nearest_rank(3, 1.5)
    with pytest.raises(ValueError, match="no values"):
        nearest_rank(0, 0.5)


def test_watermark_prefers_the_oldest_unapplied_change() -> None:
    """With anything unapplied the watermark is its oldest event time, else the newest applied
    one, else unknown."""
    assert watermark(T0, T0 + timedelta(hours=1)) == T0
    assert watermark(None, T0) == T0
    assert watermark(None, None) is None


def _lag(route: Route, *, pending: int, mark: datetime | None) -> RouteLag:
    return RouteLag(
        route=route,
        pending_ops=pending,
        pending_bytes=pending * 10,
        failed_ops=0,
        replicated_ops=1,
        latency_max_seconds=2.0,
        latency_p50_seconds=1.0,
        latency_p99_seconds=2.0,
        slo_missed=0,
        oldest_pending=T0 if pending else None,
        watermark=mark,
    )


def test_gauges_follow_the_catalog_and_drop_routes_that_are_gone() -> None:
    """Gauges hold the latest figures per route; a route no longer reported loses its series;
    the exposition uses the conventional names."""
    registry = CollectorRegistry()
    metrics = LagMetrics(registry)
    a, b = Route("s3://l/x/", "gs://m/x/"), Route("s3://l/x/", "az://l/x/")
    now = T0 + timedelta(seconds=90)
    metrics.update([_lag(a, pending=3, mark=T0), _lag(b, pending=0, mark=None)], now)
    labels = {"route": str(a)}
    assert registry.get_sample_value("replicator_operations_pending", labels) == 3
    assert registry.get_sample_value("replicator_bytes_pending", labels) == 30
    assert registry.get_sample_value("replicator_oldest_pending_age_seconds", labels) == 90
    assert registry.get_sample_value("replicator_watermark_timestamp_seconds", labels) == (
        T0.timestamp()
    )
    assert (
        registry.get_sample_value("replicator_watermark_timestamp_seconds", {"route": str(b)})
        is None
    )
    metrics.update([_lag(b, pending=1, mark=T0)], now)
    assert registry.get_sample_value("replicator_operations_pending", labels) is None
    assert registry.get_sample_value("replicator_operations_pending", {"route": str(b)}) == 1
    metrics.observe_replicated(b, -0.5, missed_slo=False)
    metrics.observe_failed(b)
    text = generate_latest(registry).decode()
    for name in (
        "replicator_replication_latency_seconds_bucket",
        "replicator_operations_failed_total",
        "replicator_watermark_timestamp_seconds",
    ):
        assert name in text
    # Clock skew between stores never shows as negative latency.
    assert (
        registry.get_sample_value("replicator_replication_latency_seconds_sum", {"route": str(b)})
        == 0.0
    )
