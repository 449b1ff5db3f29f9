"""Multipart uploads of a LocalStore: parts staged in an upload directory, published by
a rename."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from awscrt import checksums as crt_checksums

from connectors.base import (
    Buffer,
    ChecksumKind,
    InvalidArgument,
    MultipartUpload,
    NotFound,
    ObjectAttributes,
    ObjectMeta,
    PartToken,
    TransientError,
)
from connectors.local.checksums import crc32c_b64, crc32c_int, file_crc32c, written_crc32c
from connectors.local.layout import TEMP_DIR, TEMP_MARKER, TEMP_UPLOAD_PREFIX, UPLOADS_DIR, XATTR

if TYPE_CHECKING:
    from connectors.local.store import LocalStore

PART_FILE = ".part"
PLACED_RECORD = ".placed"
STAGED_OBJECT = "object"

# A part sent with its offset (put_part_at) is written straight into its place in one
# staging file and made durable before its record is written, so completing an upload
# whose parts tile that file is an fsync and a rename. A part sent without an offset is
# a file of its own, not fsynced, re-checked against its CRC32C and joined in the kernel
# at completion; so is every part of an upload whose parts do not tile the staging file.


@dataclass(frozen=True)
class _StagedPart:
    """A part of an upload being completed: the bytes ``[offset, offset + size)`` of the
    staging file at ``path`` (offset None: a file of its own, not yet re-checked)."""

    token: PartToken
    path: Path
    offset: int | None

    @property
    def size(self) -> int:
        return self.token.size


class LocalMultipart:
    """The multipart uploads of one store."""

    def __init__(self, store: LocalStore) -> None:
        self._store = store
        # Part writes run in threads that a cancelled caller cannot stop; an abort waits for
        # them, or a write finishing after the staging folder was removed would leave an
        # orphan file behind.
        self._part_writes: dict[str, set[asyncio.Task[Any]]] = {}

    async def _run_part_write(self, key: str, upload_id: str, func: Any) -> Any:
        task = asyncio.ensure_future(self._store._run(key, func))
        writes = self._part_writes.setdefault(upload_id, set())
        writes.add(task)

        def finished(done: asyncio.Task[Any]) -> None:
            writes.discard(done)
            if not writes:
                self._part_writes.pop(upload_id, None)
            if not done.cancelled():
                done.exception()  # retrieved: a cancelled caller no longer awaits it

        task.add_done_callback(finished)
        return await asyncio.shield(task)

    def _upload_dir(self, upload_id: str, key: str) -> Path:
        if not upload_id.isalnum():
            raise NotFound(f"no multipart upload {upload_id}", url=self._store.url_for(key))
        return self._store.root / UPLOADS_DIR / upload_id

    def _manifest(self, key: str, upload_id: str) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = json.loads(
                (self._upload_dir(upload_id, key) / "manifest.json").read_text()
            )
        except FileNotFoundError:
            raise NotFound(
                f"no multipart upload {upload_id}", url=self._store.url_for(key)
            ) from None
        if manifest["key"] != key:
            raise NotFound(f"upload {upload_id} is not for this key", url=self._store.url_for(key))
        return manifest

    async def create(self, key: str, *, attributes: ObjectAttributes | None = None) -> str:
        self._store._segments(key)
        upload_id = uuid.uuid4().hex

        def work() -> None:
            self._store._open_root()  # NotFound when the root is missing
            staging = self._upload_dir(upload_id, key)
            staging.mkdir(parents=True)
            manifest = {
                "key": key,
                "attributes": asdict(attributes or ObjectAttributes()),
                "initiated": datetime.now(UTC).isoformat(),
            }
            (staging / "manifest.json").write_text(json.dumps(manifest))

        await self._store._run(key, work)
        return upload_id

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        self._store.check_part(key, part_number, len(data))

        def work() -> PartToken:
            self._manifest(key, upload_id)
            staging = self._upload_dir(upload_id, key)
            temp = staging / f"{part_number:05d}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"
            checksum = crc32c_b64(written_crc32c(data, checksums, self._store.url_for(key)))
            with open(temp, "wb") as handle:
                handle.write(data)
                os.setxattr(handle.fileno(), XATTR, checksum.encode())
            os.replace(temp, staging / f"{part_number:05d}{PART_FILE}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging / f"{part_number:05d}{PLACED_RECORD}")
            return PartToken(part_number, checksum, len(data), {ChecksumKind.CRC32C: checksum})

        token: PartToken = await self._run_part_write(key, upload_id, work)
        return token

    async def put_part_at(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        offset: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        self._store.check_part(key, part_number, len(data))
        if offset < 0:
            raise InvalidArgument(f"part offset {offset} is negative", url=self._store.url_for(key))

        def work() -> PartToken:
            self._manifest(key, upload_id)
            staging = self._upload_dir(upload_id, key)
            checksum = crc32c_b64(written_crc32c(data, checksums, self._store.url_for(key)))
            fd = os.open(
                staging / STAGED_OBJECT,
                os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
            )
            try:
                view, at = memoryview(data).cast("B"), offset
                while view:
                    written = os.pwrite(fd, view, at)
                    view, at = view[written:], at + written
                # Durable before it is recorded: a recorded part needs no re-reading at
                # completion, even after a power loss.
                os.fdatasync(fd)
            finally:
                os.close(fd)
            record = {"crc32c": checksum, "size": len(data), "offset": offset}
            temp = staging / f"{part_number:05d}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"
            temp.write_text(json.dumps(record))
            os.replace(temp, staging / f"{part_number:05d}{PLACED_RECORD}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging / f"{part_number:05d}{PART_FILE}")
            return PartToken(part_number, checksum, len(data), {ChecksumKind.CRC32C: checksum})

        token: PartToken = await self._run_part_write(key, upload_id, work)
        return token

    def _staged(self, key: str, staging: Path, part: PartToken) -> _StagedPart:
        """Where a completed upload's part is, checked against its token."""
        name = f"{part.part_number:05d}"
        placed = staging / f"{name}{PLACED_RECORD}"
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            record = json.loads(placed.read_text())
            if record["crc32c"] == part.token and record["size"] == part.size:
                return _StagedPart(part, staging / STAGED_OBJECT, int(record["offset"]))
        path = staging / f"{name}{PART_FILE}"
        try:
            stored = os.getxattr(path, XATTR).decode()
        except FileNotFoundError:
            if placed.exists():
                stored = ""
            else:
                raise InvalidArgument(
                    f"part {part.part_number} was never uploaded", url=self._store.url_for(key)
                ) from None
        if stored != part.token:
            raise InvalidArgument(
                f"part {part.part_number} does not match its token", url=self._store.url_for(key)
            )
        return _StagedPart(part, path, None)

    async def complete(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartToken],
        *,
        extra_metadata: Mapping[str, str] | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> ObjectMeta:
        ordered = sorted(parts, key=lambda p: p.part_number)
        staging = self._upload_dir(upload_id, key)

        def work() -> ObjectMeta:
            manifest = self._manifest(key, upload_id)
            attributes = ObjectAttributes(**manifest["attributes"])
            if extra_metadata:
                attributes = replace(
                    attributes, user_metadata={**attributes.user_metadata, **extra_metadata}
                )
            staged = [self._staged(key, staging, part) for part in ordered]
            crc, size = 0, 0
            for part in staged:
                crc = crt_checksums.combine_crc32c(crc, crc32c_int(part.token.token), part.size)
                size += part.size
            tiled = bool(staged) and all(
                part.offset == start
                for part, start in zip(
                    staged, itertools.accumulate((p.size for p in staged), initial=0), strict=False
                )
            )
            if tiled:
                published = self._publish_staged(
                    key, staging, size, crc, attributes, create_only, if_match
                )
                if published is not None:
                    return published
            return self._store._writes.write_file(
                key, self._joiner(key, staged), attributes, create_only, if_match
            )

        meta: ObjectMeta = await self._store._run(key, work)
        await asyncio.to_thread(shutil.rmtree, staging, True)
        return meta

    def _publish_staged(
        self,
        key: str,
        staging: Path,
        size: int,
        crc: int,
        attributes: ObjectAttributes,
        create_only: bool,
        if_match: str | None,
    ) -> ObjectMeta | None:
        """Move the staging file, which holds exactly the object, into place; None when the
        key's directory is on another file system than the staging area."""
        segments = self._store._segments(key)
        dir_fd = self._store._open_dir(segments, key, create=True)
        try:
            staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                fd = os.open(STAGED_OBJECT, os.O_RDWR | os.O_NOFOLLOW, dir_fd=staging_fd)
                try:
                    # A part sent again shorter than before may have left bytes past the end.
                    os.ftruncate(fd, size)
                    self._store._writes.seal(key, fd, crc, attributes)
                finally:
                    os.close(fd)
                try:
                    return self._store._writes.publish(
                        key,
                        dir_fd,
                        staging_fd,
                        STAGED_OBJECT,
                        segments[-1],
                        create_only,
                        if_match,
                    )
                except OSError as exc:
                    if exc.errno == errno.EXDEV:
                        return None
                    raise
            finally:
                os.close(staging_fd)
        finally:
            os.close(dir_fd)

    def _joiner(self, key: str, staged: Sequence[_StagedPart]) -> Callable[[int], int]:
        def write(fd: int) -> int:
            """Join the parts in the kernel, first checking each part that was not made
            durable when stored against the CRC32C recorded then (reading it back, from the
            page cache in the common case)."""
            crc = 0
            for part in staged:
                part_fd = os.open(part.path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    start = part.offset or 0
                    if part.offset is None and (
                        os.fstat(part_fd).st_size != part.size
                        or crc32c_b64(file_crc32c(part_fd, part.size)) != part.token.token
                    ):
                        raise InvalidArgument(
                            f"part {part.token.part_number} does not match its token",
                            url=self._store.url_for(key),
                        )
                    copied = 0
                    while copied < part.size:
                        done = os.copy_file_range(part_fd, fd, part.size - copied, start + copied)
                        if done == 0:
                            raise TransientError(
                                f"part {part.token.part_number} shrank while being joined",
                                url=self._store.url_for(key),
                            )
                        copied += done
                finally:
                    os.close(part_fd)
                crc = crt_checksums.combine_crc32c(crc, crc32c_int(part.token.token), part.size)
            return crc

        return write

    async def abort(self, key: str, upload_id: str) -> None:
        if not upload_id.isalnum():
            return
        if upload_id.startswith(TEMP_UPLOAD_PREFIX):
            temp = (
                self._store.root
                / UPLOADS_DIR
                / TEMP_DIR
                / f"{upload_id.removeprefix(TEMP_UPLOAD_PREFIX)}{TEMP_MARKER}"
            )
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(temp.unlink)
            return
        in_flight = self._part_writes.get(upload_id, set())
        await asyncio.gather(*in_flight, return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, self._store.root / UPLOADS_DIR / upload_id, True)

    async def list_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        def scan() -> list[MultipartUpload]:
            found = []
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self._store.root / UPLOADS_DIR):
                    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                        manifest = json.loads((Path(entry.path) / "manifest.json").read_text())
                        if manifest["key"].startswith(prefix):
                            found.append(
                                MultipartUpload(
                                    manifest["key"],
                                    entry.name,
                                    datetime.fromisoformat(manifest["initiated"]),
                                )
                            )
            # Single writes staged and never renamed into place: their process died (a live
            # one's file is recent, and the janitor leaves recent uploads alone). Their key
            # is not recorded: they show under the store's root.
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self._store.root / UPLOADS_DIR / TEMP_DIR):
                    if not prefix and entry.name.endswith(TEMP_MARKER):
                        with contextlib.suppress(FileNotFoundError):
                            found.append(
                                MultipartUpload(
                                    "",
                                    TEMP_UPLOAD_PREFIX + entry.name.removesuffix(TEMP_MARKER),
                                    datetime.fromtimestamp(
                                        entry.stat(follow_symlinks=False).st_mtime, UTC
                                    ),
                                )
                            )
            return sorted(found, key=lambda u: (u.key, u.upload_id))

        for upload in await asyncio.to_thread(scan):
            yield upload
