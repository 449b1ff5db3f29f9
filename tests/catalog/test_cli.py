"""`replicator catalog ...` and `replicator status` on both backends, wired as cli.py wires
them, run through Typer's runner in a worker thread (each command runs its own event loop)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from typer.testing import CliRunner, Result

from replicator.catalog import Catalog
from replicator.catalog.cli import catalog_app, status_command
from tests.catalog.conftest import DatasetFactory, store_url, unique
from tests.catalog.test_replicas import change, verified

app = typer.Typer()
app.add_typer(catalog_app, name="catalog")
app.command("status")(status_command)


async def run(*args: str) -> Result:
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


async def test_add_dataset_then_list_it(catalog_url: str) -> None:
    """Locations given as URL@REGION are registered with their role and region."""
    name, tag = unique("cli-"), unique("")
    s3, gs = f"s3://lake-{tag}/clicks/", f"gs://ml-{tag}/clicks/"
    await run(
        "catalog",
        "add-dataset",
        name,
        "--source",
        f"{s3}@us-east-1",
        "--replica",
        gs,
        "--catalog",
        catalog_url,
    )
    listed = await run("catalog", "datasets", "--catalog", catalog_url, "--json")
    [found] = [d for d in map(json.loads, listed.stdout.splitlines()) if d["name"] == name]
    assert {(loc["url"], loc["role"], loc["region"]) for loc in found["locations"]} == {
        (s3, "source", "us-east-1"),
        (gs, "replica", None),
    }
    table = await run("catalog", "datasets", "--catalog", catalog_url)
    assert f"{name}  source   s3     us-east-1  {s3}" in table.stdout


async def test_ls_locate_stale_status_export(
    catalog: Catalog, catalog_url: str, make_dataset: DatasetFactory, tmp_path: Path
) -> None:
    """The lake queries print tables by default and JSON with --json, from another process's
    point of view (a separate catalog connection)."""
    ds = await make_dataset()
    gs = store_url(ds, "gs")
    fresh, behind = change(ds, "logs/a.json", 1), change(ds, "logs/b.json", 1, at=30)
    await catalog.record_replica(fresh, gs, verified(fresh, after=4))
    await catalog.mark_pending(behind)
    await catalog.mark_failed(behind, gs, "throttled")
    common = ("--catalog", catalog_url)

    listing = await run("catalog", "ls", f"{ds.name}/logs/", "--json", *common)
    entries = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [e["key"] for e in entries] == ["logs/a.json", "logs/b.json"]
    gs_a = next(loc for loc in entries[0]["locations"] if loc["location"] == gs)
    assert (gs_a["state"], gs_a["fresh"], gs_a["lag_seconds"]) == ("replicated", True, 4.0)
    table = await run("catalog", "ls", ds.name, *common)
    assert "europe-west1:fresh" in table.stdout
    assert "europe-west1:failed" in table.stdout

    located = await run("catalog", "locate", f"{ds.name}/logs/a.json", "--prefer", "gs", *common)
    assert located.stdout.strip() == gs + "logs/a.json"
    located = await run("catalog", "locate", f"{ds.name}/logs/b.json", "--prefer", "gs", *common)
    assert located.stdout.strip() == ds.sources[0].url + "logs/b.json"
    as_json = await run("catalog", "locate", f"{ds.name}/logs/a.json", "--json", *common)
    assert json.loads(as_json.stdout)["role"] == "source"

    stale = await run(
        "catalog", "stale", "--route", f"{ds.sources[0].url} -> {gs}", "--json", *common
    )
    [row] = [json.loads(line) for line in stale.stdout.splitlines()]
    assert (row["key"], row["state"], row["last_error"]) == ("logs/b.json", "failed", "throttled")
    assert "throttled" in (await run("catalog", "stale", "--route", gs, *common)).stdout

    status = await run("status", "--json", "--slo", "3s", *common)
    routes = {r["destination"]: r for r in map(json.loads, status.stdout.splitlines())}
    assert routes[gs]["operations_pending"] == 1
    assert routes[gs]["operations_failed"] == 1
    assert routes[gs]["slo_missed"] == 1
    assert routes[gs]["watermark"] == behind.event_time.isoformat()
    table = await run("status", *common)
    assert f"{ds.sources[0].url} -> {gs}" in table.stdout
    assert "WATERMARK" in table.stdout

    out = tmp_path / "lake.jsonl"
    summary = await run(
        "catalog",
        "export",
        "--format",
        "jsonl",
        "--output",
        str(out),
        "--dataset",
        ds.name,
        "--json",
        *common,
    )
    assert json.loads(summary.stdout) == {"rows": 6, "format": "jsonl", "output": str(out)}
    assert len(out.read_text().splitlines()) == 6


async def test_errors_reach_the_caller(catalog_url: str) -> None:
    """An unknown dataset is an error (cli.py turns it into one line and exit status 2)."""
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["catalog", "ls", unique("nope-"), "--catalog", catalog_url]
    )
    assert result.exit_code != 0
    assert "no dataset named" in str(result.exception)


async def test_scheduled_deletions_are_listed_soonest_first(
    catalog: Catalog, catalog_url: str, make_dataset: DatasetFactory
) -> None:
    ds = await make_dataset(replicas=1)
    gs = store_url(ds, "gs")
    now = datetime.now(UTC)
    for key, days in (("later", 5), ("sooner", 1)):
        gone = change(ds, key, 2, deleted=True)
        await catalog.mark_pending(gone)
        await catalog.schedule_delete(gone, gs, due=now + timedelta(days=days), decided_time=now)
    common = ("--catalog", catalog_url)
    listed = await run("catalog", "deletes", "--json", *common)
    mine = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = [item for item in mine if item["dataset"] == ds.name]
    assert [item["key"] for item in mine] == ["sooner", "later"]
    assert mine[0]["location"] + mine[0]["key"] == gs + "sooner"
    soon = await run("catalog", "deletes", "--due-within", "2d", *common)
    assert gs + "sooner" in soon.stdout
    assert gs + "later" not in soon.stdout
