"""The SQS poller under faults, on the real queue service (moto) and the real broker: poison
bodies, a killed poller, a publish slower than the visibility timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from connectors.queues import SQS_VISIBILITY_TIMEOUT_S
from connectors.sqs import SQSQueue
from replicator.daemon.config import SQSSection
from replicator.devstack import StackState, free_port
from replicator.pipeline.bus import AsyncProducer, KafkaSettings
from replicator.pipeline.ingest.sqs import SQSPoller
from tests.ingest.conftest import Topics, broker_on, publisher_for, s3_put_body, sqs_client


def new_queue() -> tuple[Any, str]:
    sqs: Any = sqs_client()
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    return sqs, url


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def test_poison_bodies_go_to_the_dlq_with_a_reason_and_leave_the_queue(
    topics: Topics, producer: AsyncProducer
) -> None:
    """Bodies that break the parser in every way (deep nesting raises RecursionError, not a
    ParseError) are dead-lettered with their reason and deleted; the good message among them
    is published and the poller keeps running. (SQS delivers at least once, and moto's
    concurrent receives do hand a message out twice now and then: counts are lower bounds.)"""
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    sqs, url = new_queue()
    poison = {
        "nested": "[" * 100_000 + "]" * 100_000,
        "not json": "not json at all",
        "oversized": '{"Records": [], "padding": "' + "€" * 300_000 + '"}',
        "wrong types": '{"Records": [{"eventVersion": "2.1", "eventName": 5}]}',
    }
    for body in poison.values():
        sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.send_message(QueueUrl=url, MessageBody=s3_put_body(bucket, "good"))
    publisher = publisher_for(producer, topics, f"s3://{bucket}/")
    poller = SQSPoller(SQSQueue(url), publisher, wait_s=1, receivers=2)
    stop = asyncio.Event()
    running = asyncio.create_task(poller.run(stop))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not running.done():
        settled = publisher.published >= 1 and publisher.dead_lettered >= len(poison)
        if settled and queue_counts(sqs, url) == (0, 0):
            break
        await asyncio.sleep(0.05)
    assert not running.done(), running.exception()
    stop.set()
    await running
    await poller.queue.close()
    assert publisher.published >= 1
    dead = topics.read(topics.dlq, publisher.dead_lettered)
    assert len({value for _, value, _ in dead}) == len(poison)
    reasons = sorted(headers["replicator.reason"].decode() for _, _, headers in dead)
    assert any("RecursionError" in reason or "nest" in reason for reason in reasons), reasons
    assert any("exceeds" in reason for reason in reasons), reasons
    assert all(headers["replicator.origin"] == b"sqs" for _, _, headers in dead)
    assert all(len(value or b"") <= 900_000 for _, value, _ in dead)
    published = {key for key, _, _ in topics.read(topics.changes, publisher.published)}
    assert published == {f"s3://{bucket}/good".encode()}
    assert queue_counts(sqs, url) == (0, 0)


async def test_a_message_received_too_often_is_dead_lettered(
    topics: Topics, producer: AsyncProducer
) -> None:
    """A message whose receive count passed the limit (it took down or outlived the pollers
    that received it before) goes to the DLQ instead of round again."""
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    sqs, url = new_queue()
    sqs.send_message(QueueUrl=url, MessageBody=s3_put_body(bucket, "again"))
    for _ in range(3):  # received and let go, as by pollers that died holding it
        received = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"], VisibilityTimeout=0
        )
    publisher = publisher_for(producer, topics, f"s3://{bucket}/")
    poller = SQSPoller(SQSQueue(url), publisher, wait_s=1, max_receives=3)
    assert await poller.poll_once() == 0
    await poller.queue.close()
    assert publisher.dead_lettered == 1
    [(_, _, headers)] = topics.read(topics.dlq, 1)
    assert b"received 4 times" in headers["replicator.reason"]
    assert queue_counts(sqs, url) == (0, 0)


POLLER_SCRIPT = """
import asyncio, sys
from connectors.sqs import SQSQueue
from replicator.pipeline.bus import AsyncProducer, KafkaSettings
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.sqs import SQSPoller
from replicator.pipeline.rules import Router, load_config

async def main():
    router = Router(load_config({"routes": [
        {"name": "r", "source": sys.argv[3], "destinations": ["mem://copy/"]}]}))
    producer = AsyncProducer(KafkaSettings(sys.argv[2]))
    poller = SQSPoller(SQSQueue(sys.argv[1]), Publisher(producer, router), wait_s=1)
    await poller.run(asyncio.Event())

asyncio.run(main())
"""


async def test_a_killed_pollers_messages_come_back_quickly(devstack: StackState) -> None:
    """A poller SIGKILLed while it holds received, unpublished messages (its broker is
    unreachable) leaves them invisible only for the short default visibility timeout."""
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    sqs, url = new_queue()
    for index in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=s3_put_body(bucket, f"k{index}"))
    dead_broker = f"127.0.0.1:{free_port()}"
    poller = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        POLLER_SCRIPT,
        url,
        dead_broker,
        f"s3://{bucket}/",
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while queue_counts(sqs, url) != (0, 3):
            assert time.monotonic() < deadline, "the poller never received the messages"
            assert poller.returncode is None
            await asyncio.sleep(0.1)
    finally:
        poller.send_signal(signal.SIGKILL)
        await poller.wait()
    killed = time.monotonic()
    seen: set[str] = set()
    while len(seen) < 3 and time.monotonic() - killed < 2 * SQS_VISIBILITY_TIMEOUT_S + 10:
        response = await asyncio.to_thread(
            sqs.receive_message, QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        seen.update(message["MessageId"] for message in response.get("Messages", []))
    assert len(seen) == 3
    assert time.monotonic() - killed <= SQS_VISIBILITY_TIMEOUT_S + 5
    assert SQS_VISIBILITY_TIMEOUT_S <= 30
    assert SQSSection(queue_url=url).visibility_timeout_s == SQS_VISIBILITY_TIMEOUT_S


async def test_visibility_is_extended_while_publishing_and_the_backlog_holds_the_event(
    devstack: StackState,
) -> None:
    """A publish that outlasts the visibility timeout (the broker comes up only later) keeps
    the message invisible to every other receiver; until it is published the poller reports
    the event's time as its oldest unpublished change and the queue's in-flight count; then
    the message is deleted and the backlog is empty."""
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    sqs, url = new_queue()
    sqs.send_message(
        QueueUrl=url, MessageBody=s3_put_body(bucket, "slow", "2026-11-29T03:00:00.500Z")
    )
    port = free_port()
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(f"127.0.0.1:{port}", extra={"reconnect.backoff.max.ms": "500"})
    producer = AsyncProducer(settings)
    topics = Topics(settings, f"changes-{suffix}", f"dlq-{suffix}")
    publisher = publisher_for(producer, topics, f"s3://{bucket}/")
    poller = SQSPoller(SQSQueue(url, visibility_timeout_s=2), publisher, wait_s=1)
    stop = asyncio.Event()
    running = asyncio.create_task(poller.run(stop))
    try:
        deadline = time.monotonic() + 20
        while poller.oldest_unpublished() is None:
            assert time.monotonic() < deadline
            assert not running.done()
            await asyncio.sleep(0.05)
        assert poller.oldest_unpublished() == datetime(2026, 11, 29, 3, 0, 0, 500_000, UTC)
        depth = await poller.queue_depth()
        assert depth is not None
        assert depth.in_flight == 1
        # Three visibility timeouts pass: another receiver must never get the message.
        window = time.monotonic() + 6
        while time.monotonic() < window:
            response = await asyncio.to_thread(
                sqs.receive_message, QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=0
            )
            assert not response.get("Messages"), "the message became visible mid-publish"
        with broker_on(port):
            deadline = time.monotonic() + 60
            while publisher.published < 1:
                assert time.monotonic() < deadline
                assert not running.done()
                await asyncio.sleep(0.05)
            while queue_counts(sqs, url) != (0, 0):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert poller.oldest_unpublished() is None
            stop.set()
            await running
            await producer.close()
    finally:
        stop.set()
        await poller.queue.close()
