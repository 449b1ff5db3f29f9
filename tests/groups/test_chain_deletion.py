"""A deletion forwarded along a chain of groups is judged at the time its user deleted, not
when the shared member's store reported it: a write made at the far end in between wins.

Three GCS buckets, A <-> B and B <-> C. The applier is handed each store's notification in
the order that makes the race (as a consumer would take them from the topic), so it is
deterministic: C's user deletes a key the chain had copied everywhere, the second group
deletes it at B; a second later A's user writes the key again; then B's notice of the
deletion arrives, before A's write is notified. The rule names A's write (later than the
deletion): it must be kept at A, recorded as the conflict's winner, and reach B and C.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from replicator.devstack import StackState
from tests.groups.notified import NotifiedMembers, notified_members
from tests.groups.testbed import gcs_current, gcs_delete, gcs_put, next_second

KEY = "k.bin"


@pytest.fixture
async def chain(devstack: StackState, tmp_path: Path) -> AsyncIterator[NotifiedMembers]:
    suffix = uuid.uuid4().hex[:10]
    buckets = [f"cda-{suffix}", f"cdb-{suffix}", f"cdc-{suffix}"]
    a, b, c = (f"gs://{bucket}/" for bucket in buckets)
    groups: list[dict[str, object]] = [
        {"name": f"ab-{suffix}", "members": [a, b]},
        {"name": f"bc-{suffix}", "members": [b, c]},
    ]
    async with notified_members(tmp_path, buckets, groups) as members:
        yield members


async def test_a_write_after_the_users_deletion_beats_its_late_notice(
    chain: NotifiedMembers,
) -> None:
    a, b, c = 0, 1, 2
    async with aiohttp.ClientSession() as http:
        # C's write, copied by the second group to B and forwarded by the first to A.
        await gcs_put(http, chain.buckets[c], KEY, b"first")
        await chain.notify_write(c, KEY)
        await chain.notify_write(b, KEY)
        assert [await gcs_current(http, bucket, KEY) is not None for bucket in chain.buckets] == [
            True
        ] * 3

        # C's user deletes it; the second group deletes it at B.
        at_c = await chain.version_at(c, KEY)
        await gcs_delete(http, chain.buckets[c], KEY)
        at_b = await chain.version_at(b, KEY)
        await chain.notify_deletion(c, KEY, at_c)
        assert await gcs_current(http, chain.buckets[b], KEY) is None

        # A second later A's user writes the key again; B's notice of the deletion comes
        # first (it is later than A's write by the store's clock).
        await next_second()
        await gcs_put(http, chain.buckets[a], KEY, b"second, at A")
        await next_second()
        await chain.notify_deletion(b, KEY, at_b)
        kept = await gcs_current(http, chain.buckets[a], KEY)
        assert kept is not None, "A's write was deleted by the late notice of an earlier deletion"
        assert kept[0] == b"second, at A"

        # A's own notification then spreads it along the chain.
        await chain.notify_write(a, KEY)
        await chain.notify_write(b, KEY)
        held = [await gcs_current(http, bucket, KEY) for bucket in chain.buckets]
        assert [None if h is None else h[0] for h in held] == [b"second, at A"] * 3

    # Every change is recorded as applied: nothing holds a watermark back.
    pending = await chain.pending()
    assert pending
    assert pending == [0] * len(pending)
    found = await chain.catalog.conflicts()
    # A's write won over C's deletion (no version), once for the chain.
    assert [(f.key, f.winner_member, f.loser_member, f.loser_version) for f in found] == [
        (KEY, chain.urls[a], chain.urls[c], None)
    ]
