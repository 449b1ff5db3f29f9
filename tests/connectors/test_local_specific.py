"""File-store safety: nothing reaches outside the root, nothing partial is ever visible."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from connectors.base import (
    ChecksumKind,
    InvalidArgument,
    InvalidKey,
    NotFound,
    ObjectAttributes,
    PartToken,
)
from connectors.local import LocalStore
from connectors.local.layout import UPLOADS_DIR
from replicator.engine import hashing


@pytest.fixture
async def local(tmp_path: Path) -> LocalStore:
    store = LocalStore(str(tmp_path / "root"))
    await store.create_container()
    return store


class TestEscapes:
    @pytest.mark.parametrize("key", ["../outside", "a/../../outside", "/etc/passwd", "a/./b"])
    async def test_dot_segments_and_absolute_keys_refused(
        self, local: LocalStore, key: str
    ) -> None:
        """Keys that would climb out of the root are refused before any I/O."""
        with pytest.raises(InvalidKey):
            await local.put(key, b"x")
        assert not (local.root.parent / "outside").exists()

    async def test_symlinked_directory_is_not_followed(
        self, local: LocalStore, tmp_path: Path
    ) -> None:
        """A link planted inside the root pointing outside is refused for reads and writes."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret").write_bytes(b"secret")
        os.symlink(outside, local.root / "escape")
        with pytest.raises(InvalidKey):
            await local.read("escape/secret")
        with pytest.raises(InvalidKey):
            await local.put("escape/planted", b"x")
        assert not (outside / "planted").exists()
        assert [m.key async for m in local.list()] == []

    async def test_symlinked_file_is_not_followed(self, local: LocalStore, tmp_path: Path) -> None:
        """A link as the last segment is neither read nor overwritten through."""
        target = tmp_path / "target"
        target.write_bytes(b"keep")
        os.symlink(target, local.root / "link")
        with pytest.raises(InvalidKey):
            await local.read("link")
        await local.put("link", b"replaced")
        assert target.read_bytes() == b"keep"
        assert await local.read("link") == b"replaced"


class TestAtomicity:
    async def test_staging_and_temp_files_never_listed(self, local: LocalStore) -> None:
        """In-progress uploads and temporary files stay out of listings."""
        upload_id = await local.create_multipart("big")
        await local.put_part("big", upload_id, 1, b"part")
        (local.root / f".x{'.replicator-tmp-'}junk").write_bytes(b"partial")
        assert [m.key async for m in local.list()] == []
        await local.abort_multipart("big", upload_id)

    async def test_delete_prunes_empty_directories(self, local: LocalStore) -> None:
        """Deleting the last key of a directory removes it, as object stores have no folders."""
        await local.put("a/b/c", b"x")
        await local.delete("a/b/c")
        # Left: the (empty) staging area single writes go through.
        assert [p.name for p in local.root.iterdir()] == [".replicator-uploads"]
        assert [m async for m in local.list()] == []

    async def test_key_through_a_file_is_refused(self, local: LocalStore) -> None:
        """'a' as a file and 'a/b' as another key cannot both exist on a file system."""
        await local.put("a", b"file")
        with pytest.raises(InvalidKey):
            await local.put("a/b", b"x")
        with pytest.raises(InvalidKey):
            await local.head("a/b")
        with pytest.raises(NotFound):
            await local.head("missing/x")


class TestTornParts:
    async def test_damaged_staged_part_is_caught_at_completion(self, local: LocalStore) -> None:
        """A part whose bytes changed after it was acknowledged (a torn write after a power
        loss) fails completion instead of being joined into the object."""
        upload_id = await local.create_multipart("obj")
        first = await local.put_part("obj", upload_id, 1, b"a" * 1000)
        second = await local.put_part("obj", upload_id, 2, b"b" * 1000)
        staged = local.root / ".replicator-uploads" / upload_id / "00002.part"
        damaged = bytearray(staged.read_bytes())
        damaged[:10] = b"\0" * 10
        staged.write_bytes(bytes(damaged))
        with pytest.raises(InvalidArgument, match="part 2"):
            await local.complete_multipart("obj", upload_id, [first, second])
        with pytest.raises(NotFound):
            await local.head("obj")


class TestPartsInPlace:
    """Parts sent with their offsets are written into one staging file, published by a rename."""

    @staticmethod
    def staged_object(local: LocalStore, upload_id: str) -> Path:
        return local.root / ".replicator-uploads" / upload_id / "object"

    async def test_tiled_upload_is_published_without_copying(self, local: LocalStore) -> None:
        """When the parts tile the staging file, that very file (same inode) becomes the
        object, with its attributes, fingerprint metadata and whole-object CRC32C."""
        chunks = [os.urandom(4096), os.urandom(4096), os.urandom(100)]
        attributes = ObjectAttributes(user_metadata={"origin": "test"})
        upload_id = await local.create_multipart("a/obj", attributes=attributes)
        tokens = [
            await local.put_part_at("a/obj", upload_id, n, (n - 1) * 4096, chunks[n - 1])
            for n in (3, 1, 2)
        ]
        inode = self.staged_object(local, upload_id).stat().st_ino
        meta = await local.complete_multipart(
            "a/obj", upload_id, tokens, extra_metadata={"fingerprint": "f"}
        )
        assert (local.root / "a" / "obj").stat().st_ino == inode
        assert await local.read("a/obj") == b"".join(chunks)
        assert meta.checksums[ChecksumKind.CRC32C] == hashing.crc32c_b64(
            hashing.crc32c(b"".join(chunks))
        )
        assert dict(meta.attributes.user_metadata) == {"origin": "test", "fingerprint": "f"}
        assert not (local.root / ".replicator-uploads" / upload_id).exists()

    async def test_part_sent_again_shorter_leaves_no_tail(self, local: LocalStore) -> None:
        """A last part sent again with fewer bytes does not leave the old bytes past the end."""
        upload_id = await local.create_multipart("obj")
        first = await local.put_part_at("obj", upload_id, 1, 0, b"a" * 100)
        await local.put_part_at("obj", upload_id, 2, 100, b"b" * 100)
        second = await local.put_part_at("obj", upload_id, 2, 100, b"c" * 10)
        await local.complete_multipart("obj", upload_id, [first, second])
        assert await local.read("obj") == b"a" * 100 + b"c" * 10

    async def test_parts_that_do_not_tile_are_joined(self, local: LocalStore) -> None:
        """Completing with a subset of the parts, or with parts sent both ways, still gives
        exactly the listed parts in number order."""
        upload_id = await local.create_multipart("obj")
        one = await local.put_part_at("obj", upload_id, 1, 0, b"1" * 50)
        await local.put_part_at("obj", upload_id, 2, 50, b"2" * 50)
        three = await local.put_part_at("obj", upload_id, 3, 100, b"3" * 7)
        four = await local.put_part("obj", upload_id, 4, b"4" * 9)
        await local.complete_multipart("obj", upload_id, [four, three, one])
        assert await local.read("obj") == b"1" * 50 + b"3" * 7 + b"4" * 9

    async def test_part_sent_again_without_offset_replaces_the_placed_one(
        self, local: LocalStore
    ) -> None:
        """The later of two uploads of one part number is the one completion uses."""
        upload_id = await local.create_multipart("obj")
        await local.put_part_at("obj", upload_id, 1, 0, b"old")
        token = await local.put_part("obj", upload_id, 1, b"new!")
        await local.complete_multipart("obj", upload_id, [token])
        assert await local.read("obj") == b"new!"

    async def test_token_for_other_bytes_is_refused(self, local: LocalStore) -> None:
        """A token that does not match what was stored fails completion; nothing is published."""
        upload_id = await local.create_multipart("obj")
        token = await local.put_part_at("obj", upload_id, 1, 0, b"stored bytes")
        forged = PartToken(1, hashing.crc32c_b64(hashing.crc32c(b"other bytes!")), token.size)
        with pytest.raises(InvalidArgument, match="part 1"):
            await local.complete_multipart("obj", upload_id, [forged])
        with pytest.raises(NotFound):
            await local.head("obj")

    async def test_unrecorded_part_is_never_uploaded(self, local: LocalStore) -> None:
        """Bytes in the staging file without a record (a crash before the part was made
        durable) do not count as a part."""
        upload_id = await local.create_multipart("obj")
        token = await local.put_part_at("obj", upload_id, 1, 0, b"bytes")
        (local.root / ".replicator-uploads" / upload_id / "00001.placed").unlink()
        with pytest.raises(InvalidArgument, match="never uploaded"):
            await local.complete_multipart("obj", upload_id, [token])

    async def test_negative_offset_refused(self, local: LocalStore) -> None:
        """A part cannot start before the object."""
        upload_id = await local.create_multipart("obj")
        with pytest.raises(InvalidArgument):
            await local.put_part_at("obj", upload_id, 1, -1, b"x")
        await local.abort_multipart("obj", upload_id)


class TestAbortDuringPartWrites:
    @pytest.mark.parametrize("placed", [True, False])
    async def test_abort_waits_for_part_writes_of_cancelled_callers(
        self, local: LocalStore, placed: bool
    ) -> None:
        """A cancelled copy's part writes keep running in their threads; aborting the upload
        waits for them, so nothing is left in the staging area afterwards."""
        data = b"x" * (32 * 1024 * 1024)
        for _ in range(3):
            upload = await local.create_multipart("big")
            writes = [
                asyncio.create_task(
                    local.put_part_at("big", upload, n, (n - 1) * len(data), data)
                    if placed
                    else local.put_part("big", upload, n, data)
                )
                for n in range(1, 5)
            ]
            await asyncio.sleep(0.01)
            for write in writes:
                write.cancel()
            await asyncio.gather(*writes, return_exceptions=True)
            await local.abort_multipart("big", upload)
            assert not (local.root / UPLOADS_DIR / upload).exists()
            assert [u async for u in local.list_multipart_uploads()] == []
