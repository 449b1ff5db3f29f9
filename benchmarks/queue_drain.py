"""How fast the SQS poller drains a queue into Kafka on the test bed, and at what CPU cost.

N S3 notifications are put in a fresh SQS queue (moto), then the poller (``receivers`` loops)
publishes them to a fresh topic (Tansu); reports messages per second and the client process's
CPU seconds (user+sys) per message. moto's receive slows down as its queue grows, so compare
runs of the same N.

Usage: python -m benchmarks.queue_drain [--messages 500] [--receivers 4]
Reuses a running devstack (REPLICATOR_DEVSTACK_DIR) or starts S3 and Kafka for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3

from connectors.sqs import SQSQueue
from replicator.devstack import DevStack, StackState, environment
from replicator.pipeline.bus import AsyncProducer, KafkaSettings, ensure_topics
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.sqs import SQSPoller
from replicator.pipeline.rules import Router, load_config


def notification(key: str) -> str:
    return (
        '{"Records": [{"eventVersion": "2.1", "eventTime": "2026-11-29T03:00:00.123Z", '
        '"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "bench"}, '
        '"object": {"key": "' + key + '", "size": 3, "eTag": "abc"}}}]}'
    )


@contextlib.contextmanager
def stack() -> Iterator[StackState]:
    running = DevStack().running()
    if running is not None:
        yield running
        return
    with tempfile.TemporaryDirectory() as workdir:
        started = DevStack(Path(workdir), components=("s3", "kafka"))
        try:
            yield started.up()
        finally:
            started.down()


async def drain(env: dict[str, str], messages: int, receivers: int) -> str:
    sqs = boto3.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    for start in range(0, messages, 10):
        entries = [
            {"Id": str(i), "MessageBody": notification(f"k{start + i}")}
            for i in range(min(10, messages - start))
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    settings = KafkaSettings(env["REPLICATOR_KAFKA_BOOTSTRAP"])
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, {topic: 4, f"{topic}-dlq": 1})
    producer = AsyncProducer(settings)
    routes = [{"name": "bench", "source": "s3://bench/", "destinations": ["mem://copy/"]}]
    publisher = Publisher(
        producer,
        Router(load_config({"routes": routes})),
        changes_topic=topic,
        dlq_topic=f"{topic}-dlq",
    )
    poller = SQSPoller(SQSQueue(url), publisher, wait_s=1, receivers=receivers)
    stop = asyncio.Event()
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    running = asyncio.create_task(poller.run(stop))
    while True:  # sampled: the publisher's count is the finish line
        if publisher.published >= messages:
            break
        await asyncio.sleep(0.01)
    elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    await running
    await poller.queue.close()
    await producer.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    per_message_ms = cpu / messages * 1000
    return (
        f"{messages} messages, {receivers} receivers: {elapsed:.2f} s, "
        f"{messages / elapsed:.0f} msg/s, client CPU {cpu:.2f} s ({per_message_ms:.2f} ms/msg)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--receivers", type=int, default=4)
    args = parser.parse_args()
    with stack() as state, environment(state.env):
        print(asyncio.run(drain(dict(os.environ), args.messages, args.receivers)))


if __name__ == "__main__":
    main()
