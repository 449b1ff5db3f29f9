"""Two or more members of a replication group on the test bed: an S3 bucket (moto) whose real
notifications reach the daemon through SQS, GCS buckets (fake-gcs-server) whose notifications
the test delivers to the daemon's push receiver, as Pub/Sub would, and outside readers that
count every version each member holds.

fake-gcs-server sends no notifications, so ``GcsNotifier`` plays GCS and Pub/Sub: it lists
every generation of every object of its bucket and pushes an ``OBJECT_FINALIZE`` message for
each one it has not pushed yet (the daemon's own replica writes included, as GCS would), built
from the object resource GCS itself reports; and an ``OBJECT_ARCHIVE`` message (what a
versioned bucket sends for a deletion) for every generation that stopped being live
(``timeDeleted``) other than by being overwritten, whoever deleted it; all in the order they
happened, as GCS publishes them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import boto3

from replicator.daemon.config import DaemonConfig
from replicator.daemon.service import Daemon
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


async def gcs_delete(http: aiohttp.ClientSession, bucket: str, key: str) -> None:
    name = urllib.parse.quote(key, safe="")
    async with http.delete(f"{gcs_host()}/storage/v1/b/{bucket}/o/{name}") as response:
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


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _overwritten(item: dict[str, object], generations: list[dict[str, object]]) -> bool:
    """Whether ``item`` stopped being live because a newer generation replaced it:
    fake-gcs-server archives the old generation in the same moment it creates the new one
    (microseconds apart, a few milliseconds under load); a deletion and a re-creation are
    two requests, and here the re-creation is a replica (a notification and a copy later)."""
    deleted_at = _instant(str(item["timeDeleted"]))
    for other in generations:
        if other["name"] == item["name"] and int(str(other["generation"])) > int(
            str(item["generation"])
        ):
            created = _instant(str(other.get("timeCreated") or other["updated"]))
            if abs((created - deleted_at).total_seconds()) < 0.05:
                return True
    return False


class GcsNotifier:
    """GCS notifications through Pub/Sub push, played for fake-gcs-server (module docstring)."""

    def __init__(self, http: aiohttp.ClientSession, bucket: str, endpoint: Callable[[], str]):
        self.http = http
        self.bucket = bucket
        self.endpoint = endpoint
        self.pushed: set[tuple[str, str]] = set()
        self.archived: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def push_new(self) -> int:
        """Push a notification for every write and deletion not pushed yet, in the order they
        happened."""
        generations = await gcs_generations(self.http, self.bucket)
        due: list[tuple[str, str, dict[str, object]]] = []
        for item in generations:
            ident = (str(item["name"]), str(item["generation"]))
            if ident not in self.pushed:
                due.append((str(item["updated"]), "OBJECT_FINALIZE", item))
            deleted_at = item.get("timeDeleted")
            if deleted_at and ident not in self.archived and not _overwritten(item, generations):
                due.append((str(deleted_at), "OBJECT_ARCHIVE", item))
        due.sort(key=lambda entry: _instant(entry[0]))
        for event_time, kind, item in due:
            await self._push(item, kind, event_time)
            ident = (str(item["name"]), str(item["generation"]))
            (self.pushed if kind == "OBJECT_FINALIZE" else self.archived).add(ident)
        return len(due)

    async def lose_pending(self) -> int:
        """Mark every write and deletion not pushed yet as pushed, without pushing it: their
        notifications are lost."""
        generations = await gcs_generations(self.http, self.bucket)
        lost = 0
        for item in generations:
            ident = (str(item["name"]), str(item["generation"]))
            if ident not in self.pushed:
                self.pushed.add(ident)
                lost += 1
            if item.get("timeDeleted") and ident not in self.archived:
                self.archived.add(ident)
                lost += 1
        return lost

    async def _push(self, resource: dict[str, object], kind: str, event_time: str) -> None:
        body = {
            "message": {
                "attributes": {
                    "notificationConfig": f"projects/_/buckets/{self.bucket}/notificationConfigs/1",
                    "eventType": kind,
                    "payloadFormat": "JSON_API_V1",
                    "bucketId": self.bucket,
                    "objectId": resource["name"],
                    "objectGeneration": str(resource["generation"]),
                    "eventTime": event_time,
                },
                "data": base64.b64encode(json.dumps(resource).encode()).decode(),
                "messageId": uuid.uuid4().hex,
                "publishTime": event_time,
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
        """Stop pushing; a push that failed fails the test here."""
        if self._task is not None:
            task, self._task = self._task, None
            if not task.done():
                task.cancel()
            outcome = (await asyncio.gather(task, return_exceptions=True))[0]
            if isinstance(outcome, Exception):
                raise outcome


def group_config(
    devstack: StackState,
    tmp_path: Path,
    suffix: str,
    members: list[str],
    queue_url: str,
    *,
    groups: list[dict[str, object]] | None = None,
    reconcile: dict[str, object] | None = None,
    **group: object,
) -> DaemonConfig:
    """A daemon of one group of ``members`` (or of ``groups``, as the file writes them);
    ``reconcile``: its ``[reconcile]`` section (the safety net is off without it: the default
    interval is hours)."""
    return DaemonConfig.model_validate(
        {
            **({"reconcile": reconcile} if reconcile is not None else {}),
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
            "groups": groups or [{"name": f"lake-{suffix}", "members": members, **group}],
        }
    )


async def until(condition: Callable[[], object], seconds: float = 90, what: str = "") -> None:
    """Poll ``condition`` until it holds, failing after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await condition():  # type: ignore[misc]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached in {seconds} s: {what}")


class Pair:
    """A group of one versioned S3 bucket (member 1) and one versioned GCS bucket (member 2)
    of the same name, and a daemon that can be stopped and started again (the same catalog
    and consumer group), so that changes can be made at both members before either is
    replicated."""

    def __init__(self, devstack: StackState, tmp_path: Path, http: aiohttp.ClientSession):
        suffix = uuid.uuid4().hex[:10]
        self.http = http
        self.bucket = f"grp-{suffix}"
        self.queue_url, self.queue_arn = s3_queue(f"grp-{suffix}")
        self.members = [f"s3://{self.bucket}/", f"gs://{self.bucket}/"]
        self.config = group_config(devstack, tmp_path, suffix, self.members, self.queue_url)
        self.group = self.config.groups[0].name
        self.daemon: Daemon | None = None
        self.notifier = GcsNotifier(http, self.bucket, self._ingest)
        self._stop = asyncio.Event()
        self._running: asyncio.Task[None] | None = None

    def _ingest(self) -> str:
        assert self.daemon is not None
        return f"http://127.0.0.1:{self.daemon.ingest_port}/ingest/gcs"

    async def create(self) -> None:
        versioned_s3_bucket(self.bucket, self.queue_arn)
        await versioned_gcs_bucket(self.http, self.bucket)

    async def start(self) -> None:
        self.daemon = Daemon(self.config)
        self._stop, ready = asyncio.Event(), asyncio.Event()
        self._running = asyncio.create_task(self.daemon.run(self._stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        self.notifier.start()

    async def stop(self) -> None:
        await self.notifier.stop()
        self._stop.set()
        if self._running is not None:
            await asyncio.wait_for(self._running, 60)
            self._running = None

    def s3_put(self, key: str, data: bytes) -> None:
        s3_client().put_object(Bucket=self.bucket, Key=key, Body=data)  # type: ignore[attr-defined]

    def s3_delete(self, key: str) -> None:
        s3_client().delete_object(Bucket=self.bucket, Key=key)  # type: ignore[attr-defined]

    async def gcs_put(self, key: str, data: bytes) -> None:
        await gcs_put(self.http, self.bucket, key, data)

    async def gcs_delete(self, key: str) -> None:
        await gcs_delete(self.http, self.bucket, key)

    async def holds(self, key: str) -> tuple[bytes | None, bytes | None]:
        """What each member holds for ``key`` (None: nothing), read by their own clients."""
        at_s3, at_gs = s3_current(self.bucket, key), await gcs_current(self.http, self.bucket, key)
        return (None if at_s3 is None else at_s3[0], None if at_gs is None else at_gs[0])

    async def until_both_hold(self, expected: dict[str, bytes | None], seconds: float = 90) -> None:
        async def converged() -> bool:
            for key, content in expected.items():
                if await self.holds(key) != (content, content):
                    return False
            return True

        try:
            await until(converged, seconds, f"both members hold {sorted(expected)}")
        except AssertionError:
            held = {}
            for key, content in expected.items():
                held[key] = [
                    "none" if h is None else "expected" if h == content else "other"
                    for h in await self.holds(key)
                ]
            raise AssertionError(f"members do not converge: {held}") from None


async def next_second() -> None:
    """Wait for the clock's next whole second: changes before and after it are a second apart
    for the conflict rule, whichever store's precision."""
    boundary = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)

    async def begun() -> bool:
        return datetime.now(UTC) >= boundary

    await until(begun, 5, "the clock's next second")
