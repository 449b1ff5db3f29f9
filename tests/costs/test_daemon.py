"""Cost accounting in the daemon: ``replicator scan`` publishes a source's listing, the daemon
copies it from S3 to GCS and Azure through counting proxies; its Prometheus counters show the
requests while it runs, and once stopped the catalog's totals (flushed every second, and at
the stop) equal what each store served through the proxies, readiness checks included."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from connectors import open_store
from replicator.catalog import open_catalog
from replicator.daemon.config import load_daemon_config
from replicator.daemon.service import Daemon
from replicator.devstack import StackState, environment
from replicator.devstack.stack import azurite_connection_string
from tests.costs.proxy import CountingProxy
from tests.costs.workload import LARGE, S3, SMALL, mismatches, per_store, run

PAYLOADS = SMALL | LARGE


async def test_the_daemons_counts_match_what_the_stores_served(
    devstack: StackState, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    source, gcs, azure = f"s3://src-{suffix}/", f"gs://dst-{suffix}/", f"az://dst-{suffix}/"
    config = tmp_path / "replicator.toml"
    config.write_text(f"""
[kafka]
bootstrap = "{devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"]}"
group = "g-{suffix}"
partitions = 2
changes_topic = "c-{suffix}"
dlq_topic = "d-{suffix}"
session_timeout_ms = 2000
heartbeat_interval_ms = 300

[catalog]
url = "sqlite:///{tmp_path}/catalog.db"

[http]
host = "127.0.0.1"
port = 0

[copy]
part_size = "1MiB"

[health]
interval = "1s"

[costs]
flush_interval = "1s"

[[routes]]
name = "lake"
source = "{source}"
destinations = ["{gcs}", "{azure}"]
""")
    # The test's own stores reach the emulators directly: opened (and their clients made)
    # before the daemon's environment names the proxies.
    src, g, a = open_store(source), open_store(gcs), open_store(azure)
    for store in (src, g, a):
        await store.create_container()
    for key, data in PAYLOADS.items():
        await src.put(key, data)
    direct = dict(os.environ)
    upstream = devstack.env
    azure_port = devstack.components["azure"].port
    async with (
        CountingProxy(upstream["AWS_ENDPOINT_URL"], flavour="s3") as s3_proxy,
        CountingProxy(upstream["STORAGE_EMULATOR_HOST"], flavour="gcs") as gcs_proxy,
        CountingProxy(f"http://127.0.0.1:{azure_port}", flavour="azure") as azure_proxy,
    ):
        proxied = {
            "AWS_ENDPOINT_URL": s3_proxy.url,
            "STORAGE_EMULATOR_HOST": gcs_proxy.url,
            "AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(azure_proxy.port),
        }
        with environment(proxied):
            daemon = Daemon(load_daemon_config(config))
            stop, ready = asyncio.Event(), asyncio.Event()
            running = asyncio.create_task(daemon.run(stop, ready))
            try:
                await asyncio.wait_for(ready.wait(), 60)
                # The scan lists the source directly: its requests are neither the daemon's
                # nor seen by the proxies.
                await run(direct, "scan", "--config", str(config))
                for _ in range(1200):
                    found = [[m.key async for m in dest.list()] for dest in (g, a)]
                    if all(sorted(keys) == sorted(PAYLOADS) for keys in found):
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"not replicated in time: {found}")
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{daemon.http_port}/metrics") as response,
                ):
                    exposition = await response.text()
            finally:
                stop.set()
                await asyncio.wait_for(running, 60)
    for store in (src, g, a):
        await store.close()

    puts = {
        sample.labels["destination"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "replicator_store_requests_total"
        and sample.labels["class"] == "put"
        and sample.labels["store"] in ("gs", "az")
        and sample.value
    }
    assert set(puts) == {gcs, azure}
    assert all(count >= len(PAYLOADS) for count in puts.values())

    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    try:
        rows = [row.as_dict() for row in await catalog.costs(datetime.now(UTC).date())]
    finally:
        await catalog.close()
    assert {row["route"] for row in rows} == {"lake", ""}  # "": the readiness checks
    totals = per_store(rows)
    served = {S3: s3_proxy.counts, "gs": gcs_proxy.counts, "az": azure_proxy.counts}
    for location, counts in served.items():
        assert mismatches(totals[location], counts) == [], (location, totals[location], counts)
    assert totals[S3]["egress_bytes"] == s3_proxy.counts.bytes_read
