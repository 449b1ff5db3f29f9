"""A replication group of an S3 bucket (real notifications through SQS), an Azure container
(Event Grid events pushed to the daemon's receiver) and a directory (a listing scan), written
concurrently at every member with overlapping keys, then deleted and re-created. Checked by
outside readers (boto3, azure-storage-blob, the file system): every member ends
byte-identical, each conflicting key holds the change the rule names, no write was copied more
than once to any member (an uncontested one exactly once to each other member: S3 versions,
the writes Azurite accepted, the files inotify saw renamed into place), and every conflict is
in the catalog."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from replicator.catalog import open_catalog
from replicator.catalog.conflicts import Conflict
from replicator.cli.publishing import accepting_publisher
from replicator.daemon.service import Daemon
from replicator.devstack import StackState
from replicator.pipeline.groups import Contender, change_time, winner
from replicator.pipeline.ingest.scan import scan
from tests.groups.members import EventGridProxy, FileWrites
from tests.groups.testbed import (
    TOKEN,
    group_config,
    next_second,
    s3_client,
    s3_queue,
    until,
    versioned_s3_bucket,
)

S3, AZ, FILE = 0, 1, 2


def _blob_endpoint(connection_string: str) -> str:
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    return fields["BlobEndpoint"]


@dataclass
class Write:
    member: int
    time: datetime
    content: bytes | None  # None: a deletion


class Group:
    """The three members, their users' clients, the outside readers and counters, and a
    daemon that can be stopped and started again (the same catalog and consumer group)."""

    def __init__(
        self, devstack: StackState, tmp_path: Path, proxy: EventGridProxy, direct: str
    ) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.bucket = self.container = f"grp-{suffix}"
        self.directory = tmp_path / "member"
        self.directory.mkdir()
        self.queue_url, queue_arn = s3_queue(f"grp-{suffix}")
        versioned_s3_bucket(self.bucket, queue_arn)
        self.members = [
            f"s3://{self.bucket}/",
            f"az://{self.container}/",
            f"file://{self.directory}/",
        ]
        self.config = group_config(devstack, tmp_path, suffix, self.members, self.queue_url)
        self.proxy = proxy
        self.users_azure = BlobServiceClient.from_connection_string(
            direct.replace(_blob_endpoint(direct), f"{proxy.url}/devstoreaccount1")
        ).get_container_client(self.container)
        self.outside_azure = BlobServiceClient.from_connection_string(direct).get_container_client(
            self.container
        )
        self.outside_azure.create_container()
        self.files = FileWrites(self.directory)
        self.daemon: Daemon | None = None
        self.s3 = s3_client()
        self.sqs = boto3.client(
            "sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
        )
        self._stop = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        # Every user change of every key, in the order made.
        self.history: dict[str, list[Write]] = {}
        # While set, Event Grid holds its events (a delivery delayed, as Event Grid may).
        self.azure_events_held = False

    def ingest(self) -> str | None:
        """Where Event Grid delivers: the receiver of the daemon that is up, if one is."""
        if self.daemon is None or self.azure_events_held:
            return None
        return f"http://127.0.0.1:{self.daemon.ingest_port}/ingest/azure"

    async def start(self, *, scan: bool = True) -> None:
        daemon = Daemon(self.config)
        self._stop, ready = asyncio.Event(), asyncio.Event()
        self._running = asyncio.create_task(daemon.run(self._stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        self.daemon = daemon
        if scan:
            await self.scan_file_member()

    async def stop(self) -> None:
        self._stop.set()
        if self._running is not None:
            await asyncio.wait_for(self._running, 60)
            self._running = None
        self.daemon = None

    async def scan_file_member(self) -> None:
        """What an operator's scheduled ``replicator scan`` does for the file member."""
        async with (
            await open_catalog(self.config.catalog.url) as catalog,
            accepting_publisher(self.config, catalog) as publisher,
        ):
            await scan(self.members[FILE], publisher)

    # -- users' changes, each recorded with the time its store gives it ----------------------

    def put(self, member: int, key: str, content: bytes) -> None:
        if member == S3:
            s3 = self.s3
            s3.put_object(Bucket=self.bucket, Key=key, Body=content)  # type: ignore[attr-defined]
            head = s3.head_object(Bucket=self.bucket, Key=key)  # type: ignore[attr-defined]
            time: datetime = head["LastModified"]
        elif member == AZ:
            blob = self.users_azure.get_blob_client(key)
            blob.upload_blob(content, overwrite=True)
            time = blob.get_blob_properties().last_modified
        else:
            # Written aside and renamed into place, as careful writers do: a file rewritten in
            # place keeps the extended attribute that marks a replica (README).
            aside = self.directory.parent / f"{key}.{uuid.uuid4().hex}"
            aside.write_bytes(content)
            path = self.directory / key
            aside.replace(path)
            time = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        self.history.setdefault(key, []).append(Write(member, time, content))

    def delete(self, member: int, key: str) -> None:
        if member == S3:
            marker = self.s3.delete_object(Bucket=self.bucket, Key=key)  # type: ignore[attr-defined]
            time = self._notify_s3_deletion(key, marker["VersionId"])
        elif member == AZ:
            self.users_azure.delete_blob(key)
            time = datetime.now(UTC)
        else:
            raise AssertionError("a file member's deletions reach the group by no notification")
        self.history.setdefault(key, []).append(Write(member, time, None))

    def _notify_s3_deletion(self, key: str, marker: str) -> datetime:
        """moto notifies no deletion in a versioned bucket (a delete marker): send the
        ``ObjectRemoved:DeleteMarkerCreated`` record S3 would, at the marker's time."""
        found = self.s3.list_object_versions(Bucket=self.bucket, Prefix=key)  # type: ignore[attr-defined]
        time: datetime = next(
            m["LastModified"] for m in found["DeleteMarkers"] if m["VersionId"] == marker
        )
        record = {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": time.isoformat().replace("+00:00", "Z"),
            "eventName": "ObjectRemoved:DeleteMarkerCreated",
            "s3": {
                "bucket": {"name": self.bucket, "arn": f"arn:aws:s3:::{self.bucket}"},
                "object": {"key": urllib.parse.quote_plus(key), "versionId": marker},
            },
        }
        body = json.dumps({"Records": [record]})
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        return time

    async def concurrently(self, *changes: Callable[[], None]) -> None:
        """Changes made at once by the users of every member, while no daemon runs (so that
        each is concurrent with the others, and the file member's are told from replicas)."""
        assert self.daemon is None
        await asyncio.gather(*(asyncio.to_thread(change) for change in changes))
        self.files.drain(users=True)

    # -- outside readers -------------------------------------------------------------------

    def held(self, key: str) -> list[bytes | None]:
        try:
            at_s3: bytes | None = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[attr-defined]
        except self.s3.exceptions.NoSuchKey:  # type: ignore[attr-defined]
            at_s3 = None
        try:
            at_az: bytes | None = self.outside_azure.download_blob(key).readall()
        except ResourceNotFoundError:
            at_az = None
        path = self.directory / key
        at_file = path.read_bytes() if path.exists() else None
        return [at_s3, at_az, at_file]

    def replicas(self, key: str) -> list[int]:
        """How many replica writes of ``key`` each member took so far."""
        s3 = self.s3
        found = s3.list_object_versions(Bucket=self.bucket, Prefix=key)  # type: ignore[attr-defined]
        at_s3 = 0
        for version in found.get("Versions", []):
            if version["Key"] != key:
                continue
            head = s3.head_object(  # type: ignore[attr-defined]
                Bucket=self.bucket, Key=key, VersionId=version["VersionId"]
            )
            at_s3 += "replicator_source" in head["Metadata"]
        at_az = sum(n for source, n in self.proxy.copies(key).items() if source is not None)
        self.files.drain()
        return [at_s3, at_az, self.files.replicas[key]]

    async def until_identical(self, expected: dict[str, bytes | None]) -> None:
        async def converged() -> bool:
            held = await asyncio.to_thread(lambda: {key: self.held(key) for key in expected})
            return all(held[key] == [content] * 3 for key, content in expected.items())

        try:
            await until(converged, 120, f"every member holds {sorted(expected)}")
        except AssertionError:
            summary = {
                key: [
                    "none" if h is None else "expected" if h == content else "other"
                    for h in self.held(key)
                ]
                for key, content in expected.items()
            }
            raise AssertionError(
                f"members do not converge: {summary} {self.proxy.diagnosis()}"
            ) from None

    async def until_settled(self) -> None:
        """Every notification delivered (the replicas' own included) and applied."""

        async def settled() -> bool:
            if not await self.proxy.push_pending():
                return False
            async with await open_catalog(self.config.catalog.url) as catalog:
                lags = await catalog.route_lag(percentiles=False)
            return bool(lags) and all(lag.pending_ops == 0 for lag in lags)

        await until(settled, 60, "no change pending in the catalog")

    async def conflicts(self) -> list[Conflict]:
        async with await open_catalog(self.config.catalog.url) as catalog:
            return await catalog.conflicts(self.config.groups[0].name)


def rule_winner(writes: list[Write]) -> Write:
    """The change the documented rule keeps, from the times the stores gave the changes."""
    kept = writes[0]
    for other in writes[1:]:
        a = Contender(kept.member, kept.time, "a" if kept.content is not None else None)
        b = Contender(other.member, other.time, "b" if other.content is not None else None)
        kept = kept if winner(a, b) is a else other
    return kept


@pytest.fixture
async def group(
    devstack: StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Group]:
    monkeypatch.setenv("REPLICATOR_INGEST_TOKEN", TOKEN)
    direct = devstack.env["AZURE_STORAGE_CONNECTION_STRING"]
    holder: list[Group] = []
    proxy = EventGridProxy(
        upstream=_blob_endpoint(direct).rsplit("/", 1)[0],
        account="devstoreaccount1",
        container="",
        endpoint=lambda: holder[0].ingest() if holder else None,
        token=TOKEN,
    )
    await proxy.start()
    # The daemon reaches Azurite through the proxy, as its users do: Event Grid sees both.
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        direct.replace(_blob_endpoint(direct), f"{proxy.url}/devstoreaccount1"),
    )
    created = Group(devstack, tmp_path, proxy, direct)
    proxy.container = created.container
    holder.append(created)
    try:
        yield created
    finally:
        await created.stop()
        await proxy.close()
        created.files.close()


async def test_s3_azure_and_file_members_converge_under_the_rule_with_one_copy_per_write(
    group: Group,
) -> None:
    data = {f"v{i}": os.urandom(2000 + i) for i in range(20)}
    # Phase 1, before any replication: a write at each member alone, and keys written at two
    # or three members a second apart (and two in the same moment).
    await group.concurrently(
        lambda: group.put(S3, "only-s3.bin", data["v0"]),
        lambda: group.put(AZ, "only-az.bin", data["v1"]),
        lambda: group.put(FILE, "only-file.bin", data["v2"]),
        lambda: group.put(S3, "s3-az.bin", data["v3"]),
        lambda: group.put(AZ, "az-file.bin", data["v4"]),
        lambda: group.put(FILE, "file-s3.bin", data["v5"]),
        lambda: group.put(S3, "all.bin", data["v6"]),
    )
    await next_second()
    await group.concurrently(
        lambda: group.put(AZ, "s3-az.bin", data["v7"]),
        lambda: group.put(FILE, "az-file.bin", data["v8"]),
        lambda: group.put(S3, "file-s3.bin", data["v9"]),
        lambda: group.put(AZ, "all.bin", data["v10"]),
        lambda: group.put(AZ, "same-moment.bin", data["v11"]),
        lambda: group.put(FILE, "same-moment.bin", data["v12"]),
    )
    await next_second()
    await group.concurrently(lambda: group.put(FILE, "all.bin", data["v13"]))
    contested = {key for key, writes in group.history.items() if len(writes) > 1}
    expected = {key: rule_winner(writes).content for key, writes in group.history.items()}

    await group.start()
    await group.until_identical(expected)
    await group.until_settled()
    copies = {key: group.replicas(key) for key in expected}
    for key, writes in group.history.items():
        kept = rule_winner(writes)
        others = [m for m in (S3, AZ, FILE) if m != kept.member]
        if key not in contested:
            # One write, one copy to each other member.
            assert copies[key][kept.member] == 0, (key, copies[key])
            assert [copies[key][m] for m in others] == [1, 1], (key, copies[key])
        else:
            # The winner's member took no copy; each other member at least the winner's and
            # at most one of each write made elsewhere.
            assert copies[key][kept.member] == 0, (key, copies[key])
            for m in others:
                made_elsewhere = sum(1 for w in writes if w.member != m)
                assert 1 <= copies[key][m] <= made_elsewhere, (key, m, copies[key])
    found = await group.conflicts()
    assert {c.key for c in found} == contested
    for key in contested:
        kept = rule_winner(group.history[key])
        on_key = [c for c in found if c.key == key]
        # The kept change never lost, and every other write lost to a later one.
        assert all(c.loser_member != group.members[kept.member] for c in on_key), on_key
        losers = {c.loser_member for c in on_key}
        assert losers == {group.members[w.member] for w in group.history[key] if w is not kept}
        for c in on_key:
            assert change_time(c.winner_time) >= change_time(c.loser_time)

    # Phase 2, the daemon down again: deletions (of a member's own winning write, of a key
    # written again elsewhere) and re-creations, at the member that deleted and at another.
    await group.stop()
    before = {key: group.replicas(key) for key in expected}
    group.history = {}
    await group.concurrently(
        lambda: group.delete(AZ, "s3-az.bin"),  # AZ's own winning write
        lambda: group.put(AZ, "file-s3.bin", data["v14"]),
        lambda: group.delete(S3, "only-file.bin"),
    )
    await next_second()
    await group.concurrently(
        lambda: group.put(S3, "only-file.bin", data["v15"]),  # re-created where deleted
        lambda: group.delete(S3, "file-s3.bin"),  # later than AZ's write: wins
        lambda: group.put(FILE, "s3-az.bin", data["v17"]),  # re-created elsewhere, later
    )
    phase2 = {
        "s3-az.bin": data["v17"],
        "file-s3.bin": None,
        "only-file.bin": data["v15"],
    }
    await group.start()
    await group.until_identical({**expected, **phase2})
    await group.until_settled()
    after = {key: group.replicas(key) for key in phase2}
    added = {key: [a - b for a, b in zip(after[key], before[key], strict=True)] for key in phase2}
    # Each surviving write copied once to each other member; the losing write at most once.
    assert added["only-file.bin"] == [0, 1, 1]
    assert added["s3-az.bin"] == [1, 1, 0]
    assert added["file-s3.bin"][AZ] == 0
    assert max(added["file-s3.bin"]) <= 1
    later = [
        c
        for c in await group.conflicts()
        if c.detected_at > min(w.time for w in group.history["file-s3.bin"])
    ]
    s3, az, _ = group.members
    sides = {
        (c.key, c.winner_member, c.winner_version is None, c.loser_member, c.loser_version is None)
        for c in later
    }
    assert ("file-s3.bin", s3, True, az, False) in sides
    # Nothing moves once every notification is in, and a scan finds nothing to copy.
    await group.scan_file_member()
    await group.until_settled()
    assert {key: group.replicas(key) for key in phase2} == after
    await group.until_identical({**expected, **phase2})


async def test_a_deletion_the_group_made_is_not_taken_for_a_later_one(group: Group) -> None:
    """AZ's write reached every member; then S3 deletes it, and a second later the file
    member writes the key again. The write is later: it wins everywhere. The group's deletion
    at AZ (S3's, replicated) is notified by Event Grid at the moment the group made it, after
    the file member's write, and must not be taken for a deletion of AZ's users."""
    first, second = os.urandom(2000), os.urandom(2100)
    await group.concurrently(lambda: group.put(AZ, "key.bin", first))
    await group.start()
    await group.until_identical({"key.bin": first})
    await group.until_settled()
    await group.stop()
    await group.concurrently(lambda: group.delete(S3, "key.bin"))
    await next_second()
    await group.concurrently(lambda: group.put(FILE, "key.bin", second))
    await group.start()
    await group.until_settled()
    await group.until_identical({"key.bin": second})


async def test_the_echo_of_a_deletion_may_come_after_a_write_reached_that_member(
    group: Group,
) -> None:
    """As above, but the echo of the group's deletion at AZ is delivered late (Event Grid
    holds it), once the file member's write, made before that deletion, has been copied to
    AZ: the echo finds AZ holding that replica and must still change nothing."""
    first, second = os.urandom(2000), os.urandom(2100)
    await group.concurrently(lambda: group.put(AZ, "key.bin", first))
    await group.start()
    await group.until_identical({"key.bin": first})
    await group.until_settled()
    await group.stop()
    await group.concurrently(lambda: group.delete(S3, "key.bin"))
    await next_second()
    await group.concurrently(lambda: group.put(FILE, "key.bin", second))
    group.azure_events_held = True
    await group.start(scan=False)

    async def deleted_at_az() -> bool:
        return (await asyncio.to_thread(group.held, "key.bin"))[AZ] is None

    # S3's deletion reaches AZ (the group deletes there; Event Grid holds the echo), not the
    # file member, whose write is later.
    await until(deleted_at_az, 60, "S3's deletion applied at AZ")
    await group.scan_file_member()
    await group.until_identical({"key.bin": second})
    group.azure_events_held = False
    await group.until_settled()
    await group.until_identical({"key.bin": second})
