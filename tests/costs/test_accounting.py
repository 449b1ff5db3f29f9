"""Cost accounting end to end: ``replicator backfill`` (a process of its own) copies from S3
to GCS and Azure through counting proxies in front of the emulators, then deletes; what it
counted and wrote to the catalog (``replicator catalog costs``) must match the requests and
bytes each store actually served, class by class, within 1%."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from connectors import open_store
from replicator.daemon.reconcile.pricing import DEFAULT_PRICES, cost_of
from replicator.devstack import StackState
from replicator.devstack.stack import azurite_connection_string
from replicator.engine.costs import Usage
from tests.conftest import unique_name
from tests.costs.proxy import CountingProxy
from tests.costs.workload import LARGE, S3, SMALL, mismatches, per_store, run, within


async def test_counted_requests_and_bytes_match_what_the_stores_served(
    devstack: StackState, tmp_path: Path
) -> None:
    source, gcs, azure = (f"{s}://{unique_name()}/" for s in ("s3", "gs", "az"))
    async with open_store(source) as src, open_store(gcs) as g, open_store(azure) as a:
        for store in (src, g, a):
            await store.create_container()
        for key, data in {**SMALL, **LARGE}.items():
            await src.put(key, data)
    config = tmp_path / "replicator.toml"
    config.write_text(
        f'routes = []\n[catalog]\nurl = "sqlite:///{tmp_path}/catalog.db"\n'
        '[copy]\npart_size = "1MiB"\nmemory = "64MiB"\n'
    )
    upstream = devstack.env
    azure_port = devstack.components["azure"].port
    async with (
        CountingProxy(upstream["AWS_ENDPOINT_URL"], flavour="s3") as s3_proxy,
        CountingProxy(upstream["STORAGE_EMULATOR_HOST"], flavour="gcs") as gcs_proxy,
        CountingProxy(f"http://127.0.0.1:{azure_port}", flavour="azure") as azure_proxy,
    ):
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": s3_proxy.url,
            "STORAGE_EMULATOR_HOST": gcs_proxy.url,
            "AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(azure_proxy.port),
        }
        urls = (source, gcs, azure)
        copied = json.loads(await run(env, "backfill", *urls, "--config", str(config), "--json"))
        [(route, summary)] = copied.items()
        assert summary["copied"] == 2 * len(SMALL | LARGE)
        # A source deleted: both replicas go (DELETE requests), the rest is found in sync.
        async with open_store(source) as src:
            await src.delete("small/000.bin")
        deleted = json.loads(
            await run(env, "backfill", *urls, "--delete", "--config", str(config), "--json")
        )
        assert deleted[route]["deleted"] == 2

        listed = await run(
            env, "catalog", "costs", "--since", "1d", "--config", str(config), "--json"
        )
    rows = [json.loads(line) for line in listed.splitlines()]
    assert {row["route"] for row in rows} == {route}
    totals = per_store(rows)
    assert set(totals) == {S3, "gs", "az"}
    served = {S3: s3_proxy.counts, "gs": gcs_proxy.counts, "az": azure_proxy.counts}
    for location, counts in served.items():
        assert sum(counts.requests.values()) > 20, (location, counts)
        assert mismatches(totals[location], counts) == [], (location, totals[location], counts)
    # Every byte read from S3 left AWS for GCS or Azure; nothing read at a destination did.
    assert within(totals[S3]["egress_bytes"], s3_proxy.counts.bytes_read)
    assert totals["gs"]["egress_bytes"] == totals["az"]["egress_bytes"] == 0
    # The copies' bytes are counted for the destination they were read for; the source's
    # listings and heads for the route itself.
    by_destination = {row["destination"]: row for row in rows if row["store"] == S3}
    assert by_destination[""]["egress_bytes"] == 0
    assert by_destination[""]["list_requests"] > 0
    assert {d for d, row in by_destination.items() if row["egress_bytes"]} == {gcs, azure}
    # The workload had what it was meant to: multipart uploads (GCS upload sessions, each
    # created, sent and completed; Azure blocks beyond one per object) and deletes at both
    # destinations.
    assert gcs_proxy.counts.requests["put"] >= len(SMALL) + 3 * len(LARGE)
    assert azure_proxy.counts.requests["put"] > len(SMALL | LARGE)
    assert gcs_proxy.counts.requests["delete"] >= 1
    assert azure_proxy.counts.requests["delete"] >= 1
    # Each row's cost is its counts at the default prices.
    for row in rows:
        usage = Usage.of({k: v for k, v in row.items() if isinstance(v, int)})
        expected = cost_of(DEFAULT_PRICES, str(row["store"]).partition(":")[0], usage)
        assert row["cost_usd"] == pytest.approx(expected.total_usd)
    assert sum(row["cost_usd"] for row in rows) > 0


@pytest.mark.parametrize("destination", ["gs", "az"])
async def test_the_dry_run_estimate_prices_egress_as_it_is_counted(
    devstack: StackState, tmp_path: Path, destination: str
) -> None:
    """One model for both: the egress a dry run predicts for small objects to one destination
    is what the copy then counts, priced the same."""
    source, dest = f"s3://{unique_name()}/", f"{destination}://{unique_name()}/"
    async with open_store(source) as src, open_store(dest) as dst:
        await src.create_container()
        await dst.create_container()
        for key, data in SMALL.items():
            await src.put(key, data)
    config = tmp_path / "replicator.toml"
    config.write_text(f'routes = []\n[catalog]\nurl = "sqlite:///{tmp_path}/catalog.db"\n')
    env = dict(os.environ)
    dry = json.loads(
        await run(
            env,
            "backfill",
            source,
            dest,
            "--dry-run",
            "--config",
            str(config),
            "--json",
            exit_code=1,
        )
    )
    [(route, predicted)] = dry.items()
    await run(env, "backfill", source, dest, "--config", str(config), "--json")
    listed = await run(env, "catalog", "costs", "--route", route, "--config", str(config), "--json")
    rows = [json.loads(line) for line in listed.splitlines()]
    egress = sum(row["egress_bytes"] for row in rows)
    assert egress == sum(len(data) for data in SMALL.values())
    assert predicted["cost"]["egress_usd"] == pytest.approx(egress / 1e9 * 0.09, rel=1e-9)
