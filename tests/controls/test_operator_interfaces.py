"""The controls as an operator reaches them: the command line and the daemon's admin HTTP
API, both over the catalog the fleet shares."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner, Result

from replicator.catalog.http import create_app
from replicator.catalog.lag import LagMetrics
from replicator.cli.app import app
from replicator.daemon.controls_http import add_control_routes
from tests.controls.bed import Bed
from tests.independent import delete_container


async def cli(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def test_pause_paused_status_resume_on_the_command_line(bed: Bed) -> None:
    url = bed.catalog_url
    await bed.store(bed.source_url).put("a", b"a")
    await bed.daemons[0].applier(bed.event("put", "a"))
    paused = await cli(
        "pause",
        bed.route,
        "--destination",
        bed.paused_url,
        "--for",
        "2h",
        "--reason",
        "migration",
        "--catalog",
        url,
    )
    assert paused.exit_code == 0, paused.output
    described = json.loads(paused.stdout)
    assert (described["destination"], described["reason"]) == (bed.paused_url, "migration")
    assert described["until"] is not None

    listed = await cli("paused", "--json", "--catalog", url)
    assert [json.loads(line)["route"] for line in listed.stdout.splitlines()] == [bed.route]

    status = await cli("status", "--json", "--catalog", url)
    routes = [json.loads(line) for line in status.stdout.splitlines()]
    by_destination = {r["destination"]: r["paused"] for r in routes}
    assert by_destination[bed.paused_url]["paused_by"]
    assert by_destination[bed.paused_url]["reason"] == "migration"
    assert by_destination.get(bed.other_url) is None

    resumed = await cli("resume", bed.route, "--destination", bed.paused_url, "--catalog", url)
    assert resumed.exit_code == 0, resumed.output
    again = await cli("resume", bed.route, "--destination", bed.paused_url, "--catalog", url)
    assert again.exit_code != 0


async def test_failed_list_and_retry_on_the_command_line(bed: Bed) -> None:
    daemon = bed.daemons[0]
    delete_container(bed.other_url)
    await bed.store(bed.source_url).put("x", b"x")
    assert await daemon.applier(bed.event("put", "x")) == ["copied", "failed"]
    listed = await cli("failed", "list", bed.route, "--json", "--catalog", bed.catalog_url)
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["key"], row["destination"], row["attempts"]) == ("x", bed.other_url, 1)
    assert None not in (row["reason"], row["first_failure"], row["last_failure"])
    retried = await cli("failed", "retry", "x", "--catalog", bed.catalog_url)
    assert retried.exit_code == 0, retried.output
    assert await daemon.catalog.failed_changes() == []
    assert len(await daemon.catalog.held_changes(datetime.now(UTC))) == 1


@pytest.fixture
async def admin(bed: Bed) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    catalog = bed.daemons[0].catalog
    application = create_app(catalog, LagMetrics(CollectorRegistry()))
    add_control_routes(application, catalog)
    async with TestClient(TestServer(application)) as client:
        yield client


async def test_pause_and_resume_over_http(bed: Bed, admin: TestClient) -> None:  # type: ignore[type-arg]
    answer = await admin.post(
        "/controls/pauses",
        json={"route": bed.route, "destination": bed.paused_url, "reason": "over http"},
    )
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["paused_by"].startswith("http ")
    assert await bed.daemons[0].applier(bed.event("delete", "gone")) == ["held", "deleted"]

    status = await (await admin.get("/status")).json()
    [paused] = [r for r in status["routes"] if r["destination"] == bed.paused_url]
    assert paused["paused"]["reason"] == "over http"
    assert paused["operations_pending"] == 1

    refused = await admin.post("/controls/pauses", json={"route": "no-such-route"})
    assert refused.status == 404
    resumed = await admin.delete(
        "/controls/pauses", params={"route": bed.route, "destination": bed.paused_url}
    )
    assert resumed.status == 200
    assert (await admin.get("/controls/pauses")).status == 200
    assert (await (await admin.get("/controls/pauses")).json())["pauses"] == []
    assert await bed.daemons[0].runner.run_once() == 1


async def test_failed_list_and_retry_over_http(bed: Bed, admin: TestClient) -> None:  # type: ignore[type-arg]
    delete_container(bed.other_url)
    await bed.store(bed.source_url).put("y", b"y")
    assert await bed.daemons[0].applier(bed.event("put", "y")) == ["copied", "failed"]
    failed = await (await admin.get("/controls/failed", params={"route": bed.route})).json()
    assert [row["key"] for row in failed["failed"]] == ["y"]
    assert (await admin.post("/controls/failed/retry", json={})).status == 400
    sent = await (await admin.post("/controls/failed/retry", json={"all": True})).json()
    assert [row["key"] for row in sent["sent_back"]] == ["y"]
    assert (await (await admin.get("/controls/failed")).json())["failed"] == []


async def test_hostile_control_requests_are_refused_not_failed(
    bed: Bed,
    admin: TestClient,  # type: ignore[type-arg]
) -> None:
    """Malformed or hostile bodies and parameters are answered 4xx, and pause nothing."""
    bodies: list[bytes] = [
        b"not json",
        b"[]",
        json.dumps({"route": 5}).encode(),
        json.dumps({"route": "\ud800"}).encode(),
        json.dumps({"route": bed.route, "reason": "\ud800"}).encode(),
        json.dumps({"route": bed.route, "until": "next tuesday"}).encode(),
        json.dumps({"route": bed.route, "for": "forever"}).encode(),
        json.dumps({"route": bed.route, "for": "1h", "until": "2030-01-01T00:00Z"}).encode(),
        json.dumps({"route": bed.route, "scope": "everything"}).encode(),
        json.dumps({"route": bed.route, "destination": "gs://elsewhere/"}).encode(),
    ]
    for body in bodies:
        answer = await admin.post("/controls/pauses", data=body)
        assert 400 <= answer.status < 500, (body, answer.status, await answer.text())
    for params in ({}, {"route": "\ud800"}, {"route": bed.route}):
        answer = await admin.delete("/controls/pauses", params=params)
        assert 400 <= answer.status < 500, (params, answer.status)
    answer = await admin.get("/controls/failed", params={"key": "\ud800", "limit": "x"})
    assert 400 <= answer.status < 500
    retry = await admin.post("/controls/failed/retry", json={"keys": "k"})
    assert retry.status == 400
    assert await bed.daemons[0].catalog.pauses() == []
