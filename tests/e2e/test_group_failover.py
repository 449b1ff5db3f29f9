"""Two daemons in one consumer group, as separate processes: one is killed with SIGKILL
mid-stream, the other takes its partitions over and nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from connectors import open_store
from replicator.devstack import StackState
from replicator.pipeline.bus import AsyncProducer, KafkaSettings, ensure_topics
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.rules import Router, load_config

OBJECTS = 300


async def test_sigkill_of_one_member_loses_nothing(devstack: StackState, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    source_url, dest_url = f"file://{tmp_path}/source/", f"az://failover-{suffix}/"
    changes, dlq = f"c-{suffix}", f"d-{suffix}"
    config = tmp_path / "replicator.toml"
    config.write_text(f"""
[kafka]
bootstrap = "{devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"]}"
group = "g-{suffix}"
partitions = 4
changes_topic = "{changes}"
dlq_topic = "{dlq}"
session_timeout_ms = 2000
heartbeat_interval_ms = 300

[catalog]
url = "sqlite:///{tmp_path}/catalog.db"

[http]
host = "127.0.0.1"
port = 0

[[routes]]
name = "failover"
source = "{source_url}"
destinations = ["{dest_url}"]
""")
    source, dest = open_store(source_url), open_store(dest_url)
    await source.create_container()
    await dest.create_container()
    payloads = {f"obj/{i:04d}": os.urandom(2000 + i) for i in range(OBJECTS)}
    for key, data in payloads.items():
        await source.put(key, data)
    settings = KafkaSettings(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    ensure_topics(settings, {changes: 4, dlq: 1})

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "replicator",
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    doomed, survivor = await start(), await start()
    producer = AsyncProducer(settings)
    publisher = Publisher(
        producer,
        Router(
            load_config(
                {"routes": [{"name": "failover", "source": source_url, "destinations": [dest_url]}]}
            )
        ),
        changes_topic=changes,
        dlq_topic=dlq,
    )
    now = datetime.now(UTC)
    try:
        await publisher.publish(
            [
                ChangeEvent("put", source_url + key, None, "", len(data), None, now, "scan")
                for key, data in payloads.items()
            ]
        )

        async def replicated() -> int:
            return len([m async for m in dest.list()])

        for _ in range(1200):
            if await replicated() >= OBJECTS // 4:
                break
            await asyncio.sleep(0.05)
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()
        at_kill = await replicated()
        assert at_kill < OBJECTS, "the kill came mid-stream"
        for _ in range(1800):
            if await replicated() == OBJECTS:
                break
            await asyncio.sleep(0.1)
        assert await replicated() == OBJECTS
        for key, data in payloads.items():
            assert await dest.read(key) == data
        assert survivor.returncode is None, "the survivor kept running"
    finally:
        for process in (doomed, survivor):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 60)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        await producer.close()
        await source.close()
        await dest.close()
    assert survivor.returncode == 0, "SIGTERM drains and exits cleanly"
