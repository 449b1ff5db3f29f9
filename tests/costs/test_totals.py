"""Daily cost totals in the catalog (SQLite and PostgreSQL): batches from several flushes and
daemons add up per day, route, destination and store; ``replicator catalog costs`` and
``replicator status`` show them; the Prometheus counters and the price model."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner, Result

from connectors import open_store
from connectors.base import RequestClass, StoreRequest
from replicator.catalog import Catalog, open_catalog
from replicator.catalog.cli import catalog_app, status_command
from replicator.daemon.costs import CostFlusher
from replicator.daemon.metrics import DaemonMetrics
from replicator.daemon.reconcile.pricing import DEFAULT_PRICES, cost_of, estimate, load_prices
from replicator.devstack import StackState
from replicator.engine.costs import CostLedger, Usage
from tests.catalog.conftest import DatasetFactory, unique
from tests.catalog.test_replicas import change, verified
from tests.conftest import unique_name

app = typer.Typer()
app.add_typer(catalog_app, name="catalog")
app.command("status")(status_command)


async def run(*args: str) -> Result:
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def counted(ledger: CostLedger, route: str, destination: str, *requests: StoreRequest) -> None:
    """What a connector would report, as it reports it."""
    location = "gs" if destination.startswith("gs://") else "az"
    observe = ledger.observer(route, destination, location)
    for request in requests:
        observe(request)


S3_GET = StoreRequest("s3:us-east-1", RequestClass.GET, bytes_received=1_000_000)
GS_PUT = StoreRequest("gs", RequestClass.PUT, bytes_sent=1_000_000)


async def test_batches_add_up_per_day_and_show_in_costs_and_status(
    catalog: Catalog, catalog_url: str
) -> None:
    route, other = unique("route-"), unique("route-")
    gs = f"gs://{unique('b')}/"
    ledger = CostLedger()
    now = datetime.now(UTC)
    days = iter([now - timedelta(days=3), now, now])
    flusher = CostFlusher(ledger, catalog, DEFAULT_PRICES, clock=lambda: next(days))

    counted(ledger, route, gs, S3_GET, GS_PUT)
    assert await flusher.flush() == 2  # three days ago
    counted(ledger, route, gs, S3_GET, S3_GET, GS_PUT)
    ledger.observer(route)(StoreRequest("s3:us-east-1", RequestClass.LIST))
    assert await flusher.flush() == 3
    counted(ledger, other, gs, GS_PUT)
    assert await flusher.flush() == 1
    assert await flusher.flush() == 0  # nothing new: no batch

    listed = await run("catalog", "costs", "--since", "7d", "--catalog", catalog_url, "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = [r for r in rows if r["route"] in (route, other)]
    assert len(mine) == 2 + 3 + 1
    today = [r for r in mine if r["day"] == now.date().isoformat() and r["route"] == route]
    at_s3 = {r["destination"]: r for r in today if r["store"] == "s3:us-east-1"}
    assert at_s3[gs]["get_requests"] == 2
    assert at_s3[gs]["bytes_read"] == at_s3[gs]["egress_bytes"] == 2_000_000
    assert at_s3[""]["list_requests"] == 1
    # Two GETs at S3's read price and 2 MB of egress at its egress price.
    assert at_s3[gs]["cost_usd"] == pytest.approx(2 * 0.0004 / 1000 + 0.002 * 0.09)

    only = await run(
        "catalog", "costs", "--since", "1d", "--route", route, "--catalog", catalog_url, "--json"
    )
    assert {json.loads(line)["day"] for line in only.stdout.splitlines()} == {
        now.date().isoformat()
    }
    assert {json.loads(line)["route"] for line in only.stdout.splitlines()} == {route}

    table = (await run("catalog", "costs", "--route", route, "--catalog", catalog_url)).stdout
    assert "EGRESS BYTES" in table
    assert "(route)" in table
    totals = table.split("totals since")[1]
    # Three days ago and today together: three GETs, 3 MB of egress.
    assert any(route in line and "3000000" in line for line in totals.splitlines())

    status = await run("status", "--catalog", catalog_url)
    assert "costs today" in status.stdout
    assert route in status.stdout
    assert other in status.stdout


async def test_status_json_carries_each_destinations_costs_today(
    catalog: Catalog, catalog_url: str, make_dataset: DatasetFactory
) -> None:
    dataset = await make_dataset()
    replica = dataset.replicas[0].url
    done = change(dataset, "k", 1)
    await catalog.record_replica(done, replica, verified(done))
    ledger, route = CostLedger(), unique("route-")
    counted(ledger, route, replica, S3_GET)
    ledger.observer(route)(StoreRequest("s3:us-east-1", RequestClass.LIST))
    await CostFlusher(ledger, catalog, DEFAULT_PRICES).flush()
    status = await run("status", "--json", "--catalog", catalog_url)
    lines = {line["destination"]: line for line in map(json.loads, status.stdout.splitlines())}
    spent = lines[replica]["costs_today"]
    assert (spent["get_requests"], spent["list_requests"]) == (1, 0)
    assert spent["egress_bytes"] == 1_000_000
    # The route's totals take in its own work (the listing) too.
    whole = lines[replica]["route_costs_today"][route]
    assert (whole["get_requests"], whole["list_requests"]) == (1, 1)
    assert whole["cost_usd"] > spent["cost_usd"]


async def test_a_batch_the_catalog_cannot_take_is_kept_for_the_next(tmp_path: Path) -> None:
    """A SQLite catalog locked by another process past its busy timeout: the flush gives up
    and keeps the batch; the next flush writes it with what was counted since."""
    path = tmp_path / "catalog.db"
    catalog = await open_catalog(f"sqlite:///{path}?busy_timeout=200ms")
    try:
        ledger = CostLedger()
        flusher = CostFlusher(ledger, catalog, DEFAULT_PRICES)
        counted(ledger, "r", "gs://b/", S3_GET)
        locked, release = threading.Event(), threading.Event()
        holder = asyncio.create_task(asyncio.to_thread(hold_lock, path, locked, release))
        await asyncio.to_thread(locked.wait)
        try:
            assert await flusher.flush() == 0
        finally:
            release.set()
            await holder
        counted(ledger, "r", "gs://b/", S3_GET)
        assert await flusher.flush() == 1
        [row] = await catalog.costs(datetime.now(UTC).date())
        assert (row.usage.count(RequestClass.GET), row.usage.egress_bytes) == (2, 2_000_000)
    finally:
        await catalog.close()


def hold_lock(path: Path, locked: threading.Event, release: threading.Event) -> None:
    """Another process's transaction holding the SQLite write lock until ``release``."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(60)
        connection.execute("COMMIT")
    finally:
        connection.close()


async def test_prometheus_counters_count_real_requests(devstack: StackState) -> None:
    metrics = DaemonMetrics()
    ledger = metrics.costs.ledger
    metrics.costs.prices = DEFAULT_PRICES
    source, dest = f"s3://{unique_name()}/", f"gs://{unique_name()}/"
    async with open_store(source) as src, open_store(dest) as dst:
        await src.create_container()
        await dst.create_container()
        await src.put("k", b"x" * 5000)
        with ledger.attribute("r", dest, dst.location):
            await dst.put("k", await src.read("k"))
            await src.delete("k")
    samples = {
        (sample.name, sample.labels.get("store"), sample.labels.get("class")): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
        if sample.labels.get("route") == "r" and sample.labels.get("destination") == dest
    }
    s3 = "s3:us-east-1"
    requests = "replicator_store_requests_total"
    assert samples[(requests, s3, "get")] == 1
    assert samples[(requests, s3, "delete")] == 1
    assert samples[(requests, s3, "put")] == 0
    assert samples[(requests, "gs", "put")] == 1
    assert samples[("replicator_store_read_bytes_total", s3, None)] == 5000
    assert samples[("replicator_store_egress_bytes_total", s3, None)] == 5000
    assert samples[("replicator_store_egress_bytes_total", "gs", None)] == 0
    # The upload's body: the object and its JSON resource, as GCS receives it.
    assert samples[("replicator_store_written_bytes_total", "gs", None)] > 5000
    assert samples[("replicator_estimated_cost_usd_total", s3, None)] == pytest.approx(
        0.0004 / 1000 + 5000 / 1e9 * 0.09
    )
    assert samples[("replicator_estimated_cost_usd_total", "gs", None)] == pytest.approx(
        0.005 / 1000
    )


def test_the_dry_run_estimate_is_the_same_model() -> None:
    """``estimate`` is the predicted usage at each end priced by ``cost_of``, and overrides
    apply to both."""
    prices = load_prices(overrides={"s3": {"egress_per_gb": 0.02}})
    found = estimate(prices, "s3", "az", listed=2500, copies=10, copy_bytes=200 * 1024 * 1024)
    source = Usage(
        requests={RequestClass.LIST: 3, RequestClass.GET: 10}, egress_bytes=200 * 1024 * 1024
    )
    dest = Usage(requests={RequestClass.LIST: 3, RequestClass.PUT: 10})
    expected = cost_of(prices, "s3", source).total_usd + cost_of(prices, "az", dest).total_usd
    assert found.total_usd == pytest.approx(expected)
    assert found.egress_usd == pytest.approx(200 * 1024 * 1024 / 1e9 * 0.02)
    # DELETE is free, HEAD a read, COPY a write.
    free = Usage(requests={RequestClass.DELETE: 1000})
    assert cost_of(prices, "s3", free).total_usd == 0
    heads = Usage(requests={RequestClass.HEAD: 1000, RequestClass.COPY: 1000})
    assert cost_of(prices, "s3", heads).requests_usd == pytest.approx(0.0004 + 0.005)
