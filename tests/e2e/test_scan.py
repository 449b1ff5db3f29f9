"""A store without notifications: `replicator scan` publishes its listing and the daemon
replicates what it lists, skipping objects that are themselves replicas."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

from connectors import open_store
from connectors.base import ObjectAttributes
from replicator.catalog import open_catalog
from replicator.daemon.config import load_daemon_config
from replicator.daemon.service import Daemon
from replicator.devstack import StackState


async def test_scan_publishes_and_the_daemon_replicates(
    devstack: StackState, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source_url, dest_url = f"file://{tmp_path}/onprem/", f"gs://scan-{suffix}/"
    config_path = tmp_path / "replicator.toml"
    config_path.write_text(f"""
[kafka]
bootstrap = "{devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"]}"
group = "g-{suffix}"
partitions = 2
changes_topic = "c-{suffix}"
dlq_topic = "d-{suffix}"
session_timeout_ms = 2000
heartbeat_interval_ms = 300

[catalog]
url = "sqlite:///{tmp_path}/catalog.db"

[http]
host = "127.0.0.1"
port = 0

[[routes]]
name = "onprem"
source = "{source_url}"
destinations = ["{dest_url}"]
""")
    source, dest = open_store(source_url), open_store(dest_url)
    await source.create_container()
    await dest.create_container()
    payloads = {f"raw/{i:03d}.csv": os.urandom(100 + i) for i in range(50)}
    for key, data in payloads.items():
        await source.put(key, data)
    await source.put(
        "raw/copied-in.csv",
        b"x",
        attributes=ObjectAttributes(
            user_metadata={"replicator_source": "s3%3A//elsewhere/raw.csv"}
        ),
    )
    daemon = Daemon(load_daemon_config(config_path))
    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(daemon.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        scan = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "replicator",
            "scan",
            "--config",
            str(config_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(scan.communicate(), 120)
        assert scan.returncode == 0, err
        assert b'"onprem": 50' in out
        for _ in range(600):
            if len([m async for m in dest.list()]) == 50:
                break
            await asyncio.sleep(0.1)
        assert sorted([m.key async for m in dest.list()]) == sorted(payloads)
        for key, data in payloads.items():
            assert await dest.read(key) == data
        # The scan recorded each change before publishing it; every one is applied now.
        catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
        try:
            for _ in range(300):
                [lag] = await catalog.route_lag(destination=dest_url)
                if lag.pending_ops == 0:
                    break
                await asyncio.sleep(0.1)
            assert lag.pending_ops == 0
            assert lag.replicated_ops == 50
        finally:
            await catalog.close()
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        await source.close()
        await dest.close()
