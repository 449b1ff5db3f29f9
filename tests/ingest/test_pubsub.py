"""The Pub/Sub pull subscriber against the REST stand-in (tests/ingest/pubsub_standin.py: no
Pub/Sub emulator installs here) and the real broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from connectors.pubsub import PubSubSubscription
from replicator.devstack import StackState, environment, free_port
from replicator.pipeline.bus import AsyncProducer, KafkaSettings
from replicator.pipeline.ingest.pubsub import PubSubConsumer
from tests.ingest.conftest import Topics, broker_on, publisher_for
from tests.ingest.pubsub_standin import PubSubStandIn, serve


def gcs_notification(
    bucket: str, key: str, event: str = "OBJECT_FINALIZE", generation: str = "17"
) -> tuple[bytes, dict[str, str]]:
    resource = {"bucket": bucket, "name": key, "generation": generation, "size": "3"}
    attributes = {
        "eventType": event,
        "payloadFormat": "JSON_API_V1",
        "bucketId": bucket,
        "objectId": key,
        "objectGeneration": generation,
        "eventTime": "2026-11-29T03:00:00.123456Z",
    }
    return json.dumps(resource).encode(), attributes


@pytest.fixture
async def standin(devstack: StackState) -> AsyncIterator[PubSubStandIn]:
    made = PubSubStandIn()
    async for host in serve(made):
        with environment({"PUBSUB_EMULATOR_HOST": host}):
            yield made


def new_subscription(standin: PubSubStandIn, ack_deadline_s: int = 10, **options: bool) -> str:
    return standin.subscription(
        f"projects/p/subscriptions/s{uuid.uuid4().hex[:8]}",
        ack_deadline_s=ack_deadline_s,
        **options,
    )


async def test_notifications_are_published_then_acknowledged(
    standin: PubSubStandIn, topics: Topics, producer: AsyncProducer
) -> None:
    """Creations and deletions reach Kafka keyed by URL; metadata updates and the deletion
    shadow of an overwrite publish nothing; every message is acknowledged after Kafka has
    what it carried, and none is delivered twice."""
    bucket = f"b{uuid.uuid4().hex[:10]}"
    path = new_subscription(standin)
    ids = [
        standin.publish(path, *gcs_notification(bucket, "a b.parquet")),
        standin.publish(path, *gcs_notification(bucket, "gone", "OBJECT_DELETE")),
        standin.publish(path, *gcs_notification(bucket, "meta", "OBJECT_METADATA_UPDATE")),
    ]
    shadow_data, shadow = gcs_notification(bucket, "a b.parquet", "OBJECT_DELETE", "16")
    shadow["overwrittenByGeneration"] = "17"
    ids.append(standin.publish(path, shadow_data, shadow))
    publisher = publisher_for(producer, topics, f"gs://{bucket}/")
    subscription = PubSubSubscription(path)
    consumer = PubSubConsumer(subscription, publisher, wait_s=1)
    try:
        deadline = time.monotonic() + 20
        while len(standin.subscriptions[path].acked) < len(ids):
            assert time.monotonic() < deadline
            await consumer.poll_once()
    finally:
        await subscription.close()
    assert standin.subscriptions[path].acked == set(ids)
    assert all(m.deliveries == 1 for m in standin.subscriptions[path].messages.values())
    records = topics.read(topics.changes, 2)
    assert sorted((key or b"", json.loads(value or b"")["kind"]) for key, value, _ in records) == [
        (f"gs://{bucket}/a b.parquet".encode(), "put"),
        (f"gs://{bucket}/gone".encode(), "delete"),
    ]
    assert publisher.published == 2
    assert consumer.oldest_unpublished() is None


async def test_poison_is_dead_lettered_and_acknowledged(
    standin: PubSubStandIn, topics: Topics, producer: AsyncProducer
) -> None:
    path = new_subscription(standin, dead_letter=True)
    first = standin.publish(path, b"{}", {"eventType": "OBJECT_FINALIZE"})  # no bucket or key
    data, attributes = gcs_notification("b", "k")
    second = standin.publish(path, b"\xff not json", attributes)
    publisher = publisher_for(producer, topics, "gs://b/")
    subscription = PubSubSubscription(path)
    consumer = PubSubConsumer(subscription, publisher, wait_s=1)
    try:
        assert await consumer.poll_once() == 0
    finally:
        await subscription.close()
    assert standin.subscriptions[path].acked == {first, second}
    reasons = sorted(h["replicator.reason"] for _, _, h in topics.read(topics.dlq, 2))
    assert len(reasons) == 2
    assert any(b"bucketId" in reason for reason in reasons)
    assert any(b"not JSON" in reason for reason in reasons)
    assert data  # the good resource was never published: its data was replaced


async def test_deadline_extended_while_publishing_and_flow_control_bounds_outstanding(
    standin: PubSubStandIn, devstack: StackState
) -> None:
    """With the broker down for several ack deadlines, nothing is redelivered (the deadline
    is extended), no more than receivers x batch messages are ever outstanding, and once the
    broker is up every message is published and acknowledged."""
    bucket = f"b{uuid.uuid4().hex[:10]}"
    path = new_subscription(standin, ack_deadline_s=2)
    ids = [standin.publish(path, *gcs_notification(bucket, f"k{i}")) for i in range(20)]
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(f"127.0.0.1:{port}", extra={"reconnect.backoff.max.ms": "500"})
    producer = AsyncProducer(settings)
    publisher = publisher_for(
        producer, Topics(settings, f"changes-{suffix}", f"dlq-{suffix}"), f"gs://{bucket}/"
    )
    subscription = PubSubSubscription(path, ack_deadline_s=2)
    consumer = PubSubConsumer(subscription, publisher, batch=3, receivers=2, wait_s=1)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    state = standin.subscriptions[path]
    try:
        window = time.monotonic() + 7
        while time.monotonic() < window:
            assert state.outstanding <= 6
            assert all(m.deliveries <= 1 for m in state.messages.values()), "redelivered"
            await asyncio.sleep(0.1)
        assert state.outstanding == 6
        with broker_on(port):
            deadline = time.monotonic() + 60
            while len(state.acked) < len(ids):
                assert time.monotonic() < deadline
                assert not running.done()
                assert state.outstanding <= 6
                await asyncio.sleep(0.05)
            stop.set()
            await running
            await producer.close()
    finally:
        stop.set()
        await subscription.close()
    assert publisher.published == 20
    assert consumer.oldest_unpublished() is None


async def test_a_stopping_subscriber_hands_back_what_it_holds_at_once(
    standin: PubSubStandIn, devstack: StackState
) -> None:
    """Stopped while Kafka is unreachable, the subscriber nacks its unpublished messages so
    another daemon gets them now, not after the ack deadline."""
    path = new_subscription(standin, ack_deadline_s=60)
    standin.publish(path, *gcs_notification("b", "k"))
    # No broker there; the record expires after 3 s, so that closing the producer is quick.
    settings = KafkaSettings(f"127.0.0.1:{free_port()}", extra={"message.timeout.ms": "3000"})
    producer = AsyncProducer(settings)
    publisher = publisher_for(producer, Topics(settings, "c", "d"), "gs://b/")
    subscription = PubSubSubscription(path, ack_deadline_s=60)
    consumer = PubSubConsumer(subscription, publisher, wait_s=1, drain_s=0.5)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    state = standin.subscriptions[path]
    try:
        deadline = time.monotonic() + 10
        while state.outstanding == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        stop.set()
        await running
        assert state.outstanding == 0
        assert state.acked == set()
        assert consumer.oldest_unpublished() is None
    finally:
        await subscription.close()
        await producer.close()
