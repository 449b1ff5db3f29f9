"""Event -> replica latency through the whole path on the test bed:
S3 put -> S3 notification in SQS (moto) -> SQS poller -> Kafka -> worker -> GCS and Azure.

Small objects are written at a steady rate; the latency of each is the time from the client's
put returning to the worker having verified the replica at every destination and recorded it.
Reports p50/p99 per rate, and the rate actually achieved (moto accepts ~150-180 PUT/s on two
cores, which caps the offered load).

Usage: python -m benchmarks.event_latency [--rates 50,200,500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import boto3

from connectors import open_store
from connectors.sqs import SQSQueue
from replicator.bus import AsyncConsumer, AsyncProducer, KafkaSettings, ensure_topics
from replicator.catalog import open_catalog
from replicator.devstack import DevStack, environment
from replicator.events import ChangeEvent
from replicator.ingest import Publisher, SQSPoller
from replicator.rules import Router, load_config
from replicator.service import Applier, register_datasets
from replicator.transfer import Copier
from replicator.worker import Worker


async def measure(
    rate: int, seconds: float, env: dict[str, str], workdir: Path
) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:8]
    bucket = f"lat-{suffix}"
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=f"lat-{suffix}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    config = load_config(
        {
            "routes": [
                {
                    "name": f"lat-{suffix}",
                    "source": f"s3://{bucket}/",
                    "destinations": [f"gs://lat-{suffix}/", f"az://lat-{suffix}/"],
                }
            ]
        }
    )
    for url in (f"gs://lat-{suffix}", f"az://lat-{suffix}"):
        async with open_store(url) as store:
            await store.create_container()
    settings = KafkaSettings(
        env["REPLICATOR_KAFKA_BOOTSTRAP"],
        group_id=f"g-{suffix}",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    changes, dlq = f"c-{suffix}", f"d-{suffix}"
    ensure_topics(settings, {changes: 4, dlq: 1})
    catalog = await open_catalog(f"sqlite:///{workdir}/catalog-{suffix}.db")
    await register_datasets(catalog, config)
    producer = AsyncProducer(settings)
    applier = Applier(Router(config), catalog, Copier())
    written: dict[str, float] = {}
    replicated: dict[str, float] = {}
    count = int(rate * seconds)
    all_done = asyncio.Event()

    async def timed(event: ChangeEvent) -> object:
        outcome = await applier(event)
        replicated.setdefault(event.source_url, time.perf_counter())
        if len(replicated) >= count:
            all_done.set()
        return outcome

    worker = Worker(
        AsyncConsumer(settings, [changes]), producer, timed, concurrency=64, dlq_topic=dlq
    )
    publisher = Publisher(producer, Router(config), changes_topic=changes, dlq_topic=dlq)
    poller = SQSPoller(SQSQueue(queue_url), publisher, wait_s=1)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(poller.run(stop))]
    source = open_store(f"s3://{bucket}")
    await asyncio.sleep(3)  # let the consumer join its group
    started = time.perf_counter()
    in_flight: set[asyncio.Task[None]] = set()

    async def put(index: int) -> None:
        key = f"obj-{index:06d}"
        await source.put(key, b"x" * 1024)
        written[f"s3://{bucket}/{key}"] = time.perf_counter()

    for index in range(count):
        target = started + index / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(put(index))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    offered = count / (time.perf_counter() - started)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), 120)
    stop.set()
    await asyncio.gather(*tasks)
    await applier.close()
    await poller.queue.close()
    await producer.close()
    await catalog.close()
    await source.close()
    latencies = sorted(replicated[url] - written[url] for url in written if url in replicated)
    return {
        "target_rate": rate,
        "achieved_rate": round(offered, 1),
        "events": count,
        "replicated": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else float("nan"),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1)
        if latencies
        else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", type=lambda s: [int(r) for r in s.split(",")], default=[50, 200, 500]
    )
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="replicator-latency-") as workdir:
        stack = DevStack(Path(workdir) / "stack")
        with stack as state, environment(state.env):
            for rate in args.rates:
                results.append(asyncio.run(measure(rate, args.seconds, state.env, Path(workdir))))
                print(json.dumps(results[-1]))
    print("| target events/s | achieved | events | replicated | p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['target_rate']} | {r['achieved_rate']} | {r['events']} | "
            f"{r['replicated']} | {r['p50_ms']} | {r['p99_ms']} |"
        )


if __name__ == "__main__":
    main()
