"""Held changes are applied by the owner of their key's partition, never beside it: resuming
publishes each held change to the changes topic keyed by its source URL, so it and any newer
change of the key are applied one after the other, in the partition's order, by one writer.

The race this closes: a daemon applying a held change directly, its write of the older
version held up, while the partition owner applies a newer change of the key; the older write
landing last left the destination stale while the catalog said fresh. Here the resumed
change's write is held up at the destination while the newer change's record is taken by the
worker: it waits behind it, and the destination ends at the newest version (read back with
the store's own SDK), as the catalog says."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import (
    Buffer,
    ChecksumKind,
    NotFound,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
)
from replicator.catalog import PauseScope
from replicator.daemon.held import HeldChangesRunner, ReplicationPauses, held_event
from replicator.pipeline.bus import AsyncProducer, KafkaSettings, read_topic
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ingest.publisher import send_change
from replicator.pipeline.rules import Router, load_config
from tests.controls.bed import Bed, eventually
from tests.engine.faults import FaultyStore
from tests.independent import read_object

KEY = "ordered/k"
# A native S3 sequencer: newer than every change ordered by its event time (moto sends none).
NATIVE_SEQUENCER = "0055AED6DCD90281E5"


async def hold_first_version(bed: Bed, data: bytes) -> None:
    """``KEY`` written at the source while the paused destination is paused: held there."""
    daemon = bed.daemons[0]
    await daemon.catalog.pause(
        bed.route,
        scope=PauseScope.REPLICATION,
        destination=bed.paused_url,
        reason="",
        paused_by="ops",
    )
    await bed.store(bed.source_url).put(KEY, data)
    assert await daemon.applier(bed.event("put", KEY)) == ["held", "copied"]
    await daemon.catalog.resume(bed.route, scope=PauseScope.REPLICATION, destination=bed.paused_url)


async def the_replica(bed: Bed, destination: str) -> tuple[str, bool, int | None]:
    """What the catalog says of ``KEY``'s replica at ``destination``: state, fresh, size."""
    [entry] = await bed.daemons[0].catalog.ls(bed.route, KEY, limit=1)
    [replica] = [loc for loc in entry.locations if loc.location == destination]
    return replica.state, replica.fresh, replica.size


async def test_a_resumed_change_and_a_newer_one_are_applied_in_key_order(bed: Bed) -> None:
    """The held change is published keyed by its source URL, with its own sequencer, on the
    partition where the key's newer change follows it; the owner applies both in that order
    and both destinations end at the newer version, fresh in the catalog."""
    daemon = bed.daemons[0]
    first, newer = b"first version", b"the newer version, longer"
    await hold_first_version(bed, first)
    [held] = await daemon.catalog.held_changes(datetime.now(UTC))

    assert await daemon.runner.run_once() == 1
    await bed.store(bed.source_url).put(KEY, newer)
    newer_event = bed.event("put", KEY)
    await send_change(bed.producer, bed.topic, newer_event)

    async def newer_applied() -> bool:
        return await the_replica(bed, bed.paused_url) == ("replicated", True, len(newer))

    await eventually(newer_applied, "the newer change applied after the resumed one")
    await bed.settled(bed.paused_url)
    await bed.settled(bed.other_url)
    assert read_object(bed.paused_url + KEY) == read_object(bed.other_url + KEY) == newer
    assert await the_replica(bed, bed.other_url) == ("replicated", True, len(newer))
    records = await asyncio.to_thread(read_topic, bed.kafka, bed.topic)
    assert [r.key for r in records] == [(bed.source_url + KEY).encode()] * 2
    assert len({r.partition for r in records}) == 1
    resumed, following = (ChangeEvent.from_json(r.value or b"") for r in records)
    assert (resumed.sequencer, resumed.origin) == (held.sequencer, "scan")
    assert following == newer_event


class HeldUpPut(FaultyStore):
    """A destination whose first write of ``KEY`` waits until the test lets it land."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def put(
        self,
        key: str,
        data: Buffer,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> ObjectMeta:
        if key == KEY and not self.entered.is_set():
            self.entered.set()
            await self.release.wait()
        return await self.inner.put(
            key,
            data,
            attributes=attributes,
            create_only=create_only,
            if_match=if_match,
            checksums=checksums,
        )


async def test_a_newer_change_in_flight_waits_behind_the_resumed_one(bed: Bed) -> None:
    """The resumed change's write of the first version is held up at the destination; the
    key is overwritten and its newer change's record reaches the worker meanwhile. The newer
    change is not applied beside the older write: once that lands, the newer one is applied
    after it, and the destination and the catalog end at the newer version."""
    first, newer = b"first version", b"the newer version, longer"
    await hold_first_version(bed, first)
    held_up: list[HeldUpPut] = []

    def hold_up(store: ObjectStore) -> ObjectStore:
        held_up.append(HeldUpPut(store))
        return held_up[-1]

    bed.owner_wrappers[bed.paused_url] = hold_up
    assert await bed.daemons[0].runner.run_once() == 1

    async def writing() -> bool:
        return bool(held_up) and held_up[0].entered.is_set()

    await eventually(writing, "the resumed change being written")
    await bed.store(bed.source_url).put(KEY, newer)
    await send_change(bed.producer, bed.topic, bed.event("put", KEY))
    worker = bed.worker
    assert worker is not None

    async def both_taken() -> bool:
        return worker.unfinished == 2

    await eventually(both_taken, "the newer change's record taken by the worker")
    held_up[0].release.set()

    async def newer_applied() -> bool:
        return await the_replica(bed, bed.paused_url) == ("replicated", True, len(newer))

    await eventually(newer_applied, "the newer change applied")
    await bed.settled(bed.paused_url)
    assert read_object(bed.paused_url + KEY) == read_object(bed.other_url + KEY) == newer


async def test_a_resumed_change_repairs_past_a_newer_high_water(bed: Bed) -> None:
    """The key's high-water moved past the held change (a newer notification was recorded)
    while the paused replica does not hold the source's current state: the resumed change is
    applied as a repair, not dropped as stale."""
    daemon = bed.daemons[0]
    await hold_first_version(bed, b"the only version")
    url = bed.source_url + KEY
    assert await daemon.catalog.advance_high_water(
        url, NATIVE_SEQUENCER, event_time=datetime.now(UTC)
    )
    assert await daemon.runner.run_once() == 1
    await bed.settled(bed.paused_url)
    assert read_object(bed.paused_url + KEY) == b"the only version"
    assert await the_replica(bed, bed.paused_url) == (
        "replicated",
        True,
        len(b"the only version"),
    )


async def test_a_held_change_kafka_does_not_take_stays_held(bed: Bed) -> None:
    """Kafka unreachable: the held change stays held and pending (nothing lost, the lag
    shows it), is not taken again before ``retry_after``, and is handed over once Kafka
    takes it."""
    daemon = bed.daemons[0]
    await hold_first_version(bed, b"kept")
    unreachable = AsyncProducer(KafkaSettings("127.0.0.1:1", extra={"message.timeout.ms": "1000"}))
    router = Router(bed.config)
    runner = HeldChangesRunner(
        daemon.catalog,
        ReplicationPauses(daemon.catalog, router),
        router,
        unreachable,
        changes_topic=bed.topic,
        retry_after=timedelta(minutes=1),
    )
    try:
        assert await runner.run_once() == 1
    finally:
        await unreachable.close()
    now = datetime.now(UTC)
    assert await daemon.catalog.held_changes(now) == [], "taken again before retry_after"
    [still] = await daemon.catalog.held_changes(now + timedelta(minutes=1, seconds=1))
    assert still.key == KEY
    assert (await bed.lag(bed.paused_url)).pending_ops == 1

    assert await daemon.runner.run_once(now + timedelta(minutes=1, seconds=1)) == 1
    await bed.settled(bed.paused_url)
    assert read_object(bed.paused_url + KEY) == b"kept"


async def test_a_held_change_whose_destination_left_the_route_is_failed(bed: Bed) -> None:
    """A held change no route replicates there any more is not published: it is in the
    failed list, saying why."""
    daemon = bed.daemons[0]
    await hold_first_version(bed, b"orphan")
    route = {"name": bed.route, "source": bed.source_url, "destinations": [bed.other_url]}
    shrunk = Router(load_config({"routes": [route]}))
    runner = HeldChangesRunner(
        daemon.catalog,
        ReplicationPauses(daemon.catalog),
        shrunk,
        bed.producer,
        changes_topic=bed.topic,
    )
    assert await runner.run_once() == 1
    [failed] = await daemon.catalog.failed_changes()
    assert (failed.key, failed.location) == (KEY, bed.paused_url)
    assert "no route" in (failed.last_error or "")
    assert await asyncio.to_thread(read_topic, bed.kafka, bed.topic) == []


async def test_a_handed_over_change_for_a_destination_paused_again_is_held_again(
    bed: Bed,
) -> None:
    """A held change's event reaching the owner while its destination is paused (again, or
    still in a runner's older view): the destination is not written, the change is held
    again (still pending), and it is applied once the destination is resumed."""
    daemon = bed.daemons[0]
    await hold_first_version(bed, b"paused twice")
    await daemon.catalog.pause(
        bed.route,
        scope=PauseScope.REPLICATION,
        destination=bed.paused_url,
        reason="again",
        paused_by="ops",
    )
    [held] = await daemon.catalog.held_changes(datetime.now(UTC))
    await send_change(bed.producer, bed.topic, held_event(held))
    worker = bed.worker
    assert worker is not None

    async def handled() -> bool:
        return worker.stats.applied == 1

    await eventually(handled, "the handed-over event handled by the owner")
    with pytest.raises(NotFound):
        await bed.store(bed.paused_url).head(KEY)
    assert await the_replica(bed, bed.paused_url) == ("held", False, None)
    assert (await bed.lag(bed.paused_url)).pending_ops == 1

    await daemon.catalog.resume(bed.route, scope=PauseScope.REPLICATION, destination=bed.paused_url)
    # The owner may still see the pause (its view is at most PAUSES_TTL_S old) and hold the
    # change once more: the runner, running on, hands it over again.
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.runner.run(stop))
    try:
        await bed.settled(bed.paused_url)
    finally:
        stop.set()
        await running
    assert read_object(bed.paused_url + KEY) == b"paused twice"
