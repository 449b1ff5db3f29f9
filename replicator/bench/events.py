"""The event path: change events -> Kafka -> worker -> copy -> catalog, at a fixed offered rate.

The events are produced straight to the changes topic, so the rate measured is the worker's
own capacity: the test bed's notifying source (moto's S3 -> SQS) tops out near 90 notified
puts per second on this kind of machine, well below the rates asked for. The source objects
(1 KiB each) are written to GCS beforehand, and each event is replicated to another GCS
bucket: fake-gcs-server takes well over a thousand small uploads per second, so the emulator
is not what limits the rate. Latency is from the moment an event is handed to the producer
to the moment its verified replica is recorded in the catalog (SQLite), per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from connectors import open_store
from replicator.catalog import open_catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.engine.transfer import Copier
from replicator.pipeline.bus import AsyncConsumer, AsyncProducer, KafkaSettings, ensure_topics
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.rules import Router, load_config
from replicator.pipeline.worker import Worker

WORKER_SLOTS = 64
OBJECT_BYTES = 1024
DRAIN_TIMEOUT_S = 120


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return float("nan")
    return values[max(0, min(len(values), int(q * len(values) + 0.999999)) - 1)]


async def measure_rate(
    rate: int, seconds: float, env: Mapping[str, str], workdir: Path
) -> dict[str, object]:
    suffix = uuid.uuid4().hex[:8]
    source_url, dest_url = f"gs://ev-src-{suffix}", f"gs://ev-dst-{suffix}"
    count = max(1, int(rate * seconds))
    keys = [f"events/obj-{index:06d}" for index in range(count)]
    async with open_store(source_url) as source, open_store(dest_url) as dest:
        await source.create_container()
        await dest.create_container()
        gate = asyncio.Semaphore(64)
        payload = b"x" * OBJECT_BYTES

        async def put(key: str) -> tuple[str, str | None]:
            async with gate:
                meta = await source.put(key, payload)
                return key, meta.version

        versions = dict(await asyncio.gather(*(put(key) for key in keys)))
    config = load_config(
        {
            "routes": [
                {
                    "name": f"ev-{suffix}",
                    "source": f"{source_url}/",
                    "destinations": [f"{dest_url}/"],
                    "concurrency": WORKER_SLOTS,
                }
            ]
        }
    )
    settings = KafkaSettings(
        env["REPLICATOR_KAFKA_BOOTSTRAP"],
        group_id=f"bench-{suffix}",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    changes, dlq = f"changes-{suffix}", f"dlq-{suffix}"
    await asyncio.to_thread(ensure_topics, settings, {changes: 4, dlq: 1})
    catalog = await open_catalog(f"sqlite:///{workdir}/events-{suffix}.db")
    await register_datasets(catalog, config)
    applier = Applier(Router(config), catalog, Copier())
    producer = AsyncProducer(settings)
    produced: dict[str, float] = {}
    recorded: dict[str, float] = {}
    all_done = asyncio.Event()

    async def handle(event: ChangeEvent) -> object:
        outcome = await applier(event)
        recorded.setdefault(event.source_url, time.perf_counter())
        if len(recorded) >= count:
            all_done.set()
        return outcome

    worker = Worker(
        AsyncConsumer(settings, [changes]),
        producer,
        handle,
        decode=ChangeEvent.from_json,
        concurrency=WORKER_SLOTS,
        dlq_topic=dlq,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    # The first events would otherwise also time the consumer joining its group.
    await asyncio.sleep(3)
    cpu_before, started = time.process_time(), time.perf_counter()
    sends: set[asyncio.Task[object]] = set()
    for index, key in enumerate(keys):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        url = f"{source_url}/{key}"
        event = ChangeEvent(
            kind="put",
            source_url=url,
            version=versions[key],
            sequencer="",
            size=OBJECT_BYTES,
            etag=versions[key],
            event_time=datetime.now(UTC),
            origin="gcs",
        )
        produced[url] = time.perf_counter()
        task = asyncio.create_task(producer.send(changes, url.encode(), event.to_json()))
        sends.add(task)
        task.add_done_callback(sends.discard)
    offered = count / max(time.perf_counter() - started, 1e-9)
    await asyncio.gather(*sends)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), DRAIN_TIMEOUT_S)
    cpu = time.process_time() - cpu_before
    stop.set()
    await running
    await applier.close()
    await producer.close()
    await catalog.close()
    latencies = sorted(recorded[url] - at for url, at in produced.items() if url in recorded)
    return {
        "target_rate": rate,
        "offered_rate": round(offered, 1),
        "events": count,
        "replicated": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else float("nan"),
        "cpu_s_per_1000_events": round(cpu / count * 1000, 2),
        "latencies_ms": [round(value * 1000, 2) for value in latencies],
    }
