"""A group whose deletions are delayed: a member's user deleting a key leaves the other
members' replicas in place for ``delete_delay`` (a safety net against mistaken deletes), then
the sweeper removes them; the members' notice of that removal is the group's own (an echo,
not a new deletion), and a member's own write made during the delay is never removed and
wins over the earlier deletion everywhere.

Two GCS buckets; the applier is handed each store's notification as a consumer would take
it, and the sweeper is run at chosen times, so the test is deterministic.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from replicator.devstack import StackState
from tests.groups.notified import NotifiedMembers, notified_members
from tests.groups.testbed import gcs_delete, gcs_put, next_second

DELAY = timedelta(hours=1)


@pytest.fixture
async def pair(devstack: StackState, tmp_path: Path) -> AsyncIterator[NotifiedMembers]:
    suffix = uuid.uuid4().hex[:10]
    buckets = [f"dla-{suffix}", f"dlb-{suffix}"]
    group: dict[str, object] = {
        "name": f"lake-{suffix}",
        "members": [f"gs://{bucket}/" for bucket in buckets],
        "delete_policy": "delayed",
        "delete_delay": "1h",
    }
    async with notified_members(tmp_path, buckets, [group]) as members:
        yield members


async def test_replicas_outlive_the_deletion_then_go_and_their_notice_is_an_echo(
    pair: NotifiedMembers,
) -> None:
    a, b = 0, 1
    sweeper = pair.applier.sweeper(timedelta(seconds=1))
    async with aiohttp.ClientSession() as http:
        await gcs_put(http, pair.buckets[a], "k.bin", b"at A")
        await pair.notify_write(a, "k.bin")
        assert await pair.holds(http, "k.bin") == [b"at A"] * 2

        version = await pair.version_at(a, "k.bin")
        await gcs_delete(http, pair.buckets[a], "k.bin")
        deleted_at = datetime.now(UTC)
        await pair.notify_deletion(a, "k.bin", version)
        # Still at B for the delay.
        assert await pair.holds(http, "k.bin") == [None, b"at A"]
        early = await sweeper.sweep(deleted_at + DELAY / 2)
        assert early.deleted == 0
        assert await pair.holds(http, "k.bin") == [None, b"at A"]

        due = await sweeper.sweep(deleted_at + DELAY + timedelta(minutes=1))
        assert due.deleted == 1
        at_b = await pair.version_at(b, "k.bin")
        assert await pair.holds(http, "k.bin") == [None, None]
        # B's store reports the removal: the group's own deletion, nothing more to do.
        outcomes = await pair.notify_deletion(b, "k.bin", at_b)
        assert outcomes == ["echo"]
    pending = await pair.pending()
    assert pending == [0] * len(pending)


async def test_a_write_at_the_other_member_during_the_delay_is_kept_and_wins(
    pair: NotifiedMembers,
) -> None:
    a, b = 0, 1
    sweeper = pair.applier.sweeper(timedelta(seconds=1))
    async with aiohttp.ClientSession() as http:
        await gcs_put(http, pair.buckets[a], "k.bin", b"at A")
        await pair.notify_write(a, "k.bin")
        version = await pair.version_at(a, "k.bin")
        await gcs_delete(http, pair.buckets[a], "k.bin")
        deleted_at = datetime.now(UTC)
        await pair.notify_deletion(a, "k.bin", version)

        # B's user writes the key while A's deletion waits: it is B's own write.
        await next_second()
        await gcs_put(http, pair.buckets[b], "k.bin", b"at B, later")
        report = await sweeper.sweep(deleted_at + DELAY + timedelta(minutes=1))
        assert report.deleted == 0
        assert await pair.holds(http, "k.bin") == [None, b"at B, later"]

        # Its notification copies it to A: later than A's deletion, it wins there too.
        await pair.notify_write(b, "k.bin")
        assert await pair.holds(http, "k.bin") == [b"at B, later"] * 2
