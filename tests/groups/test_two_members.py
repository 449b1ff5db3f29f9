"""A replication group of an S3 bucket (real notifications through SQS) and a GCS bucket
(notifications pushed to the daemon's receiver): writes at each member, and one key written at
both before either write was replicated, in each order. Checked by outside readers: both
members end byte-identical, each conflicting key holds the write the rule names, every write
caused exactly one copy (each member's versions are counted), and every conflict is in the
catalog."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from replicator.catalog import open_catalog
from replicator.daemon.service import Daemon
from replicator.devstack import StackState
from tests.groups.testbed import (
    TOKEN,
    GcsNotifier,
    gcs_current,
    gcs_generations,
    gcs_put,
    group_config,
    s3_client,
    s3_current,
    s3_queue,
    s3_versions,
    until,
    versioned_gcs_bucket,
    versioned_s3_bucket,
)


async def applied_events(http: aiohttp.ClientSession, port: int | None) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        exposition = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "replicator_events_applied_total"
    )


async def test_two_members_converge_on_the_rule_s_winner_with_one_copy_per_write(
    devstack: StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATOR_INGEST_TOKEN", TOKEN)
    suffix = uuid.uuid4().hex[:10]
    bucket = f"grp-{suffix}"
    queue_url, queue_arn = s3_queue(f"grp-{suffix}")
    versioned_s3_bucket(bucket, queue_arn)
    s3 = s3_client()
    data = {name: os.urandom(3000 + i) for i, name in enumerate(("a", "b", "c1", "c2", "e1", "e2"))}
    async with aiohttp.ClientSession() as http:
        await versioned_gcs_bucket(http, bucket)
        members = [f"s3://{bucket}/", f"gs://{bucket}/"]
        config = group_config(devstack, tmp_path, suffix, members, queue_url)
        group = config.groups[0].name

        # Before any replication: one write at each member, and two keys written at both, the
        # first one second before the other.
        s3.put_object(Bucket=bucket, Key="only-s3.bin", Body=data["a"])  # type: ignore[attr-defined]
        await gcs_put(http, bucket, "only-gs.bin", data["b"])
        s3.put_object(Bucket=bucket, Key="s3-first.bin", Body=data["c1"])  # type: ignore[attr-defined]
        await gcs_put(http, bucket, "gs-first.bin", data["e1"])
        next_second = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)

        async def next_second_begun() -> bool:
            return datetime.now(UTC) >= next_second

        await until(next_second_begun, 5, "the clock's next second")
        await gcs_put(http, bucket, "s3-first.bin", data["c2"])  # later: member 2 wins
        s3.put_object(Bucket=bucket, Key="gs-first.bin", Body=data["e2"])  # type: ignore[attr-defined]

        daemon = Daemon(config)
        stop, ready = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(daemon.run(stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        notifier = GcsNotifier(
            http, bucket, lambda: f"http://127.0.0.1:{daemon.ingest_port}/ingest/gcs"
        )
        notifier.start()
        expected = {
            "only-s3.bin": data["a"],
            "only-gs.bin": data["b"],
            "s3-first.bin": data["c2"],
            "gs-first.bin": data["e2"],
        }
        try:

            async def converged() -> bool:
                for key, content in expected.items():
                    at_s3, at_gs = s3_current(bucket, key), await gcs_current(http, bucket, key)
                    if at_s3 is None or at_gs is None:
                        return False
                    if (at_s3[0], at_gs[0]) != (content, content):
                        return False
                return True

            await until(converged, what="both members hold the winners")

            # Every notification is applied, the replicas' own included: 5 writes at each
            # member (3 users' and 2 replicas). None of them may copy anything more.
            async def all_applied() -> bool:
                return await applied_events(http, daemon.http_port) >= 10

            await until(all_applied, what="every notification applied")
            await notifier.push_new()
            generations: dict[str, int] = {}
            for item in await gcs_generations(http, bucket):
                name = str(item["name"])
                generations[name] = generations.get(name, 0) + 1
            versions = {key: len(s3_versions(bucket, key)) for key in expected}
            # S3: its users' writes plus one copy of each GCS write that won (or had no rival).
            assert versions == {
                "only-s3.bin": 1,
                "only-gs.bin": 1,
                "s3-first.bin": 2,
                "gs-first.bin": 1,
            }
            assert generations == {
                "only-s3.bin": 1,
                "only-gs.bin": 1,
                "s3-first.bin": 1,
                "gs-first.bin": 2,
            }
            # The replicas are marked with their source; the winners written by users are not.
            at_s3 = s3_current(bucket, "s3-first.bin")
            at_gs = await gcs_current(http, bucket, "gs-first.bin")
            assert at_s3 is not None
            assert at_gs is not None
            assert at_s3[1]["replicator_source"].startswith("gs://")
            assert at_gs[1]["replicator_source"].startswith("s3://")
        finally:
            await notifier.stop()
            stop.set()
            await asyncio.wait_for(running, 60)

    async with await open_catalog(config.catalog.url) as catalog:
        found = await catalog.conflicts(group)
    sides = {(c.key, c.winner_member, c.loser_member) for c in found}
    assert sides == {
        ("s3-first.bin", members[1], members[0]),
        ("gs-first.bin", members[0], members[1]),
    }
    assert len(found) == 2
    assert all(c.winner_time > c.loser_time for c in found)
