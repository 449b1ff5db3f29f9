"""File-store safety: nothing reaches outside the root, nothing partial is ever visible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors.base import InvalidArgument, InvalidKey, NotFound
from connectors.local import LocalStore


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
        assert list(local.root.iterdir()) == []

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
