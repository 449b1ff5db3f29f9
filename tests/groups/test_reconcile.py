"""Reconciliation of a replication group: changes whose notifications were lost (made while the
daemon was down, the S3 queue purged and the GCS pushes never sent) reach every member through
the daemon's safety net alone, under the group's conflict rule.

Three members: an S3 bucket (notifications through SQS) and two GCS buckets (pushed to the
daemon's receiver). Checked by outside readers: every member ends with the same content, a
lost write reaches the others, a member's newer write is not overwritten by an older one
(and the conflict is recorded), a lost deletion of a replicated write removes its replicas,
and a member's own write (or a third member's replica) is never deleted because a listing did
not find it at another member.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import aiohttp
import boto3
import pytest

from replicator.catalog import open_catalog
from replicator.daemon.config import DaemonConfig
from replicator.daemon.service import Daemon
from replicator.devstack import StackState
from tests.groups.testbed import (
    TOKEN,
    GcsNotifier,
    gcs_current,
    gcs_delete,
    gcs_generations,
    gcs_put,
    group_config,
    next_second,
    s3_client,
    s3_current,
    s3_queue,
    until,
    versioned_gcs_bucket,
    versioned_s3_bucket,
)


class Trio:
    """The three members, and a daemon that can be stopped and started again."""

    def __init__(self, devstack: StackState, tmp_path: Path, http: aiohttp.ClientSession):
        suffix = uuid.uuid4().hex[:10]
        self.http = http
        self.bucket, self.second = f"grp-{suffix}", f"grp2-{suffix}"
        self.queue_url, queue_arn = s3_queue(f"grp-{suffix}")
        versioned_s3_bucket(self.bucket, queue_arn)
        self.members = [f"s3://{self.bucket}/", f"gs://{self.bucket}/", f"gs://{self.second}/"]
        self.config: DaemonConfig = group_config(
            devstack,
            tmp_path,
            suffix,
            self.members,
            self.queue_url,
            reconcile={"interval": "1s"},
        )
        self.notifiers = [
            GcsNotifier(http, name, self._ingest) for name in (self.bucket, self.second)
        ]
        self.daemon: Daemon | None = None
        self._stop = asyncio.Event()
        self._running: asyncio.Task[None] | None = None

    def _ingest(self) -> str:
        assert self.daemon is not None
        return f"http://127.0.0.1:{self.daemon.ingest_port}/ingest/gcs"

    async def create(self) -> None:
        for name in (self.bucket, self.second):
            await versioned_gcs_bucket(self.http, name)

    async def start(self) -> None:
        self.daemon = Daemon(self.config)
        self._stop, ready = asyncio.Event(), asyncio.Event()
        self._running = asyncio.create_task(self.daemon.run(self._stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        for notifier in self.notifiers:
            notifier.start()

    async def stop(self) -> None:
        for notifier in self.notifiers:
            await notifier.stop()
        self._stop.set()
        if self._running is not None:
            await asyncio.wait_for(self._running, 60)
            self._running = None

    async def lose_notifications(self) -> None:
        """Every change made since the daemon stopped is never notified."""
        boto3.client(
            "sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
        ).purge_queue(QueueUrl=self.queue_url)
        for notifier in self.notifiers:
            await notifier.lose_pending()

    def s3_put(self, key: str, data: bytes) -> None:
        s3_client().put_object(Bucket=self.bucket, Key=key, Body=data)  # type: ignore[attr-defined]

    def s3_delete(self, key: str) -> None:
        s3_client().delete_object(Bucket=self.bucket, Key=key)  # type: ignore[attr-defined]

    async def holds(self, key: str) -> list[bytes | None]:
        """What each member holds for ``key`` (None: nothing), read by their own clients."""
        found = [s3_current(self.bucket, key)]
        found += [await gcs_current(self.http, name, key) for name in (self.bucket, self.second)]
        return [None if f is None else f[0] for f in found]

    async def until_all_hold(self, expected: dict[str, bytes | None], seconds: float) -> None:
        async def converged() -> bool:
            for key, content in expected.items():
                if await self.holds(key) != [content] * 3:
                    return False
            return True

        try:
            await until(converged, seconds, f"every member holds {sorted(expected)}")
        except AssertionError:
            held = {
                key: [
                    "none" if h is None else "expected" if h == content else "other"
                    for h in await self.holds(key)
                ]
                for key, content in expected.items()
            }
            raise AssertionError(f"members do not converge: {held}") from None

    async def generations(self, bucket: str, key: str) -> int:
        return sum(1 for item in await gcs_generations(self.http, bucket) if item["name"] == key)


@pytest.fixture
async def trio(devstack: StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trio:
    monkeypatch.setenv("REPLICATOR_INGEST_TOKEN", TOKEN)
    async with aiohttp.ClientSession() as http:
        created = Trio(devstack, tmp_path, http)
        await created.create()
        try:
            yield created  # type: ignore[misc]
        finally:
            await created.stop()


async def test_the_safety_net_converges_a_group_whose_notifications_were_lost(
    trio: Trio,
) -> None:
    data = {name: os.urandom(2000 + i) for i, name in enumerate("abcdefgh")}
    # Replicated as usual first.
    trio.s3_put("from-s3.bin", data["a"])
    trio.s3_put("rewritten.bin", data["g"])
    await gcs_put(trio.http, trio.bucket, "from-gs.bin", data["b"])
    await trio.start()
    first = {"from-s3.bin": data["a"], "from-gs.bin": data["b"], "rewritten.bin": data["g"]}
    await trio.until_all_hold(dict(first), 90)
    await trio.stop()

    # While the daemon is down, every change's notification is lost.
    trio.s3_delete("from-s3.bin")  # a replicated write deleted where it was written
    trio.s3_delete("from-gs.bin")  # a replica deleted: member 2 still holds its own write
    await gcs_put(trio.http, trio.second, "lost-write.bin", data["c"])
    await gcs_put(trio.http, trio.bucket, "only-here.bin", data["d"])
    trio.s3_put("both.bin", data["e"])
    # Deleted where it was written, then written again at member 3 (over its replica).
    trio.s3_delete("rewritten.bin")
    await next_second()
    await gcs_put(trio.http, trio.second, "rewritten.bin", data["h"])
    await gcs_put(trio.http, trio.bucket, "both.bin", data["f"])  # later: member 2 wins
    await trio.lose_notifications()

    await trio.start()
    expected: dict[str, bytes | None] = {
        "from-s3.bin": None,
        # A listing cannot tell when member 1 lost it: member 2's write comes back.
        "from-gs.bin": data["b"],
        "lost-write.bin": data["c"],
        "only-here.bin": data["d"],
        "both.bin": data["f"],
        # Member 1's lost deletion removes its replica at member 2, never member 3's write.
        "rewritten.bin": data["h"],
    }
    await trio.until_all_hold(expected, 120)
    for notifier in trio.notifiers:
        await notifier.push_new()

    # Member 3's replica of member 2's write was never deleted by member 1's reconciliation
    # (one generation), nor was member 2's own write, nor the write only member 2 held.
    assert await trio.generations(trio.second, "from-gs.bin") == 1
    assert await trio.generations(trio.bucket, "from-gs.bin") == 1
    assert await trio.generations(trio.bucket, "only-here.bin") == 1
    # Member 2's newer write was never replaced by member 1's older one.
    assert await trio.generations(trio.bucket, "both.bin") == 1
    assert await trio.generations(trio.second, "rewritten.bin") == 2

    async with await open_catalog(trio.config.catalog.url) as catalog:
        found = await catalog.conflicts(trio.config.groups[0].name)
        runs = await catalog.reconcile_runs()
    s3, gs, _ = trio.members
    assert {(c.key, c.winner_member, c.loser_member) for c in found} == {("both.bin", gs, s3)}
    routes = {run.route for run in runs}
    assert {route.name for route in trio.config.routes} <= routes
    assert sum(run.missing + run.different + run.extra for run in runs) > 0


async def test_a_deletion_made_at_another_member_is_never_inferred_from_a_listing(
    trio: Trio,
) -> None:
    """A key deleted at member 3 (a user's deletion whose notification was lost) while member
    2 holds its own write of it: member 2's write is spread again, nothing is deleted."""
    data = os.urandom(1500)
    await gcs_put(trio.http, trio.bucket, "kept.bin", data)
    await trio.start()
    await trio.until_all_hold({"kept.bin": data}, 90)
    await trio.stop()
    await gcs_delete(trio.http, trio.second, "kept.bin")
    await trio.lose_notifications()
    await trio.start()
    await trio.until_all_hold({"kept.bin": data}, 90)
    assert await trio.generations(trio.bucket, "kept.bin") == 1
