"""A route with two destinations on real stores (S3 source on moto, GCS and Azure replicas on
their emulators), a real catalog file that several "daemons" (appliers with their held
changes runner) can share, and a changes topic of its own on the Kafka-protocol broker, whose
partitions one worker (the partition owner) applies with an applier of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors import open_store
from connectors.base import ObjectStore
from replicator.catalog import Catalog, open_catalog
from replicator.catalog.lag import RouteLag
from replicator.daemon.applier import Applier, register_datasets
from replicator.daemon.held import HeldChangesRunner, ReplicationPauses
from replicator.daemon.service import make_worker
from replicator.devstack import StackState
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import Copier
from replicator.pipeline.bus import AsyncConsumer, AsyncProducer, KafkaSettings, ensure_topics
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, RoutingConfig, load_config
from replicator.pipeline.worker import Worker

DEADLINE_S = 20.0
PARTITIONS = 4


@dataclass
class Daemon:
    """What one daemon brings to the controls: its catalog connection, applier and runner."""

    catalog: Catalog
    applier: Applier
    runner: HeldChangesRunner

    async def close(self) -> None:
        await self.applier.close()
        await self.catalog.close()


@dataclass
class Bed:
    route: str
    source_url: str
    paused_url: str
    other_url: str
    catalog_url: str
    config: RoutingConfig
    kafka: KafkaSettings
    topic: str
    producer: AsyncProducer
    daemons: list[Daemon] = field(default_factory=list)
    #: Wrappers of the stores the partition owner opens, by root URL (set before it opens one).
    owner_wrappers: dict[str, Callable[[ObjectStore], ObjectStore]] = field(default_factory=dict)
    #: The partition owner's worker, once it runs.
    worker: Worker[ChangeEvent] | None = None

    def owner_store(self, url: str) -> ObjectStore:
        store = open_store(url)
        wrap = self.owner_wrappers.get(url)
        return store if wrap is None else wrap(store)

    async def daemon(self, *, retry_budget: int = 3) -> Daemon:
        catalog = await open_catalog(self.catalog_url)
        router = Router(self.config)
        applier = Applier(router, catalog, Copier(), retry_budget=retry_budget)
        runner = HeldChangesRunner(
            catalog,
            ReplicationPauses(catalog, router),
            router,
            self.producer,
            changes_topic=self.topic,
            retry_after=timedelta(seconds=0.2),
        )
        self.daemons.append(Daemon(catalog, applier, runner))
        return self.daemons[-1]

    async def settled(self, destination: str) -> None:
        """Wait until nothing is pending or failed at ``destination`` (the partition owner
        applied what the runners published)."""

        async def none_left() -> bool:
            lag = await self.lag(destination)
            return (lag.pending_ops, lag.failed_ops) == (0, 0)

        await eventually(none_left, f"every change applied at {destination}")

    def store(self, url: str) -> ObjectStore:
        return self.daemons[0].applier.store(url)

    def event(self, kind: str, key: str) -> ChangeEvent:
        return ChangeEvent(
            kind=kind,  # type: ignore[arg-type]
            source_url=self.source_url + key,
            version=None,
            sequencer="",
            size=None,
            etag=None,
            event_time=datetime.now(UTC),
            origin="s3",
        )

    async def lag(self, destination: str) -> RouteLag:
        [lag] = await self.daemons[0].catalog.route_lag(destination=destination)
        return lag


async def make_bed(
    devstack: StackState, tmp_path: Path, catalog_url: str | None = None
) -> AsyncIterator[Bed]:
    tag = uuid.uuid4().hex[:10]
    source_url = f"s3://src-{tag}/"
    paused_url, other_url = f"gs://paused-{tag}/", f"az://other-{tag}/"
    route = f"r{tag}"
    config = load_config(
        {"routes": [{"name": route, "source": source_url, "destinations": [paused_url, other_url]}]}
    )
    catalog_url = catalog_url or f"sqlite:///{tmp_path}/c.db"
    kafka = KafkaSettings(
        devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"],
        group_id=f"group-{tag}",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    topic, dlq = f"changes-{tag}", f"dlq-{tag}"
    ensure_topics(kafka, {topic: PARTITIONS, dlq: 1})
    producer = AsyncProducer(kafka)
    bed = Bed(route, source_url, paused_url, other_url, catalog_url, config, kafka, topic, producer)
    first = await bed.daemon()
    await register_datasets(first.catalog, config)
    for url in (source_url, paused_url, other_url):
        await first.applier.store(url).create_container()
    # The owner of the changes topic's partitions: a worker of its own, as in a daemon.
    owner_catalog = await open_catalog(catalog_url)
    owner = Applier(
        Router(config), owner_catalog, Copier(), store_factory=bed.owner_store, retry_budget=3
    )
    worker = bed.worker = make_worker(
        AsyncConsumer(kafka, [topic]),
        producer,
        owner,
        workers=8,
        dlq_topic=dlq,
        retry=RetryPolicy(base_delay=0.05, max_delay=0.2, max_attempts=5),
        commit_interval_s=0.2,
    )
    stop = asyncio.Event()
    owning = asyncio.create_task(worker.run(stop))
    try:
        yield bed
    finally:
        stop.set()
        await owning
        await owner.close()
        await owner_catalog.close()
        for daemon in bed.daemons:
            await daemon.close()
        await producer.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds, failing after ``DEADLINE_S``."""
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.05)
