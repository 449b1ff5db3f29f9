"""A backfill killed half-way (SIGKILL: no cleanup of any kind) and run again finishes, and
every object is copied once in total: the second run starts after the checkpoint the first
left in the catalog, and finds what the first copied after it in sync."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from connectors import open_store
from replicator.cli.reconcile import _url_route
from replicator.devstack import StackState
from tests.conftest import unique_name
from tests.reconcile.conftest import Cli, sync

OBJECTS = 300


async def fill(url: str) -> None:
    async with open_store(url) as store:
        await store.create_container()
        for i in range(OBJECTS):
            await store.put(f"obj/{i:04d}", str(i).encode())


async def keys(url: str) -> list[str]:
    async with open_store(url) as store:
        return [meta.key async for meta in store.list()]


def saved_checkpoint(catalog: Path, name: str) -> str | None:
    """The backfill's checkpoint as the catalog holds it now (read with sqlite3 itself)."""
    try:
        with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute("SELECT value FROM checkpoints WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:
        return None  # not created yet, or locked by the writer for a moment
    return row[0] if row and row[0] else None


def test_a_killed_backfill_copies_every_object_once_in_total(
    devstack: StackState, cli: Cli, tmp_path: Path
) -> None:
    source, dest = f"s3://{unique_name()}/", f"file://{tmp_path}/out/"
    sync(fill(source))
    checkpoint = f"reconcile/{_url_route([source, dest])['name']}"
    catalog = Path(cli.catalog_url.removeprefix("sqlite:///"))

    first = cli.process("backfill", source, dest, "--transfers", "2")
    deadline = time.monotonic() + 120
    while saved_checkpoint(catalog, checkpoint) is None:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)  # polling a condition, with a deadline
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)  # reaps it and closes its pipes
    resume_after = saved_checkpoint(catalog, checkpoint)
    assert resume_after is not None
    copied_before = len(sync(keys(dest)))
    assert 0 < copied_before < OBJECTS

    code, report = cli.invoke("backfill", source, dest)
    assert code == 0, report
    [summary] = report.values()
    assert summary["copied"] + copied_before == OBJECTS
    # It resumed: the keys up to the checkpoint were not even listed again.
    assert summary["compared"] == sum(f"obj/{i:04d}" > resume_after for i in range(OBJECTS))
    assert sorted(sync(keys(dest))) == [f"obj/{i:04d}" for i in range(OBJECTS)]
    assert saved_checkpoint(catalog, checkpoint) is None  # cleared at the end

    code, report = cli.invoke("verify", source, dest)
    assert code == 0, report
