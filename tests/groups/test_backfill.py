"""``backfill --config`` and ``verify --config`` of a replication group: an S3, a GCS and a file
member written before any daemon ever ran (so no change of theirs was ever notified) end with
the same content under the group's conflict rule; a deletion of a replicated write at the
member that wrote it removes its replicas with ``--delete``, within the max-delete guard and
the group's delete policy. Checked by outside readers."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from connectors import open_store
from replicator.catalog import open_catalog
from replicator.catalog.conflicts import Conflict
from replicator.cli.app import app
from replicator.devstack import StackState
from tests.groups.testbed import next_second
from tests.independent import read_object


def read_or_none(url: str) -> bytes | None:
    try:
        return read_object(url)
    except (FileNotFoundError, ClientError, HTTPError):
        return None


class Group:
    def __init__(self, tmp_path: Path) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.name = f"lake-{suffix}"
        self.members = [
            f"s3://grpb-{suffix}/data/",
            f"gs://grpb-{suffix}/data/",
            f"file://{tmp_path}/member/",
        ]
        self.catalog_url = f"sqlite:///{tmp_path}/catalog.db"
        self.config = tmp_path / "replicator.toml"
        self.write_config("propagate")

    def write_config(self, delete_policy: str) -> None:
        members = ", ".join(json.dumps(m) for m in self.members)
        self.config.write_text(
            f'[[groups]]\nname = "{self.name}"\nmembers = [{members}]\n'
            f'delete_policy = "{delete_policy}"\n\n[catalog]\nurl = "{self.catalog_url}"\n'
        )

    def write_chain(self) -> None:
        """Two groups sharing the GCS member: S3 <-> GCS and GCS <-> file."""
        first, shared, last = (json.dumps(m) for m in self.members)
        self.config.write_text(
            f'[[groups]]\nname = "{self.name}"\nmembers = [{first}, {shared}]\n\n'
            f'[[groups]]\nname = "{self.name}-b"\nmembers = [{shared}, {last}]\n\n'
            f'[catalog]\nurl = "{self.catalog_url}"\n'
        )

    def run(self, *args: str) -> tuple[int, Any]:
        result = CliRunner().invoke(app, [*args, "--config", str(self.config), "--json"])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None

    async def put(self, member: int, key: str, data: bytes) -> None:
        """A user's write at a member."""
        store = open_store(self.members[member])
        try:
            await store.put(key, data)
        finally:
            await store.close()

    async def delete(self, member: int, key: str) -> None:
        store = open_store(self.members[member])
        try:
            await store.delete(key)
        finally:
            await store.close()

    async def conflicts(self) -> list[Conflict]:
        async with await open_catalog(self.catalog_url) as catalog:
            return await catalog.conflicts(self.name)

    def holds(self, key: str) -> list[bytes | None]:
        return [read_or_none(member + key) for member in self.members]


async def create_buckets(urls: list[str]) -> None:
    for url in urls:
        store = open_store(url)
        await store.create_container()
        await store.close()


@pytest.fixture
def group(devstack: StackState, tmp_path: Path) -> Group:
    """Synchronous: the command line runs its own event loop (and signal handlers)."""
    created = Group(tmp_path)
    asyncio.run(create_buckets(created.members[:2]))
    (tmp_path / "member").mkdir()
    return created


def test_backfill_brings_every_member_of_a_group_to_the_same_content(group: Group) -> None:
    asyncio.run(group.put(0, "from-s3.bin", b"s3 " * 700))
    asyncio.run(group.put(1, "from-gs.bin", b"gs " * 800))
    asyncio.run(group.put(2, "from-file.bin", b"file " * 300))
    asyncio.run(group.put(0, "both.bin", b"older at s3 " * 100))
    asyncio.run(next_second())
    asyncio.run(group.put(1, "both.bin", b"newer at gs " * 100))  # later: member 2 wins

    code, report = group.run("verify")
    assert code == 1
    assert set(report) == {f"{group.name}.{i}" for i in (1, 2, 3)}

    code, report = group.run("backfill")
    assert code == 0, report
    expected = {
        "from-s3.bin": b"s3 " * 700,
        "from-gs.bin": b"gs " * 800,
        "from-file.bin": b"file " * 300,
        "both.bin": b"newer at gs " * 100,
    }
    for key, content in expected.items():
        assert group.holds(key) == [content] * 3, key
    code, report = group.run("verify")
    assert code == 0, report
    assert {(c.key, c.winner_member, c.loser_member) for c in asyncio.run(group.conflicts())} == {
        ("both.bin", group.members[1], group.members[0])
    }

    # A replicated write deleted where it was written, and a replica deleted elsewhere.
    asyncio.run(group.delete(0, "from-s3.bin"))
    asyncio.run(group.delete(0, "from-gs.bin"))
    code, report = group.run("backfill", "--delete", "--max-delete", "0")
    assert code == 1  # the guard refused the deletions
    assert group.holds("from-s3.bin") == [None, b"s3 " * 700, b"s3 " * 700]
    group.write_config("never")
    code, report = group.run("backfill", "--delete")
    assert group.holds("from-s3.bin") == [None, b"s3 " * 700, b"s3 " * 700]
    group.write_config("propagate")
    code, report = group.run("backfill", "--delete")
    assert code == 0, report
    assert group.holds("from-s3.bin") == [None, None, None]
    # Member 1 lost a replica of member 2's write: a listing cannot tell when, so member 2's
    # write comes back (and member 3's replica of it was never deleted).
    assert group.holds("from-gs.bin") == [b"gs " * 800] * 3
    for key in ("from-file.bin", "both.bin"):
        assert group.holds(key) == [expected[key]] * 3
    code, report = group.run("verify")
    assert code == 0, report


def test_backfill_forwards_writes_along_a_chain_of_groups(group: Group) -> None:
    """A write at either end of a chain reaches the other end through the shared member: the
    second group forwards the replica the first one made there in the same run; against the
    groups' order, the next run takes it the rest of the way."""
    group.write_chain()
    asyncio.run(group.put(0, "from-s3.bin", b"s3 " * 500))
    asyncio.run(group.put(2, "from-file.bin", b"file " * 400))
    code, report = group.run("backfill")
    assert code == 0, report
    assert group.holds("from-s3.bin") == [b"s3 " * 500] * 3
    assert group.holds("from-file.bin") == [None, b"file " * 400, b"file " * 400]
    code, report = group.run("verify")
    assert code == 1, report
    code, report = group.run("backfill")
    assert code == 0, report
    assert group.holds("from-file.bin") == [b"file " * 400] * 3
    code, report = group.run("verify")
    assert code == 0, report
