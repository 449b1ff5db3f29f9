"""The push receivers while Kafka or the catalog is down: the sender is told to come back later
(503 with Retry-After), soon enough that it does not time out, and what it sends again once the
dependency is back is published."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web
from confluent_kafka import Consumer

from replicator.catalog import Role, open_catalog
from replicator.daemon.applier import record_accepted, register_datasets
from replicator.devstack import StackState
from replicator.pipeline.bus import AsyncProducer, KafkaSettings, ensure_topics
from replicator.pipeline.ingest.publisher import Acceptor, Publisher
from replicator.pipeline.ingest.receivers import add_ingest_routes
from replicator.pipeline.rules import Router, load_config
from tests.private_broker import PrivateBroker, wait_for_broker
from tests.service.test_catalog_outage import hold_lock

SAMPLE = (Path(__file__).parent.parent / "events" / "samples" / "s3_sqs_put.json").read_bytes()
SOURCE_KEY = "s3://lake/clickstream/My Summer! photo €.jpg".encode()
TOKEN = "s3cr3t-token"
CONFIG = load_config(
    {"routes": [{"name": "s3", "source": "s3://lake/", "destinations": ["gs://copy/"]}]}
)


@asynccontextmanager
async def receiver(publisher: Publisher, answer_within: float) -> AsyncIterator[str]:
    app = web.Application()
    add_ingest_routes(app, publisher, TOKEN, answer_within=answer_within)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/ingest/s3"
    finally:
        await runner.cleanup()


async def post(url: str) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=SAMPLE, headers={"Authorization": f"Bearer {TOKEN}"}) as response,
    ):
        await response.read()
        return response.status, dict(response.headers), time.monotonic() - started


def published_keys(bootstrap: str, topic: str) -> list[bytes]:
    """The keys on ``topic`` once at least one record is there (empty after 30 s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    keys: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while not keys and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                keys.append(message.key() or b"")
    finally:
        consumer.close()
    return keys


async def test_kafka_down_is_answered_503_in_time_and_the_retry_is_published(
    private_broker: PrivateBroker,
) -> None:
    await asyncio.to_thread(wait_for_broker, private_broker.bootstrap)
    settings = KafkaSettings(private_broker.bootstrap)
    ensure_topics(settings, {"changes": 1, "dlq": 1})
    producer = AsyncProducer(settings)
    publisher = Publisher(producer, Router(CONFIG), changes_topic="changes", dlq_topic="dlq")
    try:
        async with receiver(publisher, answer_within=1.0) as url:
            private_broker.kill()
            status, headers, took = await post(url)
            assert status == 503
            assert int(headers["Retry-After"]) > 0
            assert took < 5, "the sender would have timed out waiting for the answer"

            private_broker.start()
            await asyncio.to_thread(wait_for_broker, private_broker.bootstrap)
            # The broker keeps its topics in memory: it comes back without them.
            ensure_topics(settings, {"changes": 1, "dlq": 1})
            status = 503
            deadline = time.monotonic() + 60
            while status == 503 and time.monotonic() < deadline:
                status, _, _ = await post(url)  # the sender's retry
            assert status == 202
        keys = await asyncio.to_thread(published_keys, private_broker.bootstrap, "changes")
        assert keys
        assert set(keys) == {SOURCE_KEY}
    finally:
        await producer.close()


async def test_catalog_down_is_answered_503_and_the_retry_is_recorded_and_published(
    devstack: StackState, tmp_path: Path
) -> None:
    """The change must be recorded pending before it is published (it holds the watermark):
    while the catalog is locked past its busy timeout, nothing is published and the sender is
    told to retry."""
    bootstrap = devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"]
    suffix = uuid.uuid4().hex[:8]
    changes, dlq = f"changes-{suffix}", f"dlq-{suffix}"
    settings = KafkaSettings(bootstrap)
    ensure_topics(settings, {changes: 1, dlq: 1})
    path = tmp_path / "catalog.db"
    catalog = await open_catalog(f"sqlite:///{path}?busy_timeout=200ms")
    await register_datasets(catalog, CONFIG)
    router = Router(CONFIG)
    accept: Acceptor = lambda events: record_accepted(catalog, router, events)  # noqa: E731
    producer = AsyncProducer(settings)
    publisher = Publisher(producer, router, changes_topic=changes, dlq_topic=dlq, accept=accept)
    try:
        async with receiver(publisher, answer_within=5.0) as url:
            locked = threading.Event()
            holder = asyncio.create_task(asyncio.to_thread(hold_lock(path, 3.0, locked)))
            await asyncio.to_thread(locked.wait)
            status, headers, _ = await post(url)
            assert status == 503
            assert "Retry-After" in headers
            assert publisher.published == 0
            await holder
            status, _, _ = await post(url)
            assert status == 202
        assert await asyncio.to_thread(published_keys, bootstrap, changes) == [SOURCE_KEY]
        [entry] = await catalog.ls("s3")
        assert entry.key == "clickstream/My Summer! photo €.jpg"
        assert [loc.state for loc in entry.locations if loc.role == Role.REPLICA] == ["pending"]
    finally:
        await producer.close()
        await catalog.close()
