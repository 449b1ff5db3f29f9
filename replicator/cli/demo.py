"""The demo: the daemon on the local stack, replicating a small data lake from S3 to GCS, Azure
and a local directory as S3 notifications arrive, then reporting lag from the catalog.

1. an S3 bucket sends its event notifications to an SQS queue (as on AWS);
2. the daemon polls the queue, publishes to Kafka, and its workers copy each object to every
   destination, verify it and record it in the catalog;
3. the demo writes objects (one of 40 MiB, so it goes in parallel parts), overwrites and
   deletes one, waits until every replica matches its source byte for byte, and prints what
   the catalog knows: lag per route and where each object lives.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from connectors import open_store
from connectors.base import MiB, NotFound, ObjectAttributes, ObjectStore
from connectors.sqs import SQSQueue
from replicator.catalog import open_catalog
from replicator.daemon.config import DaemonConfig
from replicator.daemon.service import Daemon
from replicator.engine import hashing

DEADLINE_S = 120


def _objects(count: int) -> dict[str, bytes]:
    sizes = [1, 4096, 300_000, 5 * MiB + 7]
    objects = {
        f"clickstream/2026/11/29/part-{i:04d}.parquet": os.urandom(sizes[i % len(sizes)])
        for i in range(max(count - 1, 1))
    }
    objects["models/checkpoint-0001.safetensors"] = os.urandom(40 * MiB + 123)
    return objects


async def _matches(store: ObjectStore, key: str, expected: bytes | None) -> bool:
    try:
        data = await store.read(key)
    except NotFound:
        return expected is None
    return expected is not None and hashing.fingerprint(data) == hashing.fingerprint(expected)


async def run_demo(
    count: int, workdir: Path, log: Callable[[str], None] = print
) -> dict[str, object]:
    queue_url = await SQSQueue.create("demo-lake-events")
    source = open_store("s3://demo-lake")
    destinations = {
        "gs://demo-ml/": open_store("gs://demo-ml"),
        "az://demo-lake/": open_store("az://demo-lake"),
        f"file://{workdir}/onprem/": open_store(f"file://{workdir}/onprem"),
    }
    for store in (source, *destinations.values()):
        await store.create_container()
    await SQSQueue.notify_bucket("demo-lake", queue_url)
    config = DaemonConfig.model_validate(
        {
            "kafka": {
                "bootstrap": os.environ["REPLICATOR_KAFKA_BOOTSTRAP"],
                "partitions": 4,
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 300,
            },
            "catalog": {"url": f"sqlite:///{workdir}/catalog.db"},
            "http": {"host": "127.0.0.1", "port": 0},
            "copy": {"part_size": "8MiB"},
            "sqs": [{"queue_url": queue_url, "wait_s": 1}],
            "routes": [
                {
                    "name": "demo-lake",
                    "source": "s3://demo-lake/",
                    "destinations": list(destinations),
                }
            ],
        }
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    daemon = Daemon(config)
    running = asyncio.create_task(daemon.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        log(f"daemon running; HTTP on 127.0.0.1:{daemon.http_port}")
        expected: dict[str, bytes | None] = dict(_objects(count))
        started = time.monotonic()
        attributes = ObjectAttributes(
            content_type="application/octet-stream", user_metadata={"pipeline": "demo"}
        )
        for key, data in expected.items():
            await source.put(key, data or b"", attributes=attributes)
        log(f"wrote {len(expected)} objects to s3://demo-lake")
        first = next(iter(expected))
        expected[first] = os.urandom(1234)
        await source.put(first, expected[first] or b"")
        last = list(expected)[-2]
        await source.delete(last)
        expected[last] = None
        log(f"overwrote {first}, deleted {last}")
        while True:
            checks = [
                await _matches(store, key, data)
                for store in destinations.values()
                for key, data in expected.items()
            ]
            if all(checks):
                break
            if time.monotonic() - started > DEADLINE_S:
                raise RuntimeError(
                    f"{checks.count(False)} replicas still differ after {DEADLINE_S} s"
                )
            await asyncio.sleep(0.25)
        seconds = time.monotonic() - started
        log(f"every replica matches its source ({seconds:.1f} s after the first write)")
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        for store in (source, *destinations.values()):
            await store.close()
    catalog = await open_catalog(f"sqlite:///{workdir}/catalog.db")
    try:
        lags = await catalog.route_lag()
        entry = await catalog.locate("demo-lake", "models/checkpoint-0001.safetensors", prefer="az")
    finally:
        await catalog.close()
    now = datetime.now(UTC)
    return {
        "objects": len(expected),
        "bytes": sum(len(d) for d in expected.values() if d),
        "seconds_to_consistent": round(seconds, 2),
        "routes": [lag.as_dict(now) for lag in lags],
        "locate models/checkpoint-0001.safetensors --prefer az": entry.url,
    }
