"""The whole path on the test bed: S3 writes -> real S3 notifications in SQS (moto) -> Kafka ->
workers -> GCS and Azure, checked byte for byte with independent clients."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors import open_store
from connectors.base import NotFound, ObjectStore
from replicator.daemon.config import DaemonConfig
from replicator.daemon.service import Daemon
from replicator.devstack import StackState
from tests.independent import read_object


def aws_client(service: str) -> object:
    return boto3.client(
        service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )


class Lake:
    """A source bucket wired to an SQS queue, two destination containers, a daemon config."""

    def __init__(
        self, devstack: StackState, tmp_path: Path, extra: dict[str, object] | None = None
    ) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.bucket = f"src-{suffix}"
        self.gs = f"gs://dst-{suffix}/"
        self.az = f"az://dst-{suffix}/"
        s3 = aws_client("s3")
        sqs = aws_client("sqs")
        s3.create_bucket(Bucket=self.bucket)  # type: ignore[attr-defined]
        queue_url = sqs.create_queue(QueueName=f"events-{suffix}")["QueueUrl"]  # type: ignore[attr-defined]
        arn = sqs.get_queue_attributes(  # type: ignore[attr-defined]
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(  # type: ignore[attr-defined]
            Bucket=self.bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
                ]
            },
        )
        self.config = DaemonConfig.model_validate(
            {
                "kafka": {
                    "bootstrap": devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"],
                    "group": f"replicator-{suffix}",
                    "partitions": 4,
                    "changes_topic": f"changes-{suffix}",
                    "dlq_topic": f"dlq-{suffix}",
                    "session_timeout_ms": 2000,
                    "heartbeat_interval_ms": 300,
                },
                "catalog": {"url": f"sqlite:///{tmp_path}/catalog-{suffix}.db"},
                "http": {"host": "127.0.0.1", "port": 0},
                "copy": {"part_size": "8MiB", "workers": 16},
                "sqs": [{"queue_url": queue_url, "wait_s": 1, "count_lag_s": 0}],
                "routes": [
                    {
                        "name": "lake",
                        "source": f"s3://{self.bucket}/",
                        "destinations": [self.gs, self.az],
                        **(extra or {}).get("route", {}),  # type: ignore[dict-item]
                    }
                ],
                **{k: v for k, v in (extra or {}).items() if k != "route"},
            }
        )

    async def open(self) -> tuple[ObjectStore, ObjectStore, ObjectStore]:
        stores = (open_store(f"s3://{self.bucket}"), open_store(self.gs), open_store(self.az))
        for store in stores[1:]:
            await store.create_container()
        return stores


async def until(condition: Callable[[], object], seconds: float = 90) -> None:
    for _ in range(int(seconds / 0.1)):
        if await condition():  # type: ignore[misc]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not replicated in time")


@pytest.fixture
async def lake(devstack: StackState, tmp_path: Path) -> Lake:
    return Lake(devstack, tmp_path)


async def test_notifications_replicate_puts_overwrites_and_deletes(lake: Lake) -> None:
    source, gs, az = await lake.open()
    daemon = Daemon(lake.config)
    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(daemon.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 60)
    payloads = {
        "small.json": json.dumps({"a": 1}).encode(),
        "dir/with space+plus.bin": os.urandom(100_000),
        "big/model.safetensors": os.urandom(20 * 1024 * 1024 + 3),
        "empty": b"",
    }
    try:
        for key, data in payloads.items():
            await source.put(key, data)

        async def all_replicated() -> bool:
            for key, data in payloads.items():
                for dest in (gs, az):
                    try:
                        if read_object(dest.url_for(key)) != data:
                            return False
                    except Exception:
                        return False
            return True

        await until(all_replicated)
        newer = os.urandom(5000)
        await source.put("small.json", newer)
        await source.delete("empty")

        async def followed() -> bool:
            try:
                if read_object(gs.url_for("small.json")) != newer:
                    return False
                if read_object(az.url_for("small.json")) != newer:
                    return False
            except Exception:
                return False
            for dest in (gs, az):
                # The deletion reaches both replicas, each in its own time.
                try:
                    await dest.head("empty")
                except NotFound:
                    continue
                return False
            return True

        await until(followed)
        samples: dict[str, float] = {}

        async def all_counted() -> bool:
            # A change is counted once its catalog row is written, just after the replica.
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{daemon.http_port}/metrics") as response,
            ):
                exposition = await response.text()
            samples.update(
                (sample.name, sample.value)
                for family in text_string_to_metric_families(exposition)
                for sample in family.samples
            )
            # Six changes: four puts, one overwrite, one delete (S3 may notify a put twice).
            return samples["replicator_events_applied_total"] >= 6

        await until(all_counted)
        assert samples["replicator_events_dead_lettered_total"] == 0
        assert samples["process_resident_memory_bytes"] > 0
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        for store in (source, gs, az):
            await store.close()


async def test_delayed_deletes_reach_replicas_after_the_delay(
    devstack: StackState, tmp_path: Path
) -> None:
    """Under a delayed delete policy the daemon's sweeper deletes replicas once the delay since
    the source's deletion has passed, and not before."""
    delay = 3.0
    lake = Lake(
        devstack,
        tmp_path,
        {
            "route": {"delete_policy": "delayed", "delete_delay": f"{delay:.0f}s"},
            "deletes": {"sweep_interval": "1s"},
        },
    )
    source, gs, az = await lake.open()
    daemon = Daemon(lake.config)
    stop, ready = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(daemon.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 60)
    try:
        await source.put("doomed.bin", b"short-lived")

        async def replicated() -> bool:
            try:
                return all(read_object(d.url_for("doomed.bin")) == b"short-lived" for d in (gs, az))
            except Exception:
                return False

        await until(replicated)
        await source.delete("doomed.bin")
        deleted_at = time.time()

        async def gone() -> bool:
            for dest in (gs, az):
                try:
                    await dest.head("doomed.bin")
                    return False
                except NotFound:
                    pass
            return True

        await until(gone)
        # The store's deletion time is at or after the client's call returned.
        assert time.time() - deleted_at >= delay - 1.0
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{daemon.http_port}/healthz") as response,
        ):
            health = await response.json()
        assert (health["status"], health["deletes_paused"]) == ("ok", [])
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        for store in (source, gs, az):
            await store.close()
