"""The watermark is never ahead of the truth (DESIGN.md rule 9): changes waiting in Kafka (a
partition no worker has read yet), changes a worker holds in memory, and changes ingest holds
before it has recorded them all hold a route's watermark back. On the real broker, stores and
catalog."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from connectors import open_store
from connectors.base import ObjectMeta, ObjectStore
from connectors.sqs import SQSQueue
from replicator.catalog import Catalog, open_catalog
from replicator.catalog.lag import NO_PROMISE, watermark
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.config import DaemonConfig
from replicator.daemon.service import Daemon, make_worker
from replicator.daemon.watermark import QueueWatch
from replicator.devstack import StackState
from replicator.engine.transfer import Copier
from replicator.pipeline.bus import AsyncConsumer
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.sqs import SQSPoller
from replicator.pipeline.rules import Router
from tests.engine.faults import FaultyStore
from tests.worker.bed import FAST_RETRY, Bed, until


class HeldKeys(FaultyStore):
    """A source whose HEADs of some keys wait until released (a record held in a worker)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.held: set[str] = set()
        self.release = asyncio.Event()

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        if key in self.held:
            await self.release.wait()
        return await super().head(key, version=version)


class Lake:
    def __init__(self, bed: Bed, catalog: Catalog) -> None:
        tag = uuid.uuid4().hex[:10]
        self.source_url, self.dest_url = f"mem://src-{tag}/", f"mem://dst-{tag}/"
        self.config = DaemonConfig.model_validate(
            {
                "routes": [
                    {"name": f"r{tag}", "source": self.source_url, "destinations": [self.dest_url]}
                ]
            }
        )
        self.router = Router(self.config)
        self.bed = bed
        self.catalog = catalog
        self.sources: list[HeldKeys] = []
        self.applier = Applier(self.router, catalog, Copier(), store_factory=self._store)
        self.publisher = Publisher(
            bed.producer,
            self.router,
            changes_topic=bed.topic,
            dlq_topic=bed.dlq,
            accept=self.applier.accept,
        )

    def _store(self, url: str) -> ObjectStore:
        if url == self.source_url:
            self.sources.append(HeldKeys(open_store(url)))
            return self.sources[-1]
        return open_store(url)

    async def put(self, key: str, when: datetime) -> ChangeEvent:
        await open_store(self.source_url).put(key, key.encode())
        url = self.source_url + key
        return ChangeEvent("put", url, None, "", None, None, when, "scan")

    async def watermark(self) -> datetime | None:
        [lag] = await self.catalog.route_lag(destination=self.dest_url)
        return lag.watermark

    def worker(self) -> tuple[asyncio.Event, asyncio.Task[None], object]:
        worker = make_worker(
            AsyncConsumer(self.bed.settings, [self.bed.topic]),
            self.bed.producer,
            self.applier,
            workers=4,
            dlq_topic=self.bed.dlq,
            retry=FAST_RETRY,
            commit_interval_s=0.2,
        )
        stop = asyncio.Event()
        return stop, asyncio.create_task(worker.run(stop)), worker


@pytest.fixture
async def lake(devstack: StackState, tmp_path: Path) -> AsyncIterator[Lake]:
    bed = Bed(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    found = Lake(bed, catalog)
    await register_datasets(catalog, found.config)
    for url in (found.source_url, found.dest_url):
        await open_store(url).create_container()
    yield found
    await found.applier.close()
    await catalog.close()
    await bed.producer.close()


async def test_changes_not_yet_applied_hold_the_watermark(lake: Lake) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    newest = await lake.put("newest", start + timedelta(seconds=20))
    stop, running, worker = lake.worker()
    await lake.publisher.publish([newest])
    await until(lambda: worker.stats.applied == 1)  # type: ignore[attr-defined]
    stop.set()
    await running
    assert await lake.watermark() == start + timedelta(seconds=20)

    # Two older changes reach Kafka; no worker reads them yet (a partition behind).
    held = await lake.put("held", start)
    later = await lake.put("later", start + timedelta(seconds=10))
    await lake.publisher.publish([held, later])
    watermark = await lake.watermark()
    assert watermark is not None
    assert watermark <= start, "a change waiting in Kafka was passed over"

    # A worker reads them: one is held in its memory, the other applied.
    for source in lake.sources:
        source.held.add("held")
    stop, running, worker = lake.worker()
    try:
        await until(lambda: worker.stats.applied == 1)  # type: ignore[attr-defined]
        watermark = await lake.watermark()
        assert watermark is not None
        assert watermark <= start, "a change held by a worker was passed over"
        for source in lake.sources:
            source.release.set()
        await until(lambda: worker.stats.applied == 2)  # type: ignore[attr-defined]
        assert await lake.watermark() == start + timedelta(seconds=20)
    finally:
        stop.set()
        await running


async def test_what_ingest_holds_unrecorded_holds_the_daemon_watermark(lake: Lake) -> None:
    """A change ingest has received and not yet recorded (here: held by the publisher) holds
    the watermark the daemon reports, through ``Daemon.held``."""
    start = datetime.now(UTC) - timedelta(minutes=5)
    newest = await lake.put("newest", start + timedelta(seconds=20))
    await lake.applier.accept([newest])
    assert await lake.applier(newest) == ["copied"]
    daemon = Daemon(lake.config)
    daemon.queue_watch = QueueWatch([], [lake.publisher])
    token = lake.publisher.holdings.hold(start, [lake.source_url + "received"])
    [lag] = await lake.catalog.route_lag(held=daemon.held)
    assert lag.watermark == start
    lake.publisher.holdings.release(token)
    [lag] = await lake.catalog.route_lag(held=daemon.held)
    assert lag.watermark == start + timedelta(seconds=20)


async def test_a_notification_queue_holds_the_watermark_at_its_last_empty_sample(
    devstack: StackState, lake: Lake
) -> None:
    """A message waiting in SQS (or received by a daemon that died holding it) is known to no
    one: the S3 routes it feeds promise no more than the last moment the queue was seen empty
    (a message may have arrived since, even when that sample was the latest), and nothing at
    all before it was ever seen empty."""
    sqs = boto3.client(
        "sqs", endpoint_url=devstack.env["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    poller = SQSPoller(SQSQueue(queue_url), lake.publisher, wait_s=0)
    watch = QueueWatch([poller], [poller, lake.publisher])
    try:
        assert watch.held("s3://lake/") == NO_PROMISE, "a queue never looked at promises nothing"
        before = datetime.now(UTC)
        await watch.sample()
        seen_empty = watch.queues[0].empty_at
        assert seen_empty is not None
        assert seen_empty >= before
        assert watch.held("s3://lake/") == seen_empty, "what arrived since is known to no one"
        sqs.send_message(QueueUrl=queue_url, MessageBody="{}")
        await watch.sample()
        assert watch.held("s3://lake/") == seen_empty
        assert watch.held("gs://other/") is None, "an SQS queue carries S3 notifications only"
        [message] = sqs.receive_message(QueueUrl=queue_url)["Messages"]
        await watch.sample()
        assert watch.held("s3://lake/") == seen_empty, "a message in flight still counts"
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        await watch.sample()
        emptied = watch.held("s3://lake/")
        assert emptied is not None
        assert emptied > seen_empty
    finally:
        await poller.queue.close()


async def test_a_queue_with_stale_counts_vouches_only_for_what_it_held_count_lag_before(
    devstack: StackState, lake: Lake
) -> None:
    """SQS's counts settle up to a minute after messages arrive: an empty count vouches only
    for messages sent ``count_lag_s`` before it was asked."""
    sqs = boto3.client(
        "sqs", endpoint_url=devstack.env["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    poller = SQSPoller(SQSQueue(queue_url), lake.publisher, wait_s=0, count_lag_s=60)
    watch = QueueWatch([poller], [poller, lake.publisher])
    try:
        before = datetime.now(UTC)
        await watch.sample()
        held = watch.held("s3://lake/")
        assert held is not None
        assert held != NO_PROMISE
        assert before - timedelta(seconds=61) < held <= before - timedelta(seconds=59)
    finally:
        await poller.queue.close()


def test_no_promise_means_no_watermark() -> None:
    assert watermark(NO_PROMISE, datetime.now(UTC)) is None
