"""`replicator run` with no configuration file: the embedded defaults (a SQLite catalog in
the home directory) plus the test bed's environment and REPLICATOR_* overrides are enough."""

from __future__ import annotations

import asyncio
import json
import os
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
from tests.independent import read_object


async def test_run_on_defaults_and_environment(devstack: StackState, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    source_url, dest_url = f"file://{tmp_path}/source/", f"az://nofile-{suffix}/"
    routes = [{"name": "nofile", "source": source_url, "destinations": [dest_url]}]
    changes = f"changes-{suffix}"
    source, dest = open_store(source_url), open_store(dest_url)
    await source.create_container()
    await dest.create_container()
    await source.put("a/b.bin", b"replicated without a file")
    env = {
        **os.environ,
        # The test bed exports REPLICATOR_KAFKA__BOOTSTRAP (in os.environ for the session).
        "HOME": str(tmp_path / "home"),
        "REPLICATOR_ROUTES": json.dumps(routes),
        "REPLICATOR_KAFKA__GROUP": f"g-{suffix}",
        "REPLICATOR_KAFKA__CHANGES_TOPIC": changes,
        "REPLICATOR_KAFKA__DLQ_TOPIC": f"dlq-{suffix}",
        "REPLICATOR_KAFKA__SESSION_TIMEOUT_MS": "2000",
        "REPLICATOR_KAFKA__HEARTBEAT_INTERVAL_MS": "300",
        "REPLICATOR_KAFKA__PARTITIONS": "2",
        "REPLICATOR_HTTP__HOST": "127.0.0.1",
        "REPLICATOR_HTTP__PORT": "0",
    }
    assert env["REPLICATOR_KAFKA__BOOTSTRAP"] == devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"]
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "replicator",
        "run",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    settings = KafkaSettings(devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"])
    producer = AsyncProducer(settings)
    try:
        ensure_topics(settings, {changes: 2})
        publisher = Publisher(
            producer, Router(load_config({"routes": routes})), changes_topic=changes
        )
        data = b"replicated without a file"
        event = ChangeEvent(
            "put", f"{source_url}a/b.bin", None, "", len(data), None, datetime.now(UTC), "scan"
        )
        await publisher.publish([event])
        for _ in range(600):
            try:
                if read_object(f"{dest_url}a/b.bin") == b"replicated without a file":
                    break
            except Exception:
                pass
            assert daemon.returncode is None, "the daemon exited"
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("not replicated in time")
        catalog = tmp_path / "home" / ".local" / "state" / "replicator" / "catalog.db"
        assert catalog.exists()
    finally:
        await producer.close()
        if daemon.returncode is None:
            daemon.terminate()
        _, stderr = await asyncio.wait_for(daemon.communicate(), 60)
        await source.close()
        await dest.close()
    assert daemon.returncode == 0, stderr.decode()[-2000:]
