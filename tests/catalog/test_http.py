"""The read-only HTTP API and /metrics, served by a real aiohttp server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from replicator.catalog import Catalog
from replicator.catalog.http import create_app
from tests.catalog.conftest import DatasetFactory, store_url
from tests.catalog.test_replicas import change, verified


@pytest.fixture
async def client(catalog: Catalog) -> AsyncIterator[TestClient[object, object]]:
    assert catalog.metrics is not None
    async with TestClient(TestServer(create_app(catalog, catalog.metrics))) as http:
        yield http


async def test_queries_answer_json(
    catalog: Catalog, make_dataset: DatasetFactory, client: TestClient[object, object]
) -> None:
    """Datasets, objects (any key, paged), locate (preferring a region; 404 with no fresh copy),
    stale and status answer JSON; bad requests are 400 and unknown names 404."""
    ds = await make_dataset()
    gs = store_url(ds, "gs")
    odd = "dir/a b?c#d%2F.json"
    for n, key in enumerate([odd, "dir/z.json"]):
        c = change(ds, key, 1, at=n)
        await catalog.record_replica(c, gs, verified(c))
    await catalog.mark_pending(change(ds, "dir/z.json", 2, at=9))

    datasets = await (await client.get("/datasets")).json()
    assert ds.name in {d["name"] for d in datasets["datasets"]}
    page = await (
        await client.get("/objects", params={"dataset": ds.name, "prefix": "dir/", "limit": "1"})
    ).json()
    assert [o["key"] for o in page["objects"]] == [odd]
    assert page["next_after"] == odd
    rest = await (await client.get("/objects", params={"dataset": ds.name, "after": odd})).json()
    assert [o["key"] for o in rest["objects"]] == ["dir/z.json"]
    assert rest["next_after"] is None

    found = await client.get(
        "/locate", params={"dataset": ds.name, "key": odd, "prefer": "europe-west1"}
    )
    assert (await found.json())["url"] == gs + odd
    behind = await client.get(
        "/locate", params={"dataset": ds.name, "key": "dir/z.json", "prefer": "gs"}
    )
    assert (await behind.json())["role"] == "source"
    missing = await client.get("/locate", params={"dataset": ds.name, "key": "nope"})
    assert missing.status == 404

    stale = await (await client.get("/stale", params={"destination": gs})).json()
    assert [(r["key"], r["state"]) for r in stale["replicas"]] == [("dir/z.json", "pending")]
    status = await (await client.get("/status", params={"window": "30d"})).json()
    assert any(r["destination"] == gs and r["operations_pending"] == 1 for r in status["routes"])

    assert (await client.get("/objects")).status == 400
    assert (await client.get("/objects", params={"dataset": "no-such"})).status == 404
    assert (await client.get("/status", params={"window": "soon"})).status == 400
    assert (await client.post("/datasets")).status == 405


async def test_metrics_expose_route_gauges_from_the_catalog(
    catalog: Catalog, make_dataset: DatasetFactory, client: TestClient[object, object]
) -> None:
    """A scrape refreshes the route gauges from the catalog and includes the latency
    histogram of what this process recorded."""
    ds = await make_dataset(replicas=1)
    gs = store_url(ds, "gs")
    done, todo = change(ds, "a", 1), change(ds, "b", 1, at=5, size=4096)
    await catalog.record_replica(done, gs, verified(done))
    await catalog.mark_pending(todo)
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    route = f'route="{ds.sources[0].url} -> {gs}"'
    assert f"replicator_operations_pending{{{route}}} 1.0" in text
    assert f"replicator_bytes_pending{{{route}}} 4096.0" in text
    watermark = f"replicator_watermark_timestamp_seconds{{{route}}} "
    [line] = [line for line in text.splitlines() if line.startswith(watermark)]
    assert float(line.removeprefix(watermark)) == todo.event_time.timestamp()
    assert f"replicator_replication_latency_seconds_count{{{route}}} 1.0" in text
