"""A chain of two replication groups sharing a member: an S3 bucket (A, real notifications
through SQS) with a GCS bucket (B), and B with a second GCS bucket (C), both pushing their
notifications to the daemon's receiver. The second group forwards what the first wrote at B
to C, and the first what the second wrote there to A: every write reaches each other
location with exactly one copy and never comes back; A and C writing one key a second apart
ends as C's (the later) write everywhere, with A's recorded once as the loser; a deletion at
C of A's write reaches B and then A, and nothing is written again."""

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
    gcs_delete,
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


async def test_a_chain_of_groups_settles_with_one_copy_per_location(
    devstack: StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATOR_INGEST_TOKEN", TOKEN)
    suffix = uuid.uuid4().hex[:10]
    bucket, second = f"chn-{suffix}", f"chn2-{suffix}"
    queue_url, queue_arn = s3_queue(f"chn-{suffix}")
    versioned_s3_bucket(bucket, queue_arn)
    a, b, c = f"s3://{bucket}/", f"gs://{bucket}/", f"gs://{second}/"
    groups: list[dict[str, object]] = [
        {"name": f"ab-{suffix}", "members": [a, b]},
        {"name": f"bc-{suffix}", "members": [b, c]},
    ]
    config = group_config(devstack, tmp_path, suffix, [], queue_url, groups=groups)
    s3 = s3_client()
    names = ("a", "b", "c", "early-a", "late-c", "gone")
    data = {name: os.urandom(1000 + i) for i, name in enumerate(names)}
    async with aiohttp.ClientSession() as http:
        for name in (bucket, second):
            await versioned_gcs_bucket(http, name)
        s3.put_object(Bucket=bucket, Key="from-a.bin", Body=data["a"])  # type: ignore[attr-defined]
        s3.put_object(Bucket=bucket, Key="gone.bin", Body=data["gone"])  # type: ignore[attr-defined]
        await gcs_put(http, bucket, "from-b.bin", data["b"])
        await gcs_put(http, second, "from-c.bin", data["c"])
        # One key at both ends of the chain, a second apart: A, then C.
        s3.put_object(Bucket=bucket, Key="both.bin", Body=data["early-a"])  # type: ignore[attr-defined]
        await next_second()
        await gcs_put(http, second, "both.bin", data["late-c"])

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
        expected: dict[str, bytes | None] = {
            "from-a.bin": data["a"],
            "from-b.bin": data["b"],
            "from-c.bin": data["c"],
            "gone.bin": data["gone"],
            "both.bin": data["late-c"],
        }

        async def holds(key: str) -> list[bytes | None]:
            found = [s3_current(bucket, key)]
            found += [await gcs_current(http, name, key) for name in (bucket, second)]
            return [None if f is None else f[0] for f in found]

        async def converged() -> bool:
            return all([await holds(k) == [v] * 3 for k, v in expected.items()])

        async def settled() -> bool:
            for notifier in notifiers:
                await notifier.push_new()
            async with await open_catalog(config.catalog.url) as catalog:
                lags = await catalog.route_lag(percentiles=False)
            return bool(lags) and all(lag.pending_ops == 0 for lag in lags)

        async def counts() -> dict[str, list[int]]:
            """How many times each key was written at A, B and C (versions, generations)."""
            found = {key: [len(s3_versions(bucket, key))] for key in expected}
            for name in (bucket, second):
                per_key: dict[str, int] = {}
                for item in await gcs_generations(http, name):
                    per_key[str(item["name"])] = per_key.get(str(item["name"]), 0) + 1
                for key in expected:
                    found[key].append(per_key.get(key, 0))
            return found

        try:
            await until(converged, 120, "A, B and C hold the same content")
            await until(settled, 60, "no change pending in the catalog")
            written = await counts()
            # A write with no rival: the original plus one copy at each other location, B's
            # forwarded once to the far end, nothing back.
            for key in ("from-a.bin", "from-b.bin", "from-c.bin", "gone.bin"):
                assert written[key] == [1, 1, 1], key
            # C's write won: A holds its own and C's copy; C only its own; B C's copy, and
            # A's losing one if it arrived first.
            assert written["both.bin"][0] == 2
            assert written["both.bin"][1] in (1, 2)
            assert written["both.bin"][2] == 1

            # At C, deleting A's write that the chain forwarded there (moto notifies no
            # deletion in a versioned bucket; GCS's are pushed).
            await gcs_delete(http, second, "gone.bin")
            expected["gone.bin"] = None
            await until(converged, 120, "the deletion at C reached B and A")
            await until(settled, 60, "no change pending in the catalog")
            # Deleted everywhere, and no location was written again.
            assert await counts() == written
            assert await holds("gone.bin") == [None] * 3
        finally:
            for notifier in notifiers:
                await notifier.stop()
            stop.set()
            await asyncio.wait_for(running, 60)

    async with await open_catalog(config.catalog.url) as catalog:
        found = await catalog.conflicts()
    # The conflict is recorded once for the chain (under its dataset, the first group's name)
    # with the same versions and times wherever it was found: A's write lost to C's.
    assert [(c.group, c.key, c.winner_member, c.loser_member) for c in found] == [
        (f"ab-{suffix}", "both.bin", c, a)
    ]
    assert found[0].winner_time > found[0].loser_time
