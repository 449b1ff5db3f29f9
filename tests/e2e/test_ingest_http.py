"""The push receivers on a real HTTP port and the SQS poller on the real queue service, publishing
to the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiobotocore.session import AioSession
from aiohttp import web
from confluent_kafka import Consumer

from connectors import open_store
from connectors.sqs import SQSQueue
from replicator.devstack import StackState
from replicator.pipeline.bus import AsyncProducer, KafkaSettings, ensure_topics
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.receivers import add_ingest_routes
from replicator.pipeline.ingest.sqs import SQSPoller
from replicator.pipeline.rules import Router, load_config

SAMPLES = Path(__file__).parent.parent / "events" / "samples"
TOKEN = "s3cr3t-token"


class Receiver:
    def __init__(
        self, base: str, publisher: Publisher, settings: KafkaSettings, changes: str, dlq: str
    ) -> None:
        self.base = base
        self.publisher = publisher
        self.settings = settings
        self.changes = changes
        self.dlq = dlq

    def read(self, topic: str, expected: int) -> list[tuple[bytes | None, bytes | None]]:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.bootstrap,
                "group.id": uuid.uuid4().hex,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 2000,
                "heartbeat.interval.ms": 300,
            }
        )
        consumer.subscribe([topic])
        found: list[tuple[bytes | None, bytes | None]] = []
        try:
            for _ in range(150):
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    found.append((message.key(), message.value()))
                if len(found) >= expected:
                    break
        finally:
            consumer.close()
        return found


@pytest.fixture
async def receiver(devstack: StackState) -> AsyncIterator[Receiver]:
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    changes, dlq = f"changes-{suffix}", f"dlq-{suffix}"
    ensure_topics(settings, {changes: 2, dlq: 1})
    producer = AsyncProducer(settings)
    router = Router(
        load_config(
            {
                "routes": [
                    {"name": "s3", "source": "s3://lake/", "destinations": ["gs://copy/"]},
                    {"name": "gcs", "source": "gs://ml/", "destinations": ["az://copy/"]},
                    {"name": "azure", "source": "az://lake/", "destinations": ["s3://copy/"]},
                ]
            }
        )
    )
    # The Event Grid sample's account is "acct": the default account here.
    publisher = Publisher(
        producer, router, changes_topic=changes, dlq_topic=dlq, azure_default_account="acct"
    )
    app = web.Application()
    add_ingest_routes(app, publisher, TOKEN)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Receiver(f"http://127.0.0.1:{port}", publisher, settings, changes, dlq)
    await runner.cleanup()
    await producer.close()


async def post(
    url: str, body: bytes, token: str | None = TOKEN, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={**auth, **(headers or {})}) as response,
    ):
        return response.status, await response.text()


async def test_each_cloud_format_is_published_keyed_by_source(receiver: Receiver) -> None:
    """S3 (SQS body and SNS envelope), GCS push and Event Grid bodies land on the changes
    topic, keyed by the source object URL."""
    for path, sample in [
        ("/ingest/s3", "s3_sqs_put.json"),
        ("/ingest/s3", "s3_sns_envelope.json"),
        ("/ingest/gcs", "gcs_finalize_push.json"),
        ("/ingest/azure", "azure_eventgrid_created.json"),
    ]:
        status, _ = await post(receiver.base + path, (SAMPLES / sample).read_bytes())
        assert status == 202, sample
    keys = sorted(key or b"" for key, _ in receiver.read(receiver.changes, 4))
    assert keys == sorted(
        [
            "s3://lake/clickstream/My Summer! photo €.jpg".encode(),
            b"s3://lake/sns/key with spaces",
            "gs://ml/datasets/tokens ü.bin".encode(),
            b"az://lake/clickstream/day 1/part-0.parquet",
        ]
    )


async def test_wrong_or_missing_token_is_refused(receiver: Receiver) -> None:
    body = (SAMPLES / "s3_sqs_put.json").read_bytes()
    assert (await post(receiver.base + "/ingest/s3", body, token="wrong"))[0] == 401
    assert (await post(receiver.base + "/ingest/s3", body, token=None))[0] == 401
    status, _ = await post(receiver.base + f"/ingest/s3?token={TOKEN}", body, token=None)
    assert status == 202


async def test_poison_goes_to_the_dlq_and_ingestion_goes_on(receiver: Receiver) -> None:
    """Malformed bodies are accepted (so senders do not retry them forever), parked in the
    DLQ with a reason, and a good body right after is still published."""
    for body in [b"not json", b'{"Records": [{"eventVersion": "1.0"}]}', b"\xff\xfe"]:
        status, _ = await post(receiver.base + "/ingest/s3", body)
        assert status == 202
    status, _ = await post(receiver.base + "/ingest/s3", (SAMPLES / "s3_sqs_put.json").read_bytes())
    assert status == 202
    assert receiver.publisher.dead_lettered == 3
    assert len(receiver.read(receiver.dlq, 3)) == 3
    assert len(receiver.read(receiver.changes, 1)) == 1


async def test_event_grid_handshakes(receiver: Receiver) -> None:
    status, text = await post(
        receiver.base + "/ingest/azure", (SAMPLES / "azure_validation.json").read_bytes()
    )
    assert status == 200
    assert "512d38b6-c7b8-40c8-89fe-f46f9e9622b6" in text
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            receiver.base + "/ingest/azure",
            headers={
                "Authorization": f"Bearer {TOKEN}",
                "WebHook-Request-Origin": "eventgrid.azure.net",
            },
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


async def test_unrouted_events_are_filtered(receiver: Receiver) -> None:
    body = (SAMPLES / "s3_eventbridge_created.json").read_bytes().replace(b'"lake"', b'"other"')
    status, text = await post(receiver.base + "/ingest/s3", body)
    assert status == 202
    assert '"published": 0' in text
    assert receiver.publisher.filtered == 1


async def test_sns_confirmation_refuses_foreign_hosts(receiver: Receiver) -> None:
    """A SubscribeURL outside the allowed hosts is never fetched."""
    body = (
        (SAMPLES / "s3_sns_subscription_confirmation.json")
        .read_bytes()
        .replace(b"sns.us-west-2.amazonaws.com", b"evil.example.com")
    )
    status, text = await post(
        receiver.base + "/ingest/s3",
        body,
        headers={"x-amz-sns-message-type": "SubscriptionConfirmation"},
    )
    assert status == 400
    assert "not allowed" in text


async def test_sqs_poller_with_several_receivers_publishes_and_deletes_every_message(
    receiver: Receiver,
) -> None:
    """Receivers drain one queue together: every object's notification reaches the changes
    topic keyed by its URL, and no message is left in the queue, visible or in flight."""
    bucket = f"sqs-{uuid.uuid4().hex[:12]}"
    router = Router(
        load_config(
            {
                "routes": [
                    {"name": bucket, "source": f"s3://{bucket}/", "destinations": ["gs://copy/"]}
                ]
            }
        )
    )
    publisher = Publisher(
        receiver.publisher.producer, router, changes_topic=receiver.changes, dlq_topic=receiver.dlq
    )
    async with open_store(f"s3://{bucket}") as source:
        await source.create_container()
        queue_url = await SQSQueue.create(bucket)
        await SQSQueue.notify_bucket(bucket, queue_url)
        keys = [f"obj-{index:02d}" for index in range(30)]
        for key in keys:
            await source.put(key, key.encode())
    poller = SQSPoller(SQSQueue(queue_url), publisher, wait_s=1, receivers=3)
    stop = asyncio.Event()
    running = asyncio.create_task(poller.run(stop))
    for _ in range(1200):
        if publisher.published >= len(keys):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await running
    await poller.queue.close()
    published = {key for key, _ in receiver.read(receiver.changes, publisher.published)}
    assert published == {f"s3://{bucket}/{key}".encode() for key in keys}
    async with AioSession().create_client("sqs", region_name="us-east-1") as sqs:
        attributes = await sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    assert attributes["Attributes"] == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }
