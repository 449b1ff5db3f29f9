"""file -> file: the kernel copies, one read of the replica checks it and fingerprints it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors import open_store
from connectors.base import IntegrityError, MiB, NotFound
from replicator.engine import hashing
from replicator.engine.metadata import replica_fingerprint, replica_source
from replicator.engine.planner import Strategy
from replicator.engine.transfer import Copier


@pytest.mark.parametrize("size", [0, 1, 8 * MiB, 8 * MiB + 1, 21 * MiB + 5])
async def test_a_file_is_copied_by_the_kernel_and_fingerprinted(tmp_path: Path, size: int) -> None:
    source = open_store(f"file://{tmp_path}/a")
    dest = open_store(f"file://{tmp_path}/b")
    for store in (source, dest):
        await store.create_container()
    data = os.urandom(size)
    (tmp_path / "a" / "f").write_bytes(data)  # a plain file: no recorded checksum
    result = await Copier().copy(source, "f", dest, "dir/f")
    assert result.status == "copied"
    assert result.strategy is Strategy.SERVER_SIDE
    assert result.fingerprint == hashing.fingerprint(data)
    assert (tmp_path / "b" / "dir" / "f").read_bytes() == data
    head = await dest.head("dir/f")
    assert replica_fingerprint(head.attributes.user_metadata) == result.fingerprint
    assert replica_source(head.attributes.user_metadata) == source.url_for("f")
    assert head.checksums == {"crc32c": hashing.crc32c_b64(hashing.crc32c(data))}
    again = await Copier().copy(source, "f", dest, "dir/f")
    assert again.status == "skipped"


async def test_a_source_whose_bytes_differ_from_its_recorded_crc32c_is_not_published(
    tmp_path: Path,
) -> None:
    """A file this store wrote records its CRC32C: a copy that reads back other bytes (the
    source was damaged in place, keeping its record) is refused before it is visible."""
    source = open_store(f"file://{tmp_path}/a")
    dest = open_store(f"file://{tmp_path}/b")
    for store in (source, dest):
        await store.create_container()
    await source.put("f", os.urandom(100_000))
    stored = tmp_path / "a" / "f"
    damaged = bytearray(stored.read_bytes())
    damaged[5000] ^= 0xFF
    stored.write_bytes(damaged)
    with pytest.raises(IntegrityError, match="records"):
        await Copier().copy(source, "f", dest, "f")
    with pytest.raises(NotFound):
        await dest.head("f")
    assert [m async for m in dest.list()] == []
    assert [u async for u in dest.list_multipart_uploads()] == [], "nothing staged is left"
