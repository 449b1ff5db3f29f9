"""A replication group of an S3 bucket (real notifications through SQS) and a GCS bucket
(notifications pushed to the daemon's receiver). Checked by outside readers: both members end
byte-identical, each conflicting key holds the change the rule names, every write caused
exactly one copy (each member's versions are counted), and every conflict is in the catalog.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from replicator.catalog import open_catalog
from replicator.catalog.conflicts import Conflict
from replicator.devstack import StackState
from tests.groups.testbed import (
    TOKEN,
    Pair,
    gcs_current,
    gcs_generations,
    next_second,
    s3_current,
    s3_versions,
    until,
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


async def conflicts(pair: Pair) -> list[Conflict]:
    async with await open_catalog(pair.config.catalog.url) as catalog:
        return await catalog.conflicts(pair.group)


@pytest.fixture
async def pair(devstack: StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pair:
    monkeypatch.setenv("REPLICATOR_INGEST_TOKEN", TOKEN)
    async with aiohttp.ClientSession() as http:
        created = Pair(devstack, tmp_path, http)
        await created.create()
        try:
            yield created  # type: ignore[misc]
        finally:
            await created.stop()


async def test_writes_at_each_member_and_concurrent_writes_converge_with_one_copy_each(
    pair: Pair,
) -> None:
    """Before any replication: one write at each member, and two keys written at both, the
    first one second before the other (once each member first). The later write wins."""
    data = {name: os.urandom(3000 + i) for i, name in enumerate(("a", "b", "c1", "c2", "e1", "e2"))}
    pair.s3_put("only-s3.bin", data["a"])
    await pair.gcs_put("only-gs.bin", data["b"])
    pair.s3_put("s3-first.bin", data["c1"])
    await pair.gcs_put("gs-first.bin", data["e1"])
    await next_second()
    await pair.gcs_put("s3-first.bin", data["c2"])  # later: member 2 wins
    pair.s3_put("gs-first.bin", data["e2"])  # later: member 1 wins
    expected: dict[str, bytes | None] = {
        "only-s3.bin": data["a"],
        "only-gs.bin": data["b"],
        "s3-first.bin": data["c2"],
        "gs-first.bin": data["e2"],
    }
    await pair.start()
    await pair.until_both_hold(expected)
    assert pair.daemon is not None

    # Every notification is applied, the replicas' own included: 5 writes at each member
    # (3 users' and 2 replicas). None of them may copy anything more.
    async def all_applied() -> bool:
        return await applied_events(pair.http, pair.daemon.http_port) >= 10  # type: ignore[union-attr]

    await until(all_applied, what="every notification applied")
    await pair.notifier.push_new()
    generations: dict[str, int] = {}
    for item in await gcs_generations(pair.http, pair.bucket):
        name = str(item["name"])
        generations[name] = generations.get(name, 0) + 1
    versions = {key: len(s3_versions(pair.bucket, key)) for key in expected}
    # Each member: its users' writes plus one copy of each of the other's that won (or had
    # no rival).
    assert versions == {"only-s3.bin": 1, "only-gs.bin": 1, "s3-first.bin": 2, "gs-first.bin": 1}
    assert generations == {
        "only-s3.bin": 1,
        "only-gs.bin": 1,
        "s3-first.bin": 1,
        "gs-first.bin": 2,
    }
    # The replicas are marked with their source; the winners written by users are not.
    at_s3 = s3_current(pair.bucket, "s3-first.bin")
    at_gs = await gcs_current(pair.http, pair.bucket, "gs-first.bin")
    assert at_s3 is not None
    assert at_gs is not None
    assert at_s3[1]["replicator_source"].startswith("gs://")
    assert at_gs[1]["replicator_source"].startswith("s3://")

    found = await conflicts(pair)
    s3, gs = pair.members
    assert {(c.key, c.winner_member, c.loser_member) for c in found} == {
        ("s3-first.bin", gs, s3),
        ("gs-first.bin", s3, gs),
    }
    assert len(found) == 2
    assert all(c.winner_time > c.loser_time for c in found)


async def test_deletions_take_part_in_the_rule(pair: Pair) -> None:
    """A deletion of a write the member had received is an update (no conflict); a deletion
    and a write of one key at two members, a second apart: the later one wins everywhere."""
    first = {key: os.urandom(2000) for key in ("gone.bin", "rewritten.bin", "deleted.bin")}
    for key, content in first.items():
        pair.s3_put(key, content)
    await pair.start()
    await pair.until_both_hold(dict(first))
    await pair.stop()

    newer = {key: os.urandom(2100) for key in ("rewritten.bin", "deleted.bin")}
    await pair.gcs_delete("gone.bin")  # GCS had S3's write: it goes everywhere
    await pair.gcs_delete("rewritten.bin")
    pair.s3_put("deleted.bin", newer["deleted.bin"])
    await next_second()
    pair.s3_put("rewritten.bin", newer["rewritten.bin"])  # later than GCS's deletion: wins
    await pair.gcs_delete("deleted.bin")  # later than S3's write: wins
    await pair.start()
    await pair.until_both_hold(
        {"gone.bin": None, "rewritten.bin": newer["rewritten.bin"], "deleted.bin": None}
    )

    async def both_recorded() -> bool:
        return len(await conflicts(pair)) >= 2

    await until(both_recorded, what="both conflicts recorded")
    found = await conflicts(pair)
    s3, gs = pair.members
    sides = {
        (c.key, c.winner_member, c.winner_version is None, c.loser_member, c.loser_version is None)
        for c in found
    }
    assert sides == {
        ("rewritten.bin", s3, False, gs, True),
        ("deleted.bin", gs, True, s3, False),
    }
    # Nothing comes back once every notification is in.
    await pair.notifier.push_new()
    await pair.until_both_hold(
        {"gone.bin": None, "rewritten.bin": newer["rewritten.bin"], "deleted.bin": None}
    )
