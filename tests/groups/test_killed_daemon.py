"""A replication group of an S3 bucket (real notifications through SQS) and a GCS bucket
(notifications pushed to whichever daemon is up), applied by two ``replicator run`` processes
of one consumer group sharing a PostgreSQL catalog, one of them SIGKILLed while the group
catches up and started again. Checked by outside readers as for one daemon: both members end
byte-identical, each conflicting key holds the change the rule names, every write caused
exactly one copy (each member's versions are counted: a copy redone after the kill finds the
replica in place and writes nothing), and every conflict is in the catalog once.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from replicator.catalog import open_catalog
from replicator.devstack import StackState, free_port
from tests.chaos.daemons import DaemonProcess
from tests.groups.testbed import (
    TOKEN,
    GcsNotifier,
    gcs_current,
    gcs_generations,
    gcs_put,
    next_second,
    s3_client,
    s3_current,
    s3_queue,
    s3_versions,
    until,
    versioned_gcs_bucket,
    versioned_s3_bucket,
)

KEYS = 36


class Fleet:
    """The two members, the daemons' configuration, and the two daemons."""

    def __init__(self, devstack: StackState, tmp_path: Path, http: aiohttp.ClientSession):
        suffix = uuid.uuid4().hex[:10]
        self.http = http
        self.bucket = f"grk-{suffix}"
        self.queue_url, self.queue_arn = s3_queue(f"grk-{suffix}")
        self.members = [f"s3://{self.bucket}/", f"gs://{self.bucket}/"]
        self.group = f"lake-{suffix}"
        self.catalog_url = f"{devstack.env['REPLICATOR_POSTGRES_URL']}?schema=grk_{suffix}"
        config = tmp_path / "replicator.toml"
        config.write_text(
            f"""
[kafka]
bootstrap = "{devstack.env["REPLICATOR_KAFKA_BOOTSTRAP"]}"
group = "replicator-{suffix}"
partitions = 4
changes_topic = "changes-{suffix}"
dlq_topic = "dlq-{suffix}"
session_timeout_ms = 2000
heartbeat_interval_ms = 300

[catalog]
url = "{self.catalog_url}"

[http]
host = "127.0.0.1"

[copy]
workers = 16

[[sqs]]
queue_url = "{self.queue_url}"
wait_s = 1
count_lag_s = 0
visibility_timeout_s = 3

[[groups]]
name = "{self.group}"
members = ["{self.members[0]}", "{self.members[1]}"]
"""
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")},
            **devstack.env,
            "REPLICATOR_INGEST_TOKEN": TOKEN,
            "REPLICATOR_LOG_FORMAT": "json",
            "REPLICATOR_LOG_LEVEL": "debug",
        }
        env = {k: v for k, v in env.items() if not k.startswith("REPLICATOR_KAFKA")}
        self.daemons = []
        for name in ("daemon-a", "daemon-b"):
            port, ingest_port = free_port(), free_port()
            self.daemons.append(
                DaemonProcess(
                    name,
                    config,
                    {
                        **env,
                        "REPLICATOR_HTTP__PORT": str(port),
                        "REPLICATOR_HTTP__INGEST_PORT": str(ingest_port),
                    },
                    port,
                    ingest_port,
                    tmp_path / f"{name}.log",
                )
            )
        self.notifier = GcsNotifier(http, self.bucket, self._ingest)

    def _ingest(self) -> str:
        alive = next(d for d in self.daemons if d.alive)
        return f"{alive.ingest_url}/ingest/gcs"

    async def holds(self, key: str) -> tuple[bytes | None, bytes | None]:
        at_s3 = await asyncio.to_thread(s3_current, self.bucket, key)
        at_gs = await gcs_current(self.http, self.bucket, key)
        return (None if at_s3 is None else at_s3[0], None if at_gs is None else at_gs[0])

    async def converged(self, expected: dict[str, bytes]) -> bool:
        for key, content in expected.items():
            if await self.holds(key) != (content, content):
                return False
        return True


@pytest.fixture
async def fleet(devstack: StackState, tmp_path: Path) -> AsyncIterator[Fleet]:
    async with aiohttp.ClientSession() as http:
        created = Fleet(devstack, tmp_path, http)
        await asyncio.to_thread(versioned_s3_bucket, created.bucket, created.queue_arn)
        await versioned_gcs_bucket(http, created.bucket)
        try:
            yield created
        finally:
            await created.notifier.stop()
            for daemon in created.daemons:
                await daemon.stop()


async def applied(http: aiohttp.ClientSession, daemon: DaemonProcess) -> float:
    """The events ``daemon`` applied so far (0 while it does not answer)."""
    return await daemon.metric(http, "replicator_events_applied_total")


async def test_a_daemon_killed_while_the_group_catches_up(fleet: Fleet) -> None:
    s3 = s3_client()
    keys = [f"k{i:02d}" for i in range(KEYS)]
    # Before any daemon runs: a third of the keys written at S3 only, a third at GCS only, a
    # third at both, S3 first and GCS a second later (GCS's write wins there).
    s3_only, gs_only, both = keys[0::3], keys[1::3], keys[2::3]
    data = {key: os.urandom(2000 + i) for i, key in enumerate(keys)}
    for key in s3_only + both:
        s3.put_object(Bucket=fleet.bucket, Key=key, Body=data[key])  # type: ignore[attr-defined]
    for key in gs_only:
        await gcs_put(fleet.http, fleet.bucket, key, data[key])
    await next_second()
    later = {key: os.urandom(3000) for key in both}
    for key, content in later.items():
        await gcs_put(fleet.http, fleet.bucket, key, content)
    expected = {**data, **later}

    daemon_a, daemon_b = fleet.daemons
    for daemon in fleet.daemons:
        await daemon.start()
    await asyncio.gather(*(daemon.ready() for daemon in fleet.daemons))
    fleet.notifier.start()

    async def applying() -> bool:
        return sum([await applied(fleet.http, d) for d in fleet.daemons]) > 0

    # Killed as soon as the group has begun applying: most of the keys are still on the way.
    await until(applying, 120, "the first events applied")
    await daemon_b.kill()
    first_run = daemon_b.log.read_text()
    assert '"partitions assigned"' in first_run, "the killed daemon held no partitions"
    await daemon_b.start()
    await daemon_b.ready()

    async def all_converged() -> bool:
        return await fleet.converged(expected)

    await until(all_converged, 180, "both members hold every key's winner")
    await fleet.notifier.push_new()

    # Each member: its users' writes plus exactly one copy of each write of the other member
    # that won (or had no rival): no copy redone after the kill wrote again.
    versions = {key: len(await asyncio.to_thread(s3_versions, fleet.bucket, key)) for key in keys}
    generations = dict.fromkeys(keys, 0)
    for item in await gcs_generations(fleet.http, fleet.bucket):
        generations[str(item["name"])] += 1
    assert {key: (versions[key], generations[key]) for key in keys} == {
        **{key: (1, 1) for key in s3_only + gs_only},
        # S3's write and the copy of GCS's later one; GCS's write alone.
        **{key: (2, 1) for key in both},
    }

    async with await open_catalog(fleet.catalog_url) as catalog:
        found = await catalog.conflicts(fleet.group)
    s3_member, gs_member = fleet.members
    assert sorted((c.key, c.winner_member, c.loser_member) for c in found) == sorted(
        (key, gs_member, s3_member) for key in both
    )
    assert [exit_.cause for exit_ in daemon_b.exits] == ["killed"]
    assert daemon_a.crashes() == []
    assert daemon_b.crashes() == []
