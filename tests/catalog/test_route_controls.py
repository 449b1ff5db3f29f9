"""Route controls in the catalog, on SQLite and PostgreSQL: the delete limit holds for the
whole fleet, a pause is seen by every daemon, and an operator resumes it without a restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from replicator.catalog import Catalog, PauseScope, open_catalog
from replicator.daemon.deletes import DeleteGuard, RoutePaused
from replicator.daemon.metrics import DaemonMetrics
from replicator.pipeline.rules import Route, load_config
from tests.catalog.conftest import unique


def route(limit: int) -> Route:
    name = unique("route-")
    config = load_config(
        {
            "routes": [
                {
                    "name": name,
                    "source": f"s3://{name}/",
                    "destinations": [f"gs://{name}/"],
                    "max_deletes_per_minute": limit,
                }
            ]
        }
    )
    return config.routes[0]


async def test_the_delete_limit_holds_for_the_whole_fleet(
    catalog: Catalog, catalog_url: str
) -> None:
    """Three daemons (three guards, three catalog connections) share one minute's budget:
    exactly ``limit`` deletions are admitted among them, then every one sees the pause."""
    limited = route(5)
    others = [await open_catalog(catalog_url) for _ in range(2)]
    guards = [DeleteGuard(catalog), *(DeleteGuard(other) for other in others)]
    try:

        async def attempt(guard: DeleteGuard) -> bool:
            try:
                await guard.admit(limited)
            except RoutePaused:
                return False
            return True

        outcomes = await asyncio.gather(*(attempt(guards[i % 3]) for i in range(12)))
        assert sum(outcomes) == 5
        for guard in guards:
            assert await guard.is_paused(limited) or limited.name in await guard.refresh(force=True)
        [pause] = [p for p in await catalog.pauses() if p.route == limited.name]
        assert pause.scope is PauseScope.DELETES
        assert "more than 5 deletions" in pause.reason
    finally:
        for other in others:
            await other.close()


async def test_a_new_minute_starts_afresh(catalog: Catalog) -> None:
    name = unique("route-")
    minute = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert await catalog.admit_delete(name, 2, minute)
    assert await catalog.admit_delete(name, 2, minute + timedelta(seconds=30))
    assert not await catalog.admit_delete(name, 2, minute + timedelta(seconds=59))
    assert await catalog.admit_delete(name, 2, minute + timedelta(seconds=60))


async def test_zero_means_no_deletions(catalog: Catalog) -> None:
    with pytest.raises(RoutePaused):
        await DeleteGuard(catalog).admit(route(0))


async def test_resume_is_seen_by_every_daemon_without_a_restart(
    catalog: Catalog, catalog_url: str
) -> None:
    limited = route(1)
    other = await open_catalog(catalog_url)
    metrics = DaemonMetrics()
    registry = metrics.registry
    here, there = DeleteGuard(catalog, metrics.deletes_paused), DeleteGuard(other)
    try:
        await here.admit(limited)
        with pytest.raises(RoutePaused):
            await here.admit(limited)
        assert (
            registry.get_sample_value("replicator_route_deletes_paused", {"route": limited.name})
            == 1
        )
        assert await there.is_paused(limited)
        assert await other.resume(limited.name, scope=PauseScope.DELETES)
        assert limited.name not in await here.refresh(force=True)
        assert (
            registry.get_sample_value("replicator_route_deletes_paused", {"route": limited.name})
            == 0
        )
    finally:
        await other.close()


async def test_a_pause_with_an_end_lifts_itself(catalog: Catalog) -> None:
    name = unique("route-")
    await catalog.pause(
        name,
        scope=PauseScope.DELETES,
        reason="migration",
        paused_by="ops",
        until=datetime.now(UTC) - timedelta(seconds=1),
    )
    assert name not in {p.route for p in await catalog.pauses()}
    assert name in {p.route for p in await catalog.pauses(include_expired=True)}
