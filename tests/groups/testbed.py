"""Two or more members of a replication group on the test bed: an S3 bucket (moto) whose real
notifications reach the daemon through SQS, GCS buckets (fake-gcs-server) whose notifications
the test delivers to the daemon's push receiver, as Pub/Sub would, and outside readers that
count every version each member holds.

fake-gcs-server sends no notifications, so ``GcsNotifier`` plays GCS and Pub/Sub: it lists
every generation of every object of its bucket and pushes an ``OBJECT_FINALIZE`` message for
each one it has not pushed yet (the daemon's own replica writes included, as GCS would), built
from the object resource GCS itself reports.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import boto3

from replicator.daemon.config import DaemonConfig
from replicator.devstack import StackState

TOKEN = "group-test-token"


def s3_client() -> object:
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def gcs_host() -> str:
    return os.environ["STORAGE_EMULATOR_HOST"]


def versioned_s3_bucket(name: str, queue_arn: str) -> None:
    """A versioned bucket (every write, user's or replica's, stays countable) that notifies
    ``queue_arn`` of every write and deletion."""
    s3 = s3_client()
    s3.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    s3.put_bucket_versioning(  # type: ignore[attr-defined]
        Bucket=name, VersioningConfiguration={"Status": "Enabled"}
    )
    s3.put_bucket_notification_configuration(  # type: ignore[attr-defined]
        Bucket=name,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )


def s3_queue(name: str) -> tuple[str, str]:
    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def s3_versions(bucket: str, key: str) -> list[dict[str, object]]:
    """Every version of ``key`` (delete markers apart), the latest first."""
    found = s3_client().list_object_versions(Bucket=bucket, Prefix=key)  # type: ignore[attr-defined]
    return [v for v in found.get("Versions", []) if v["Key"] == key]


def s3_current(bucket: str, key: str) -> tuple[bytes, dict[str, str]] | None:
    s3 = s3_client()
    try:
        found = s3.get_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
    except s3.exceptions.NoSuchKey:  # type: ignore[attr-defined]
        return None
    return found["Body"].read(), found["Metadata"]


async def versioned_gcs_bucket(http: aiohttp.ClientSession, name: str) -> None:
    async with http.post(
        f"{gcs_host()}/storage/v1/b?project=test",
        json={"name": name, "versioning": {"enabled": True}},
    ) as response:
        response.raise_for_status()


async def gcs_put(http: aiohttp.ClientSession, bucket: str, key: str, data: bytes) -> None:
    """A user's write, with GCS's own JSON API (not our connector)."""
    name = urllib.parse.quote(key, safe="")
    async with http.post(
        f"{gcs_host()}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    ) as response:
        response.raise_for_status()


async def gcs_generations(http: aiohttp.ClientSession, bucket: str) -> list[dict[str, object]]:
    """Every generation of every object (live or not), as GCS reports them."""
    items: list[dict[str, object]] = []
    token = ""
    while True:
        url = f"{gcs_host()}/storage/v1/b/{bucket}/o?versions=true"
        if token:
            url += f"&pageToken={urllib.parse.quote(token)}"
        async with http.get(url) as response:
            response.raise_for_status()
            page = await response.json()
        items += page.get("items", [])
        token = page.get("nextPageToken", "")
        if not token:
            return items


async def gcs_current(
    http: aiohttp.ClientSession, bucket: str, key: str
) -> tuple[bytes, dict[str, str]] | None:
    name = urllib.parse.quote(key, safe="")
    async with http.get(f"{gcs_host()}/storage/v1/b/{bucket}/o/{name}") as response:
        if response.status == 404:
            return None
        response.raise_for_status()
        resource = await response.json()
    async with http.get(f"{gcs_host()}/storage/v1/b/{bucket}/o/{name}?alt=media") as response:
        response.raise_for_status()
        return await response.read(), dict(resource.get("metadata") or {})


class GcsNotifier:
    """GCS notifications through Pub/Sub push, played for fake-gcs-server (module docstring)."""

    def __init__(self, http: aiohttp.ClientSession, bucket: str, endpoint: Callable[[], str]):
        self.http = http
        self.bucket = bucket
        self.endpoint = endpoint
        self.pushed: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def push_new(self) -> int:
        """Push a notification for every generation not pushed yet, oldest first."""
        fresh = [
            item
            for item in await gcs_generations(self.http, self.bucket)
            if (str(item["name"]), str(item["generation"])) not in self.pushed
        ]
        fresh.sort(key=lambda item: int(str(item["generation"])))
        for item in fresh:
            await self._push(item)
            self.pushed.add((str(item["name"]), str(item["generation"])))
        return len(fresh)

    async def _push(self, resource: dict[str, object]) -> None:
        body = {
            "message": {
                "attributes": {
                    "notificationConfig": f"projects/_/buckets/{self.bucket}/notificationConfigs/1",
                    "eventType": "OBJECT_FINALIZE",
                    "payloadFormat": "JSON_API_V1",
                    "bucketId": self.bucket,
                    "objectId": resource["name"],
                    "objectGeneration": str(resource["generation"]),
                    "eventTime": resource["updated"],
                },
                "data": base64.b64encode(json.dumps(resource).encode()).decode(),
                "messageId": uuid.uuid4().hex,
                "publishTime": resource["updated"],
            },
            "subscription": "projects/test/subscriptions/replicator",
        }
        async with self.http.post(
            self.endpoint(), json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status < 300, await response.text()

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await self.push_new()
                # GCS notifies within moments of a write; this is its delivery delay.
                await asyncio.sleep(0.2)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def group_config(
    devstack: StackState,
    tmp_path: Path,
    suffix: str,
    members: list[str],
    queue_url: str,
    **group: object,
) -> DaemonConfig:
    return DaemonConfig.model_validate(
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
            "http": {"host": "127.0.0.1", "port": 0, "ingest_port": 0},
            "copy": {"workers": 16},
            "sqs": [{"queue_url": queue_url, "wait_s": 1, "count_lag_s": 0}],
            "groups": [{"name": f"lake-{suffix}", "members": members, **group}],
        }
    )


async def until(condition: Callable[[], object], seconds: float = 90, what: str = "") -> None:
    """Poll ``condition`` until it holds, failing after ``seconds``."""
    for _ in range(int(seconds / 0.1)):
        if await condition():  # type: ignore[misc]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached in {seconds} s: {what}")
