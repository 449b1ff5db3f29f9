"""The Azure Storage Queue consumer on Azurite's queue service and the real broker."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from connectors.azure_credentials import AzureCredentials
from connectors.azure_queue import AzureQueue
from replicator.devstack import StackState, free_port
from replicator.pipeline.bus import AsyncProducer, KafkaSettings
from replicator.pipeline.ingest.azure_queue import AzureQueueConsumer
from tests.ingest.conftest import Topics, broker_on, publisher_for

ACCOUNT_TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts"


def event_grid(container: str, key: str, kind: str = "BlobCreated") -> dict[str, object]:
    return {
        "topic": f"{ACCOUNT_TOPIC}/devstoreaccount1",
        "subject": f"/blobServices/default/containers/{container}/blobs/{key}",
        "eventType": f"Microsoft.Storage.{kind}",
        "eventTime": "2026-11-29T03:00:00.9584103Z",
        "id": uuid.uuid4().hex,
        "data": {"eTag": "0x8D4", "contentLength": 3, "sequencer": "0000000000000442"},
        "dataVersion": "",
        "metadataVersion": "1",
    }


def cloud_event(container: str, key: str, kind: str = "BlobDeleted") -> dict[str, object]:
    return {
        "source": f"{ACCOUNT_TOPIC}/devstoreaccount1",
        "subject": f"/blobServices/default/containers/{container}/blobs/{key}",
        "type": f"Microsoft.Storage.{kind}",
        "time": "2026-11-29T03:10:00.1234567Z",
        "id": uuid.uuid4().hex,
        "data": {"sequencer": "0000000000000281"},
        "specversion": "1.0",
    }


def b64(document: object) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.fixture
async def queue(devstack: StackState) -> AsyncIterator[AzureQueue]:
    made = AzureQueue(
        f"q{uuid.uuid4().hex[:12]}", AzureCredentials.from_environment(), visibility_timeout_s=2
    )
    await made.create()
    yield made
    await made.close()


async def drain(consumer: AzureQueueConsumer, until: int) -> None:
    """Run poll_once until ``until`` messages were settled or nothing is left."""
    deadline = time.monotonic() + 30
    publisher = consumer.publisher
    while publisher.published + publisher.dead_lettered + publisher.filtered < until:
        assert time.monotonic() < deadline
        await consumer.poll_once()


async def test_event_grid_and_cloudevents_messages_are_published_then_deleted(
    queue: AzureQueue, topics: Topics, producer: AsyncProducer
) -> None:
    """Event Grid writes base64 text; plain JSON is taken too; both schemas are understood;
    every message is deleted once Kafka has its event."""
    container = f"c{uuid.uuid4().hex[:10]}"
    await queue.send(b64(event_grid(container, "day 1/a.parquet")))
    await queue.send(b64(cloud_event(container, "b.bin")))
    await queue.send(json.dumps(event_grid(container, "plain.json")))
    publisher = publisher_for(producer, topics, f"az://{container}/")
    consumer = AzureQueueConsumer(queue, publisher, wait_s=1)
    await drain(consumer, 3)
    assert publisher.published == 3
    assert publisher.dead_lettered == 0
    records = topics.read(topics.changes, 3)
    assert sorted(key or b"" for key, _, _ in records) == sorted(
        f"az://{container}/{key}".encode() for key in ("day 1/a.parquet", "b.bin", "plain.json")
    )
    kinds = sorted(json.loads(value or b"")["kind"] for _, value, _ in records)
    assert kinds == ["delete", "put", "put"]
    assert (await queue.depth()).total == 0
    assert consumer.oldest_unpublished() is None


async def test_poison_and_too_often_received_messages_go_to_the_dlq(
    queue: AzureQueue, topics: Topics, producer: AsyncProducer
) -> None:
    container = f"c{uuid.uuid4().hex[:10]}"
    await queue.send("bm90IGpzb24=")  # base64 of "not json"
    await queue.send(b64({"eventType": "Microsoft.Storage.BlobTierChanged", "subject": "x"}))
    await queue.send("[" * 20_000 + "]" * 20_000)  # under the 64 KiB message limit
    publisher = publisher_for(producer, topics, f"az://{container}/")
    consumer = AzureQueueConsumer(queue, publisher, wait_s=1, max_receives=2)
    await drain(consumer, 3)
    assert publisher.dead_lettered == 3
    reasons = [headers["replicator.reason"] for _, _, headers in topics.read(topics.dlq, 3)]
    assert len(reasons) == 3
    assert any(b"not JSON" in reason for reason in reasons)
    assert any(b"not a blob change" in reason for reason in reasons)
    assert (await queue.depth()).total == 0
    # A message received and let go twice already is dead-lettered on its third receipt.
    await queue.send(b64(event_grid(container, "again")))
    for _ in range(2):
        [held] = await queue.receive(1, 5)
        await queue.release([held])
    await drain(consumer, 4)
    assert publisher.dead_lettered == 4
    assert publisher.published == 0
    [*_, (_, _, headers)] = topics.read(topics.dlq, 4)
    assert headers["replicator.error"] == b"TooManyReceives"
    assert (await queue.depth()).total == 0


async def test_lease_is_extended_while_publishing_and_delete_waits_for_the_broker(
    queue: AzureQueue, devstack: StackState
) -> None:
    """With the broker down for three visibility timeouts, the message stays invisible to
    other receivers (each extension gives it a new pop receipt, and the final delete uses the
    latest one) and is deleted only once the broker has the event."""
    container = f"c{uuid.uuid4().hex[:10]}"
    await queue.send(b64(event_grid(container, "slow")))
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(f"127.0.0.1:{port}", extra={"reconnect.backoff.max.ms": "500"})
    producer = AsyncProducer(settings)
    topics = Topics(settings, f"changes-{suffix}", f"dlq-{suffix}")
    publisher = publisher_for(producer, topics, f"az://{container}/")
    consumer = AzureQueueConsumer(queue, publisher, wait_s=1)
    other = AzureQueue(queue.queue, AzureCredentials.from_environment(), visibility_timeout_s=1)
    polling = asyncio.create_task(consumer.poll_once())
    try:
        deadline = time.monotonic() + 20
        while consumer.oldest_unpublished() is None:
            assert time.monotonic() < deadline
            assert not polling.done()
            await asyncio.sleep(0.05)
        window = time.monotonic() + 6
        while time.monotonic() < window:
            assert await other.receive(32, 1) == [], "the message became visible mid-publish"
        with broker_on(port):
            assert await asyncio.wait_for(polling, 60) == 1
            await producer.close()
        assert (await queue.depth()).total == 0
        assert consumer.oldest_unpublished() is None
    finally:
        polling.cancel()
        await other.close()
