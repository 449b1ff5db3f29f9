"""A replication group of three members: an S3 bucket (real notifications through SQS) and two
GCS buckets (notifications pushed to the daemon's receiver). A write at each member reaches the
two others with exactly two copies; one key written at all three a second apart ends as the
last write at every member, with both earlier writes recorded as losers."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import aiohttp
import pytest

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
    next_second,
    s3_client,
    s3_current,
    s3_queue,
    s3_versions,
    until,
    versioned_gcs_bucket,
    versioned_s3_bucket,
)


async def test_three_members_one_copy_to_each_other_member_and_the_last_write_wins(
    devstack: StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATOR_INGEST_TOKEN", TOKEN)
    suffix = uuid.uuid4().hex[:10]
    bucket, second = f"grp-{suffix}", f"grp2-{suffix}"
    queue_url, queue_arn = s3_queue(f"grp-{suffix}")
    versioned_s3_bucket(bucket, queue_arn)
    members = [f"s3://{bucket}/", f"gs://{bucket}/", f"gs://{second}/"]
    config = group_config(devstack, tmp_path, suffix, members, queue_url)
    s3 = s3_client()
    data = {name: os.urandom(1000 + i) for i, name in enumerate(("a", "b", "c", "k1", "k2", "k3"))}
    async with aiohttp.ClientSession() as http:
        for name in (bucket, second):
            await versioned_gcs_bucket(http, name)
        s3.put_object(Bucket=bucket, Key="from-s3.bin", Body=data["a"])  # type: ignore[attr-defined]
        await gcs_put(http, bucket, "from-gs.bin", data["b"])
        await gcs_put(http, second, "from-gs2.bin", data["c"])
        # One key at all three, a second apart: member 2, then member 1, then member 3.
        await gcs_put(http, bucket, "everywhere.bin", data["k1"])
        await next_second()
        s3.put_object(Bucket=bucket, Key="everywhere.bin", Body=data["k2"])  # type: ignore[attr-defined]
        await next_second()
        await gcs_put(http, second, "everywhere.bin", data["k3"])

        daemon = Daemon(config)
        stop, ready = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(daemon.run(stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        notifiers = [
            GcsNotifier(http, name, lambda: f"http://127.0.0.1:{daemon.ingest_port}/ingest/gcs")
            for name in (bucket, second)
        ]
        for notifier in notifiers:
            notifier.start()
        expected = {
            "from-s3.bin": data["a"],
            "from-gs.bin": data["b"],
            "from-gs2.bin": data["c"],
            "everywhere.bin": data["k3"],
        }
        try:

            async def converged() -> bool:
                for key, content in expected.items():
                    at_s3 = s3_current(bucket, key)
                    held = [await gcs_current(http, name, key) for name in (bucket, second)]
                    found = [at_s3, *held]
                    if any(f is None or f[0] != content for f in found):
                        return False
                return True

            await until(converged, 120, "all three members hold the same content")
            # Let every notification of the copies arrive: none may copy anything more.
            for notifier in notifiers:
                await notifier.push_new()

            async def settled() -> bool:
                async with await open_catalog(config.catalog.url) as catalog:
                    lags = await catalog.route_lag(percentiles=False)
                return bool(lags) and all(lag.pending_ops == 0 for lag in lags)

            await until(settled, 60, "no change pending in the catalog")
            counts: dict[str, list[int]] = {}
            for key in expected:
                counts[key] = [len(s3_versions(bucket, key))]
            for name in (bucket, second):
                per_key: dict[str, int] = {}
                for item in await gcs_generations(http, name):
                    per_key[str(item["name"])] = per_key.get(str(item["name"]), 0) + 1
                for key in expected:
                    counts[key].append(per_key.get(key, 0))
            # A write with no rival: the original plus one copy at each other member.
            assert counts["from-s3.bin"] == [1, 1, 1]
            assert counts["from-gs.bin"] == [1, 1, 1]
            assert counts["from-gs2.bin"] == [1, 1, 1]
            # The winner (member 3's) reached both others; member 3 holds only its own write.
            assert counts["everywhere.bin"][2] == 1
            assert all(count >= 2 for count in counts["everywhere.bin"][:2])
        finally:
            for notifier in notifiers:
                await notifier.stop()
            stop.set()
            await asyncio.wait_for(running, 60)

    async with await open_catalog(config.catalog.url) as catalog:
        found = await catalog.conflicts(config.groups[0].name)
    # Both earlier writes are recorded as losers (member 2's to member 1's or 3's, depending on
    # which copy reached it first), the last write never is, and every record names the later
    # write as the winner.
    assert {c.loser_member for c in found} == set(members[:2])
    assert all(c.key == "everywhere.bin" for c in found)
    assert all(c.winner_time > c.loser_time for c in found)
