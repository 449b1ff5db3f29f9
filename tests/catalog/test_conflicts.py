"""Conflicts of replication groups on both backends: recorded once whichever member's daemon
finds them, listed latest first by the catalog and by `replicator catalog conflicts`; and
what a member had received before its own change (``Catalog.received``)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import typer
from typer.testing import CliRunner

from replicator.catalog import Catalog, LocationSpec, Role
from replicator.catalog.cli import catalog_app
from replicator.catalog.conflicts import AppliedDeletion, Conflict
from replicator.catalog.model import Change
from tests.catalog.conftest import unique
from tests.catalog.test_replicas import verified

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def group_dataset(catalog: Catalog) -> tuple[str, str, str]:
    """A group's dataset: two members, both sources."""
    name, tag = unique("grp-"), unique("")
    s3, gs = f"s3://lake-{tag}/", f"gs://lake-{tag}/"
    await catalog.add_dataset(name, [LocationSpec(s3, Role.SOURCE), LocationSpec(gs, Role.SOURCE)])
    return name, s3, gs


def conflict(group: str, key: str, winner: str, loser: str, at: int) -> Conflict:
    return Conflict(
        group=group,
        key=key,
        winner_member=winner,
        winner_version=f"w{at}",
        winner_time=T0 + timedelta(seconds=at + 1),
        loser_member=loser,
        loser_version=None,
        loser_time=T0 + timedelta(seconds=at),
        detected_at=T0 + timedelta(seconds=at + 5),
    )


async def test_recorded_once_and_listed_latest_first(catalog: Catalog) -> None:
    group, s3, gs = await group_dataset(catalog)
    first = conflict(group, "a.bin", s3, gs, 0)
    assert await catalog.record_conflict(first)
    # The other member's daemon finds the same conflict: not recorded twice.
    assert not await catalog.record_conflict(
        Conflict(**{**first.__dict__, "detected_at": T0 + timedelta(minutes=1)})
    )
    second = conflict(group, "b.bin", gs, s3, 10)
    assert await catalog.record_conflict(second)
    assert await catalog.record_conflict(conflict(unique("other-"), "a.bin", s3, gs, 0))
    assert await catalog.conflicts(group) == [second, first]
    assert first.as_json()["loser"] == {
        "member": gs,
        "version": None,
        "deleted": True,
        "time": (T0).isoformat(),
    }


async def test_received_names_the_version_a_member_holds_from_another(catalog: Catalog) -> None:
    _, s3, gs = await group_dataset(catalog)
    write = Change(
        source_url=s3 + "k.bin",
        sequencer="",
        event_time=T0,
        version="v1",
        size=100,
        etag="e1",
    )
    await catalog.mark_pending(write, [gs])
    assert not await catalog.received(gs + "k.bin", s3 + "k.bin", "v1")
    await catalog.record_replica(write, gs, verified(write))
    assert await catalog.received(gs + "k.bin", s3 + "k.bin", "v1")
    assert not await catalog.received(gs + "k.bin", s3 + "k.bin", "v2")
    # Not the other direction, and not for a location outside the dataset.
    assert not await catalog.received(s3 + "k.bin", gs + "k.bin", "v1")
    assert not await catalog.received(gs + "k.bin", "az://elsewhere/k.bin", "v1")


async def test_deleted_from_names_the_member_whose_deletion_was_applied(
    catalog: Catalog,
) -> None:
    """What a chain of groups forwards when a member's store reports a deletion the group
    made there: the member the deletion came from, and only while the row is that deletion."""
    _, s3, gs = await group_dataset(catalog)
    write = Change(
        source_url=s3 + "k.bin", sequencer="", event_time=T0, version="v1", size=100, etag="e1"
    )
    await catalog.mark_pending(write, [gs])
    await catalog.record_replica(write, gs, verified(write))
    assert await catalog.deleted_from(gs + "k.bin") is None
    deletion = Change(
        source_url=s3 + "k.bin",
        sequencer="",
        event_time=T0 + timedelta(seconds=5),
        version=None,
        size=None,
        etag=None,
        deleted=True,
    )
    await catalog.mark_pending(deletion, [gs])
    assert await catalog.deleted_from(gs + "k.bin") is None  # still to apply
    await catalog.mark_deleted(deletion, gs, T0 + timedelta(seconds=6))
    # The member it came from, and its user's time (not when the group applied it).
    assert await catalog.deleted_from(gs + "k.bin") == AppliedDeletion(
        s3, T0 + timedelta(seconds=5)
    )
    assert await catalog.deleted_from(gs + "other.bin") is None


async def test_the_command_lists_them(catalog: Catalog, catalog_url: str) -> None:
    group, s3, gs = await group_dataset(catalog)
    await catalog.record_conflict(conflict(group, "a b.bin", s3, gs, 0))
    app = typer.Typer()
    app.add_typer(catalog_app, name="catalog")

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(app, ["catalog", "conflicts", *args, "--catalog", catalog_url])
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    listed = await asyncio.to_thread(invoke, "--group", group, "--json")
    [found] = [json.loads(line) for line in listed.splitlines()]
    assert (found["key"], found["winner"]["member"], found["loser"]["deleted"]) == (
        "a b.bin",
        s3,
        True,
    )
    table = await asyncio.to_thread(invoke, "--group", group)
    assert "DETECTED" in table
    assert f"{s3} w0 @2026-11-30T12:00:01+00:00" in table
    assert f"{gs} deleted @2026-11-30T12:00:00+00:00" in table


async def test_the_groups_deletions_are_found_within_a_window_and_forgotten_later(
    catalog: Catalog,
) -> None:
    _, s3, gs = await group_dataset(catalog)
    url, other = s3 + "k.bin", gs + "k.bin"
    await catalog.record_group_deletion(url, T0, keep=timedelta(days=1))
    await catalog.record_group_deletion(url, T0, keep=timedelta(days=1))  # twice: harmless
    second = timedelta(seconds=1)
    assert await catalog.group_deleted(url, T0 - second, T0 + second)
    assert await catalog.group_deleted(url, T0, T0)
    assert not await catalog.group_deleted(url, T0 + second, T0 + 60 * second)
    assert not await catalog.group_deleted(url, T0 - 60 * second, T0 - second)
    assert not await catalog.group_deleted(other, T0 - second, T0 + second)
    # A deletion a day and more later forgets the first one there.
    later = T0 + timedelta(days=2)
    await catalog.record_group_deletion(url, later, keep=timedelta(days=1))
    assert not await catalog.group_deleted(url, T0 - second, T0 + second)
    assert await catalog.group_deleted(url, later, later)
