"""1,000 keys, each receiving a shuffled stream of puts, overwrites and deletes (deletes
before creates, duplicates, stale events): every destination ends equal to the source."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors import open_store
from connectors.base import NotFound
from replicator.daemon.config import DaemonConfig
from replicator.daemon.service import Daemon
from replicator.devstack import StackState
from replicator.pipeline.bus import AsyncProducer
from replicator.pipeline.events import ChangeEvent, s3_sequencer
from replicator.pipeline.ingest.publisher import Publisher

KEYS = 1000


async def test_shuffled_event_storm_converges(devstack: StackState, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    source_root = tmp_path / "source"
    source_url, dest_url = f"file://{source_root}/", f"az://conv-{suffix}/"
    config = DaemonConfig.model_validate(
        {
            "kafka": {
                "bootstrap": devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"],
                "group": f"g-{suffix}",
                "partitions": 4,
                "changes_topic": f"c-{suffix}",
                "dlq_topic": f"d-{suffix}",
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 300,
            },
            "catalog": {"url": f"sqlite:///{tmp_path}/catalog.db"},
            "http": {"host": "127.0.0.1", "port": 0},
            "copy": {"workers": 64},
            "routes": [
                {
                    "name": "conv",
                    "source": source_url,
                    "destinations": [dest_url],
                    "max_deletes_per_minute": 100_000,
                }
            ],
        }
    )
    rng = random.Random(20261129)
    source, dest = open_store(source_url), open_store(dest_url)
    await source.create_container()
    await dest.create_container()
    final: dict[str, bytes | None] = {}
    events: list[ChangeEvent] = []
    start = datetime(2026, 11, 29, tzinfo=UTC)
    for index in range(KEYS):
        key = f"k/{index:04d}"
        state: bytes | None = None
        for step in range(rng.randint(1, 4)):
            if state is not None and rng.random() < 0.3:
                state = None
                kind = "delete"
            else:
                state = f"{key} version {step}".encode()
                kind = "put"
            sequencer = s3_sequencer(f"{index:08X}{step:04X}")
            events.append(
                ChangeEvent(
                    kind,
                    source_url + key,
                    None,
                    sequencer,
                    None,
                    None,
                    start + timedelta(seconds=step),
                    "s3",
                )
            )
        final[key] = state
        if state is not None:
            await source.put(key, state)
        if rng.random() < 0.1:  # a delete that arrives for a key that never existed
            events.append(
                ChangeEvent(
                    "delete",
                    source_url + f"ghost/{index}",
                    None,
                    s3_sequencer("01"),
                    None,
                    None,
                    start,
                    "s3",
                )
            )
    events += rng.sample(events, len(events) // 5)  # duplicates
    rng.shuffle(events)

    daemon = Daemon(config)
    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(daemon.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 60)
    producer = AsyncProducer(daemon.kafka_settings())
    publisher = Publisher(
        producer,
        daemon.router,
        changes_topic=config.kafka.changes_topic,
        dlq_topic=config.kafka.dlq_topic,
    )
    for start_index in range(0, len(events), 500):
        await publisher.publish(events[start_index : start_index + 500])
    await producer.close()

    async def converged() -> bool:
        present = {meta.key: meta.size async for meta in dest.list()}
        expected = {k: len(v) for k, v in final.items() if v is not None}
        return present == expected

    try:
        for _ in range(1200):
            if await converged():
                break
            await asyncio.sleep(0.1)
        for key, data in final.items():
            if data is None:
                try:
                    await dest.head(key)
                except NotFound:
                    continue
                raise AssertionError(f"{key} was deleted at the source but not at the replica")
            assert await dest.read(key) == data, key
    finally:
        stop.set()
        await asyncio.wait_for(running, 120)
        await source.close()
        await dest.close()
