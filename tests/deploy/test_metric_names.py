"""Every metric the Grafana dashboard and the KEDA trigger query is one the daemon exports:
the names are read from the daemon's own Prometheus registry, the queries parsed as PromQL."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest

from replicator.daemon.metrics import DaemonMetrics, exported_names
from tests.deploy.conftest import DEPLOY, EVERYTHING, by_kind, documents, render

DASHBOARD = DEPLOY / "grafana" / "replicator-dashboard.json"
# Grafana's interval variables stand where PromQL wants a duration.
_GRAFANA_DURATIONS = re.compile(r"\$__(rate_)?interval|\$__range")


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query selects."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(_GRAFANA_DURATIONS.sub("5m", query)), visit)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), *\w+\)", str(variable.get("definition", "")))
        if match:
            queries.append(match.group(1))
    return queries


def keda_queries() -> list[str]:
    scaled = by_kind(documents(render(EVERYTHING)))["ScaledObject"]
    return [t["metadata"]["query"] for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exported_names(DaemonMetrics().registry)


def test_parser_finds_every_selector() -> None:
    """The extraction itself: names inside functions, aggregations and binary operators."""
    query = 'time() - max by (r) (a_seconds{x="$v"}) + sum(rate(b_total[$__rate_interval]))'
    assert metric_names(query) == {"a_seconds", "b_total"}


def test_dashboard_uses_only_exported_metrics(exported: set[str]) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    used = set().union(*(metric_names(q) for q in queries))
    assert used - exported == set()
    # The panels the dashboard promises: lag, watermark, throughput, DLQ, deletes, failures.
    for name in (
        "replicator_replication_latency_seconds_bucket",
        "replicator_watermark_timestamp_seconds",
        "replicator_events_applied_total",
        "replicator_events_dead_lettered_total",
        "replicator_deletes_scheduled",
        "replicator_operations_failed_total",
    ):
        assert name in used


def test_keda_prometheus_trigger_uses_only_exported_metrics(exported: set[str]) -> None:
    queries = keda_queries()
    assert queries
    used = set().union(*(metric_names(q) for q in queries))
    assert used
    assert used - exported == set()


def test_a_misspelt_metric_is_caught(exported: set[str]) -> None:
    """The check can fail: a name the code does not export is reported."""
    assert metric_names("rate(replicator_events_aplied_total[5m])") - exported == {
        "replicator_events_aplied_total"
    }
