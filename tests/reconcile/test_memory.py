"""The compare engine streams both listings: comparing 100,000 objects needs no more memory
than comparing 10,000 (a listing held whole would need ten times as much)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from connectors import open_store
from replicator.daemon.reconcile import CopyActions, Options, Reconciler
from replicator.engine.transfer import Copier

MB = 1024 * 1024
PER_DIRECTORY = 1000


def make_files(root: Path, count: int) -> None:
    for d in range(count // PER_DIRECTORY):
        directory = root / f"d{d:03d}"
        directory.mkdir(parents=True)
        for i in range(PER_DIRECTORY):
            os.close(os.open(directory / f"{i:04d}", os.O_CREAT | os.O_WRONLY, 0o644))


def peak_rss_growth(run: asyncio.Future[object] | object) -> int:
    """How far the process's peak resident size rose above its size before ``run``."""

    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc/self/status")

    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from now
    before = status("VmRSS")
    asyncio.run(run)  # type: ignore[arg-type]
    return status("VmHWM") - before


async def compare(source_root: Path, dest_root: Path, count: int) -> None:
    async with (
        open_store(f"file://{source_root}/") as source,
        open_store(f"file://{dest_root}/") as dest,
    ):
        await dest.create_container()
        actions = CopyActions(Copier(), source, [dest])
        tally = await Reconciler(source, [dest], actions, Options(dry_run=True)).run()
    assert tally.missing == count


def test_peak_memory_is_flat_in_the_object_count(tmp_path: Path) -> None:
    small, large = 10_000, 100_000
    make_files(tmp_path / "small", small)
    make_files(tmp_path / "large", large)
    # A first run warms the interpreter (imports, caches) so that neither measure has it.
    asyncio.run(compare(tmp_path / "small", tmp_path / "warm", small))

    grew_small = peak_rss_growth(compare(tmp_path / "small", tmp_path / "out-small", small))
    grew_large = peak_rss_growth(compare(tmp_path / "large", tmp_path / "out-large", large))
    # Holding the 100,000 listed objects (about 500 bytes each) would add ~45 MiB.
    assert grew_large < grew_small + 16 * MB, (grew_small, grew_large)
