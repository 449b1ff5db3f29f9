"""Pausing replication to one destination for the whole fleet: changes are held in the
catalog (nothing written there, nothing lost, the other destination unaffected, the lag
visible), and handed back to Kafka once resumed, by hand or by a scheduled end noticed by
whichever daemon is alive, to be applied by the owner of the key's partition."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import NotFound
from replicator.catalog import PauseScope, UnknownDataset, UnknownLocation
from replicator.pipeline.bus import read_topic
from tests.controls.bed import Bed, eventually
from tests.independent import read_object

KEYS = [f"k{i}" for i in range(5)]


async def write_and_apply(bed: Bed, keys: list[str]) -> list[list[str]]:
    first = bed.daemons[0].applier
    outcomes = []
    for key in keys:
        await bed.store(bed.source_url).put(key, f"data of {key}".encode())
        outcomes.append(await first(bed.event("put", key)))
    return outcomes


async def test_a_paused_destination_holds_its_changes_until_resumed(fleet_bed: Bed) -> None:
    """While one destination is paused, events for it are recorded pending and the events
    complete (so their offsets move on); the other destination gets everything. Resumed, the
    held changes are published again and applied by the partition owner, reading the source
    afresh (a key deleted meanwhile is deleted, not copied), and the lag goes back to zero."""
    bed = fleet_bed
    daemon = bed.daemons[0]
    await daemon.catalog.pause(
        bed.route,
        scope=PauseScope.REPLICATION,
        destination=bed.paused_url,
        reason="bucket migration",
        paused_by="ops",
    )
    outcomes = await write_and_apply(bed, KEYS)
    assert outcomes == [["held", "copied"]] * len(KEYS)
    for key in KEYS:
        assert read_object(bed.other_url + key) == f"data of {key}".encode()
        with pytest.raises(NotFound):
            await bed.store(bed.paused_url).head(key)
    assert (await bed.lag(bed.paused_url)).pending_ops == len(KEYS)
    assert (await bed.lag(bed.other_url)).pending_ops == 0
    assert await daemon.runner.run_once() == 0, "a paused destination's changes were taken"

    # Changed at the source while paused: the held change is applied as the source is now.
    await bed.store(bed.source_url).delete("k0")
    assert await daemon.applier(bed.event("delete", "k0")) == ["held", "deleted"]

    assert await daemon.catalog.resume(
        bed.route, scope=PauseScope.REPLICATION, destination=bed.paused_url
    )
    assert await daemon.runner.run_once() == len(KEYS)
    await bed.settled(bed.paused_url)
    for key in KEYS[1:]:
        assert read_object(bed.paused_url + key) == f"data of {key}".encode()
    with pytest.raises(NotFound):
        await bed.store(bed.paused_url).head("k0")
    [entry] = await daemon.catalog.ls(bed.route, "k0", limit=1, include_deleted=True)
    assert entry.deleted, "the catalog lost that the object was deleted"
    assert {loc.state for loc in entry.locations if loc.location != bed.source_url} == {"deleted"}
    lag = await bed.lag(bed.paused_url)
    assert (lag.pending_ops, lag.failed_ops) == (0, 0)
    assert await daemon.runner.run_once() == 0, "a held change was handed over twice"


async def test_a_route_wide_pause_holds_every_destination(bed: Bed) -> None:
    daemon = bed.daemons[0]
    await daemon.catalog.pause(
        bed.route, scope=PauseScope.REPLICATION, reason="incident", paused_by="ops"
    )
    assert await write_and_apply(bed, ["a"]) == [["held", "held"]]
    paused = await daemon.catalog.paused_destinations()
    assert set(paused) == {bed.paused_url, bed.other_url}
    await daemon.catalog.resume(bed.route, scope=PauseScope.REPLICATION)
    assert await daemon.runner.run_once() == 2
    await bed.settled(bed.paused_url)
    await bed.settled(bed.other_url)
    assert read_object(bed.other_url + "a") == read_object(bed.paused_url + "a") == b"data of a"


async def test_a_scheduled_resume_fires_on_a_daemon_that_did_not_pause(fleet_bed: Bed) -> None:
    """Daemon 1 pauses for a short while, records held changes and goes away; daemon 2,
    sharing only the catalog, hands them over once the pause ends, and not before."""
    bed = fleet_bed
    first = bed.daemons[0]
    until = datetime.now(UTC) + timedelta(seconds=3)
    await first.catalog.pause(
        bed.route,
        scope=PauseScope.REPLICATION,
        destination=bed.paused_url,
        reason="maintenance window",
        paused_by="ops",
        until=until,
    )
    await write_and_apply(bed, KEYS)
    second = await bed.daemon()
    await first.close()
    bed.daemons.remove(first)

    stop = asyncio.Event()
    running = asyncio.create_task(second.runner.run(stop))
    try:

        async def all_there() -> bool:
            lag = await bed.lag(bed.paused_url)
            return lag.pending_ops == 0

        await eventually(all_there, "held changes applied after the scheduled resume")
        assert datetime.now(UTC) >= until, "applied before the pause ended"
    finally:
        stop.set()
        await running
    for key in KEYS:
        assert read_object(bed.paused_url + key) == f"data of {key}".encode()
    assert await second.catalog.pauses(include_expired=True) == []


async def test_pausing_an_unknown_route_or_destination_is_refused(bed: Bed) -> None:
    catalog = bed.daemons[0].catalog
    with pytest.raises(UnknownDataset):
        await catalog.pause("nope", scope=PauseScope.REPLICATION, reason="", paused_by="ops")
    with pytest.raises(UnknownLocation):
        await catalog.pause(
            bed.route,
            scope=PauseScope.REPLICATION,
            destination="gs://not-a-destination/",
            reason="",
            paused_by="ops",
        )


async def test_daemons_resuming_together_publish_each_held_change_once(fleet_bed: Bed) -> None:
    """Two daemons notice the resume at the same moment: each held change is claimed by one
    of them, and published once (one event for its two destinations)."""
    bed = fleet_bed
    first = bed.daemons[0]
    await first.catalog.pause(bed.route, scope=PauseScope.REPLICATION, reason="", paused_by="ops")
    keys = [f"m{i}" for i in range(8)]
    await write_and_apply(bed, keys)
    second = await bed.daemon()
    await first.catalog.resume(bed.route, scope=PauseScope.REPLICATION)
    taken = await asyncio.gather(first.runner.run_once(), second.runner.run_once())
    assert sum(taken) == 2 * len(keys)
    await bed.settled(bed.paused_url)
    await bed.settled(bed.other_url)
    for key in keys:
        assert read_object(bed.paused_url + key) == read_object(bed.other_url + key)
    records = await asyncio.to_thread(read_topic, bed.kafka, bed.topic)
    assert sorted(r.key or b"" for r in records) == sorted(
        (bed.source_url + key).encode() for key in keys
    )
