"""Striped copies in one process: a coordinator's copier publishes the parts of a large object
on a real parts topic, and two members of the parts consumer group (each its own copier and
store clients on the shared catalog journal, as two daemons would have) copy them. Checked by
an independent reader and by the stores' own lists of open uploads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from connectors.base import MiB, ObjectStore, PermissionDenied
from replicator.catalog import Catalog, open_catalog
from replicator.daemon.striping import PartRunner
from replicator.devstack import StackState
from replicator.engine.retry import RetryPolicy
from replicator.engine.striping import PartPublisher, PartTask, Striping
from replicator.engine.transfer import Copier
from replicator.pipeline.bus import AsyncConsumer
from replicator.pipeline.parts import PartTaskPublisher, decode_task
from replicator.pipeline.rules import Router, load_config
from replicator.pipeline.worker import Worker
from tests.conftest import StoreFactory
from tests.engine.faults import FaultyStore
from tests.independent import read_object
from tests.worker.bed import Bed

# Parts are whole fingerprint blocks (4 MiB) and at least S3's smallest (5 MiB).
PART = 8 * MiB
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05, max_attempts=3)


class Member:
    """One daemon's share: a copier on the shared journal, its own clients of both stores
    (wrapped, to count what it uploaded), and a worker in the parts consumer group."""

    def __init__(self, bed: Bed, catalog: Catalog, source: ObjectStore, dest: ObjectStore):
        self.dest = FaultyStore(dest)
        self.copier = Copier(
            part_size=PART,
            retry=FAST_RETRY,
            journal=catalog.journal(),
            striping=Striping(
                PART, PartTaskPublisher(bed.producer, bed.topic), watch_interval_s=0.1
            ),
        )
        stores = {source.root_url: source, dest.root_url: self.dest}
        router = Router(
            load_config(
                {
                    "routes": [
                        {
                            "name": "big",
                            "source": source.root_url,
                            "destinations": [{"url": dest.root_url}],
                        }
                    ]
                }
            )
        )
        self.runner = PartRunner(router, self.copier, stores.__getitem__)
        self.outcomes: list[str] = []

        async def handle(task: PartTask) -> None:
            self.outcomes.append(await self.runner(task))

        self.worker: Worker[PartTask] = Worker(
            AsyncConsumer(bed.settings, [bed.topic]),
            bed.producer,
            handle,
            decode=decode_task,
            retry=FAST_RETRY,
            dlq_topic=bed.dlq,
            commit_interval_s=0.2,
        )


@pytest.fixture
async def catalog(tmp_path: Path) -> AsyncIterator[Catalog]:
    async with await open_catalog(f"sqlite:///{tmp_path}/catalog.db") as opened:
        yield opened


@pytest.fixture
async def bed(devstack: StackState) -> AsyncIterator[Bed]:
    test_bed = Bed(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    yield test_bed
    await test_bed.producer.close()


async def running(members: Sequence[Member]) -> list[asyncio.Task[None]]:
    """Start every member's parts worker and wait until each owns partitions."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(member.worker.run(stop)) for member in members]
    for _ in range(600):
        if all(member.worker.ownership.owned() for member in members):
            return tasks
        await asyncio.sleep(0.05)
    raise AssertionError("the parts workers never shared the topic's partitions")


async def stopped(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def open_uploads(store: ObjectStore, key: str) -> list[str]:
    return [upload.upload_id async for upload in store.list_multipart_uploads(key)]


@pytest.mark.parametrize("dest_scheme", ["s3", "gs", "az", "file"])
async def test_the_group_copies_the_parts_and_the_coordinator_completes(
    bed: Bed, catalog: Catalog, store_factory: StoreFactory, dest_scheme: str
) -> None:
    source, dest = await store_factory("s3"), await store_factory(dest_scheme)
    data = os.urandom(3 * PART + 12345)
    await source.put("big.bin", data)
    coordinator, helper = Member(bed, catalog, source, dest), Member(bed, catalog, source, dest)
    workers = await running([coordinator, helper])
    try:
        result = await coordinator.copier.copy(source, "big.bin", coordinator.dest, "big.bin")
    finally:
        await stopped(workers)

    assert result.status == "copied"
    assert result.parts == 4
    assert read_object(dest.url_for("big.bin")) == data
    # Every part went through the topic, none twice; the coordinator only completed.
    copied = [o for m in (coordinator, helper) for o in m.outcomes if o == "copied"]
    assert len(copied) == 4
    assert sorted(coordinator.dest.parts_uploaded + helper.dest.parts_uploaded) == list(range(1, 5))
    assert await catalog.journal().find(dest.url_for("big.bin")) is None
    if dest.limits.multipart:
        assert await open_uploads(dest, "big.bin") == []


async def test_a_source_changed_mid_way_restarts_the_whole_upload_on_the_new_version(
    bed: Bed, catalog: Catalog, store_factory: StoreFactory
) -> None:
    source, dest = await store_factory("s3"), await store_factory("s3")
    first, second = os.urandom(3 * PART + 5), os.urandom(2 * PART + 99)
    await source.put("big.bin", first)
    coordinator, helper = Member(bed, catalog, source, dest), Member(bed, catalog, source, dest)
    publisher = coordinator.copier.striping
    assert publisher is not None
    real = publisher.publisher
    published: list[int] = []

    class OverwritingFirst:
        """The source is overwritten once, just as the first upload's parts go out."""

        async def publish(self, tasks: Sequence[PartTask]) -> None:
            if not published:
                await source.put("big.bin", second)
            published.append(len(tasks))
            await real.publish(tasks)

    coordinator.copier.striping = Striping(PART, OverwritingFirst(), watch_interval_s=0.1)
    workers = await running([coordinator, helper])
    try:
        result = await coordinator.copier.copy(source, "big.bin", coordinator.dest, "big.bin")
    finally:
        await stopped(workers)

    assert published == [4, 3]  # the first upload's parts, then the new version's
    assert result.status == "copied"
    assert read_object(dest.url_for("big.bin")) == second
    halted = [o for m in (coordinator, helper) for o in m.outcomes if o.startswith("halted")]
    assert halted, "no part found the source changed"
    assert await open_uploads(dest, "big.bin") == []
    assert await catalog.journal().find(dest.url_for("big.bin")) is None


async def test_a_part_that_cannot_be_copied_fails_the_copy_and_leaves_nothing(
    bed: Bed, catalog: Catalog, store_factory: StoreFactory
) -> None:
    source, dest = await store_factory("s3"), await store_factory("s3")
    await source.put("big.bin", os.urandom(3 * PART))
    members = [Member(bed, catalog, source, dest) for _ in range(2)]

    async def refuse(part_number: int) -> None:
        raise PermissionDenied("injected: access to the destination revoked", url=dest.root_url)

    for member in members:
        member.dest.before_part = refuse
    workers = await running(members)
    try:
        with pytest.raises(Exception, match="a part of the striped upload failed"):
            await members[0].copier.copy(source, "big.bin", members[0].dest, "big.bin")
    finally:
        await stopped(workers)
    assert await open_uploads(dest, "big.bin") == []
    assert await catalog.journal().find(dest.url_for("big.bin")) is None


async def test_a_task_naming_locations_no_route_copies_is_dead_lettered(
    bed: Bed, catalog: Catalog, store_factory: StoreFactory
) -> None:
    source, dest = await store_factory("s3"), await store_factory("s3")
    member = Member(bed, catalog, source, dest)
    workers = await running([member])
    foreign = PartTask(
        "s3://somebody-else/", "k", dest.root_url, "k", "u", "v", None, None, 10, 10, 1, 0, 10
    )
    try:
        await PartTaskPublisher(bed.producer, bed.topic).publish([foreign])
        letters = await asyncio.to_thread(bed.dead_letters, 1)
    finally:
        await stopped(workers)
    assert len(letters) == 1
    assert (
        b"no route of this daemon copies s3://somebody-else/" in letters[0][1]["replicator.reason"]
    )
    assert member.outcomes == []


async def test_a_coordinator_cancelled_mid_way_leaves_the_upload_to_the_next_one(
    bed: Bed, catalog: Catalog, store_factory: StoreFactory
) -> None:
    """The change's partition moved: its copy is cancelled, but the upload is the group's (its
    parts are on their way), so it is left open and journaled, and the daemon that takes the
    change next resumes it without publishing its parts again."""
    source, dest = await store_factory("s3"), await store_factory("s3")
    data = os.urandom(5 * PART + 1)
    await source.put("big.bin", data)
    first, second, helper = (Member(bed, catalog, source, dest) for _ in range(3))
    published: list[int] = []
    for member in (first, second):
        striping = member.copier.striping
        assert striping is not None
        real = striping.publisher

        class Counting:
            def __init__(self, real: PartPublisher) -> None:
                self.real = real

            async def publish(self, tasks: Sequence[PartTask]) -> None:
                published.append(len(tasks))
                await self.real.publish(tasks)

        member.copier.striping = Striping(PART, Counting(real), watch_interval_s=0.1)
    gate = asyncio.Event()

    async def after_two(part_number: int) -> None:
        if len(helper.dest.parts_uploaded) >= 2:
            await gate.wait()

    helper.dest.before_part = after_two
    workers = await running([helper])
    dest_url = dest.url_for("big.bin")
    try:
        copying = asyncio.create_task(first.copier.copy(source, "big.bin", first.dest, "big.bin"))
        for _ in range(600):
            record = await catalog.journal().find(dest_url)
            if record is not None and len(record.parts) >= 2:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no part journaled")
        copying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await copying
        assert await open_uploads(dest, "big.bin") == [record.upload_id]
        gate.set()
        result = await second.copier.copy(source, "big.bin", second.dest, "big.bin")
    finally:
        gate.set()
        await stopped(workers)

    assert result.status == "copied"
    assert result.parts_resumed >= 2
    assert published == [6]
    assert read_object(dest_url) == data
    assert await open_uploads(dest, "big.bin") == []


async def test_parts_lost_on_their_way_are_published_again_after_a_while(
    bed: Bed, catalog: Catalog, store_factory: StoreFactory
) -> None:
    """Tasks that never reach the group (lost to a fault nobody reported) do not stall the
    copy for ever: once no part has arrived for ``republish_after_s`` the coordinator
    publishes the missing ones again."""
    source, dest = await store_factory("s3"), await store_factory("s3")
    data = os.urandom(3 * PART + 7)
    await source.put("big.bin", data)
    coordinator = Member(bed, catalog, source, dest)
    real = PartTaskPublisher(bed.producer, bed.topic)
    sent: list[list[int]] = []

    class LosingTheFirstTwo:
        async def publish(self, tasks: Sequence[PartTask]) -> None:
            sent.append([task.number for task in tasks])
            await real.publish([task for task in tasks if len(sent) > 1 or task.number > 2])

    coordinator.copier.striping = Striping(
        PART, LosingTheFirstTwo(), watch_interval_s=0.1, republish_after_s=3.0
    )
    workers = await running([coordinator])
    try:
        result = await coordinator.copier.copy(source, "big.bin", coordinator.dest, "big.bin")
    finally:
        await stopped(workers)
    assert result.status == "copied"
    assert sent[0] == [1, 2, 3, 4]
    # Then the missing ones (3 and 4 too, had they not arrived within the delay).
    assert {1, 2} <= set(sent[1])
    assert read_object(dest.url_for("big.bin")) == data
