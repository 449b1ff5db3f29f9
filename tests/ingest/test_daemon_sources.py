"""The daemon fed by the pulling sources alone: Azure blobs announced through a Storage Queue
(as Event Grid writes them) and GCS objects announced through a Pub/Sub pull subscription (the
REST stand-in), replicated to S3 and checked with an independent reader."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

from connectors import open_store
from connectors.azure_credentials import AzureCredentials
from connectors.azure_queue import AzureQueue
from replicator.daemon.config import DaemonConfig
from replicator.daemon.service import Daemon
from replicator.devstack import StackState, environment
from replicator.devstack.stack import AZURE_DEV_ACCOUNT
from tests.independent import read_object
from tests.ingest.pubsub_standin import PubSubStandIn, serve
from tests.ingest.test_azure_queue import event_grid
from tests.ingest.test_pubsub import gcs_notification


async def test_queue_and_subscription_sources_replicate_without_any_push(
    devstack: StackState, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    queue = AzureQueue(f"events-{suffix}", AzureCredentials.from_environment())
    await queue.create()
    standin = PubSubStandIn()
    subscription = standin.subscription(f"projects/p/subscriptions/s{suffix}")
    config = DaemonConfig.model_validate(
        {
            "kafka": {
                "bootstrap": devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"],
                "group": f"g-{suffix}",
                "partitions": 2,
                "changes_topic": f"changes-{suffix}",
                "dlq_topic": f"dlq-{suffix}",
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 300,
            },
            "catalog": {"url": f"sqlite:///{tmp_path}/catalog.db"},
            "http": {"host": "127.0.0.1", "port": 0},
            "azure_queues": [{"queue": queue.queue, "wait_s": 1, "count_lag_s": 0}],
            "pubsub": [{"subscription": subscription, "wait_s": 1}],
            "routes": [
                {
                    "name": "az",
                    "source": f"az://src-{suffix}/",
                    "destinations": [f"s3://a-{suffix}/"],
                },
                {
                    "name": "gs",
                    "source": f"gs://src-{suffix}/",
                    "destinations": [f"s3://g-{suffix}/"],
                },
            ],
        }
    )
    async with (
        open_store(f"az://src-{suffix}") as blobs,
        open_store(f"gs://src-{suffix}") as objects,
        open_store(f"s3://a-{suffix}") as az_copy,
        open_store(f"s3://g-{suffix}") as gs_copy,
    ):
        for store in (blobs, objects, az_copy, gs_copy):
            await store.create_container()
        await blobs.put("day 1/a.parquet", b"from azure")
        gcs_meta = await objects.put("b.bin", b"from gcs")
        async for host in serve(standin):
            with environment({"PUBSUB_EMULATOR_HOST": host}):
                daemon = Daemon(config)
                stop, ready = asyncio.Event(), asyncio.Event()
                running = asyncio.create_task(daemon.run(stop, ready))
                try:
                    await asyncio.wait_for(ready.wait(), 60)
                    # Event Grid names the account; the default one maps to az://container/.
                    event = event_grid(f"src-{suffix}", "day 1/a.parquet")
                    assert AZURE_DEV_ACCOUNT in str(event["topic"])
                    await queue.send(base64.b64encode(json.dumps(event).encode()).decode())
                    data, attributes = gcs_notification(
                        f"src-{suffix}", "b.bin", generation=str(gcs_meta.version)
                    )
                    standin.publish(subscription, data, attributes)
                    for _ in range(600):
                        try:
                            if read_object(
                                az_copy.url_for("day 1/a.parquet")
                            ) == b"from azure" and (
                                read_object(gs_copy.url_for("b.bin")) == b"from gcs"
                            ):
                                break
                        except Exception:
                            pass
                        await asyncio.sleep(0.1)
                    else:
                        raise AssertionError("not replicated in time")
                    assert (await queue.depth()).total == 0
                    assert standin.subscriptions[subscription].messages == {}
                    assert all(
                        backlog.oldest_unpublished() is None for backlog in daemon.ingest_backlogs
                    )
                finally:
                    stop.set()
                    await asyncio.wait_for(running, 60)
    await queue.close()
