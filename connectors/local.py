"""A directory tree as an object store: on-prem disks, NFS and other mounted file systems.

Keys map to paths below the root directory. A key is refused (InvalidKey) when it cannot be a
path: empty, ``.`` or ``..`` segments, empty segments (``a//b``), a trailing ``/``, NUL, a
segment over 255 bytes. Every path is resolved one directory at a time relative to an open
directory descriptor with O_NOFOLLOW, so neither ``..`` nor a symbolic link planted inside the
root can lead a read or a write outside it: a link met on the way is refused.

Writes go to a temporary file in the target directory, are fsynced and then renamed into
place, so readers never see a partial object. Attributes, user metadata and the CRC32C of the
content are kept in the file's ``user.replicator`` extended attribute. The etag is derived from
(mtime_ns, size, inode), which changes on every replacement since each write is a new file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import itertools
import json
import os
import shutil
import stat
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

from awscrt import checksums as crt_checksums

from connectors.base import (
    STAGING_PREFIX,
    AlreadyExists,
    Buffer,
    ChecksumKind,
    ContainerNotFound,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    Limits,
    MultipartUpload,
    NotFound,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PartToken,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    StoreURL,
    TiB,
    TransientError,
    check_key,
    clip_range,
)
from connectors.kernel_copy import SourceShrank, copy_and_read_back

XATTR = "user.replicator"
TEMP_MARKER = ".replicator-tmp-"
UPLOADS_DIR = STAGING_PREFIX.rstrip("/")
# Where single writes are staged before their rename into place, so that the temporary file of
# a write killed half-way is found by ``list_multipart_uploads`` (and the upload janitor) with
# no walk of the whole tree. Not alphanumeric: never taken for an upload's directory.
TEMP_DIR = "single-writes"
# An upload id naming a staged single write: letters that no hex upload id holds.
TEMP_UPLOAD_PREFIX = "tmp"
NAME_MAX = 255
COPY_CHUNK = 8 * 1024 * 1024
PART_FILE = ".part"
PLACED_RECORD = ".placed"
STAGED_OBJECT = "object"


def _crc32c_b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def _file_crc32c(fd: int, size: int) -> int:
    crc, offset = 0, 0
    while offset < size:
        chunk = os.pread(fd, min(COPY_CHUNK, size - offset), offset)
        if not chunk:
            break
        crc = crt_checksums.crc32c(chunk, crc)
        offset += len(chunk)
    return crc


def _crc32c_int(encoded: str) -> int:
    return int.from_bytes(base64.b64decode(encoded), "big")


def _written_crc32c(data: Buffer, checksums: Mapping[ChecksumKind, str] | None, url: str) -> int:
    """The CRC32C of the bytes about to be written, refusing them when the caller's CRC32C
    (computed from the bytes it read) differs: the check a cloud store makes on its side."""
    actual = int(crt_checksums.crc32c(data))
    given = (checksums or {}).get(ChecksumKind.CRC32C)
    if given is not None and _crc32c_int(given) != actual:
        raise IntegrityError(
            f"bytes to write have CRC32C {_crc32c_b64(actual)}, the write says {given}", url=url
        )
    return actual


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


class LocalStore(ObjectStore):
    scheme: ClassVar[str] = "file"
    limits = Limits(
        min_part_size=1,
        max_part_size=5 * TiB,
        max_parts=10_000,
        max_object_size=64 * TiB,
        max_single_put=5 * TiB,
        max_key_bytes=4096,
        native_checksums=frozenset({ChecksumKind.CRC32C}),
        multipart=True,
        server_side_copy=True,
        versioned_reads=False,
        metadata_at_complete=True,
        server_side_copy_via=(
            "a kernel copy (copy_file_range, a reflink where the file system shares extents), "
            "read back once to verify"
        ),
        server_side_copy_scope="the file stores of this machine",
    )

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        super().__init__(f"file://{root.rstrip('/')}/")
        # Part writes run in threads that a cancelled caller cannot stop; an abort waits for
        # them, or a write finishing after the staging folder was removed would leave an
        # orphan file behind.
        self._part_writes: dict[str, set[asyncio.Task[Any]]] = {}

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url.path)

    # -- path safety --------------------------------------------------------------------

    def _segments(self, key: str) -> list[str]:
        url = self.url_for(key)
        check_key(key, self.limits, url)
        rule = "file store keys must be relative paths"
        if "\0" in key:
            raise InvalidKey(f"{rule}: NUL is not allowed in a file name", url=url)
        if key.startswith("/") or key.endswith("/"):
            raise InvalidKey(
                f"{rule}: no leading or trailing '/' (that names a directory)", url=url
            )
        segments = key.split("/")
        for segment in segments:
            if segment in ("", ".", ".."):
                raise InvalidKey(f"{rule}: empty, '.' and '..' segments are not allowed", url=url)
            if len(segment.encode()) > NAME_MAX:
                raise InvalidKey(
                    f"{rule}: each '/'-separated segment is a file name of at most "
                    f"{NAME_MAX} bytes",
                    url=url,
                )
        if segments[0] == UPLOADS_DIR or any(TEMP_MARKER in s for s in segments):
            raise InvalidKey(f"{rule}: {UPLOADS_DIR!r} and {TEMP_MARKER!r} are reserved", url=url)
        return segments

    def _open_root(self) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise ContainerNotFound(
                f"directory {self.root} does not exist", url=self.root_url
            ) from None
        except NotADirectoryError:
            raise ContainerNotFound(f"{self.root} is not a directory", url=self.root_url) from None

    def _open_dir(self, segments: Sequence[str], key: str, *, create: bool) -> int:
        """Open the directory holding the last segment, walking without following links."""
        fd = self._open_root()
        try:
            for segment in segments[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(segment, dir_fd=fd)
                try:
                    next_fd = os.open(
                        segment, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd
                    )
                except FileNotFoundError:
                    raise NotFound("object not found", url=self.url_for(key)) from None
                except (NotADirectoryError, OSError) as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise InvalidKey(
                            f"path segment {segment!r} is a file or a symbolic link; file stores "
                            "never follow links and a key cannot run through a file",
                            url=self.url_for(key),
                        ) from None
                    raise
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _etag(self, st: os.stat_result) -> str:
        return f'"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"'

    def _meta(self, key: str, fd: int, st: os.stat_result) -> ObjectMeta:
        stored: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(os.getxattr(fd, XATTR))
        attributes = ObjectAttributes(**stored.get("attributes", {}))
        checksums = {ChecksumKind.CRC32C: stored["crc32c"]} if "crc32c" in stored else {}
        return ObjectMeta(
            url=self.url_for(key),
            key=key,
            size=st.st_size,
            etag=self._etag(st),
            version=None,
            last_modified=datetime.fromtimestamp(st.st_mtime, UTC),
            attributes=attributes,
            checksums=checksums,
        )

    @contextlib.contextmanager
    def _open_object(self, key: str) -> Iterator[tuple[int, os.stat_result]]:
        segments = self._segments(key)
        dir_fd = self._open_dir(segments, key, create=False)
        try:
            fd = os.open(segments[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            raise NotFound("object not found", url=self.url_for(key)) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InvalidKey(
                    "the key names a symbolic link; file stores never follow links",
                    url=self.url_for(key),
                ) from None
            raise
        finally:
            os.close(dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFound("the key names a directory, not an object", url=self.url_for(key))
            yield fd, st
        finally:
            os.close(fd)

    # -- errors -------------------------------------------------------------------------

    async def _run(self, key: str, func: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(func, *args)
        except StoreError:
            raise
        except PermissionError as exc:
            raise PermissionDenied(
                f"permission denied: {exc.strerror}", url=self.url_for(key)
            ) from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise InvalidKey(
                    "path too long for this file system", url=self.url_for(key)
                ) from None
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise TransientError(
                    f"file system full: {exc.strerror}", url=self.url_for(key)
                ) from None
            raise TransientError(f"I/O error: {exc.strerror}", url=self.url_for(key)) from None

    async def _run_part_write(self, key: str, upload_id: str, func: Any) -> Any:
        task = asyncio.ensure_future(self._run(key, func))
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

    # -- required operations ------------------------------------------------------------

    async def create_container(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        self._refuse_version(key, version)

        def work() -> ObjectMeta:
            with self._open_object(key) as (fd, st):
                return self._meta(key, fd, st)

        meta: ObjectMeta = await self._run(key, work)
        return meta

    def _refuse_version(self, key: str, version: str | None) -> None:
        if version is not None:
            raise NotSupported(
                "file stores keep no versions; pin reads with if_match", url=self.url_for(key)
            )

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> bytes:
        self._refuse_version(key, version)

        def work() -> bytes:
            with self._open_object(key) as (fd, st):
                if if_match is not None and self._etag(st) != if_match:
                    raise PreconditionFailed(f"etag is no longer {if_match}", url=self.url_for(key))
                lo, hi = clip_range(st.st_size, start, end, self.url_for(key))
                return os.pread(fd, hi - lo, lo) if hi > lo else b""

        data: bytes = await self._run(key, work)
        return data

    async def put(
        self,
        key: str,
        data: Buffer,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> ObjectMeta:
        def write(fd: int) -> int:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view) :]
            return _written_crc32c(data, checksums, self.url_for(key))

        meta: ObjectMeta = await self._run(
            key, self._write_file, key, write, attributes, create_only, if_match
        )
        return meta

    def _write_file(
        self,
        key: str,
        write: Callable[[int], int],
        attributes: ObjectAttributes | None,
        create_only: bool,
        if_match: str | None,
        extra_metadata: Callable[[], Mapping[str, str]] | None = None,
    ) -> ObjectMeta:
        """Write through a temporary file (``write`` gets it open for reading and writing and
        returns the CRC32C of what it wrote), then move it into place atomically."""
        segments = self._segments(key)
        dir_fd = self._open_dir(segments, key, create=True)
        try:
            temp_dir_fd = self._temp_dir_for(dir_fd)
        except BaseException:
            os.close(dir_fd)
            raise
        temp = f"{uuid.uuid4().hex[:24]}{TEMP_MARKER}"
        try:
            fd = os.open(
                temp,
                os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                0o644,
                dir_fd=temp_dir_fd,
            )
            try:
                crc = write(fd)
                if extra_metadata is not None:
                    attributes = attributes or ObjectAttributes()
                    attributes = replace(
                        attributes,
                        user_metadata={**attributes.user_metadata, **extra_metadata()},
                    )
                self._seal(key, fd, crc, attributes)
            finally:
                os.close(fd)
            return self._publish(
                key, dir_fd, temp_dir_fd, temp, segments[-1], create_only, if_match
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=temp_dir_fd)
            if temp_dir_fd != dir_fd:
                os.close(temp_dir_fd)
            os.close(dir_fd)

    def _temp_dir_for(self, dir_fd: int) -> int:
        """The directory a single write is staged in: the store's staging area, or the key's
        own directory when that is on another file system (a rename cannot cross one)."""
        fd = self._open_root()
        try:
            for segment in (UPLOADS_DIR, TEMP_DIR):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(segment, dir_fd=fd)
                next_fd = os.open(segment, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        if os.fstat(fd).st_dev != os.fstat(dir_fd).st_dev:
            os.close(fd)
            return dir_fd
        return fd

    def _seal(self, key: str, fd: int, crc: int, attributes: ObjectAttributes | None) -> None:
        """Record the attributes and CRC32C of a finished file and make it durable."""
        record = {
            "attributes": asdict(attributes or ObjectAttributes()),
            "crc32c": _crc32c_b64(crc),
        }
        try:
            os.setxattr(fd, XATTR, json.dumps(record).encode())
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if attributes is not None and attributes != ObjectAttributes():
                raise NotSupported(
                    f"{self.root} does not support user extended attributes, so "
                    "object attributes cannot be kept",
                    url=self.url_for(key),
                ) from None
        os.fsync(fd)

    def _publish(
        self,
        key: str,
        dir_fd: int,
        temp_dir_fd: int,
        temp: str,
        name: str,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> ObjectMeta:
        """Move a sealed file to its key's name and make the move durable."""
        self._commit_temp(key, dir_fd, temp_dir_fd, temp, name, create_only, if_match)
        os.fsync(dir_fd)
        with self._open_object(key) as (fd, st):
            return self._meta(key, fd, st)

    def _commit_temp(
        self,
        key: str,
        dir_fd: int,
        temp_dir_fd: int,
        temp: str,
        name: str,
        create_only: bool,
        if_match: str | None,
    ) -> None:
        url = self.url_for(key)
        try:
            existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise InvalidKey("a file store key cannot also be a directory of other keys", url=url)
        if if_match is not None and (existing is None or self._etag(existing) != if_match):
            # A check-then-rename: a writer racing between the two can win. POSIX has no
            # compare-and-swap rename; create_only (link) is the atomic condition here.
            raise PreconditionFailed(f"etag is not {if_match}", url=url)
        if create_only:
            try:
                os.link(
                    temp, name, src_dir_fd=temp_dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False
                )
            except FileExistsError:
                raise AlreadyExists("object already exists", url=url) from None
        else:
            os.rename(temp, name, src_dir_fd=temp_dir_fd, dst_dir_fd=dir_fd)

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[ObjectMeta]:
        if not await asyncio.to_thread(self.root.is_dir):
            raise ContainerNotFound(f"directory {self.root} does not exist", url=self.root_url)
        walker = self._walk("", prefix, start_after)
        while True:
            page = await asyncio.to_thread(_take, walker, page_size)
            for meta in page:
                yield meta
            if len(page) < page_size:
                return

    def _walk(self, directory: str, prefix: str, start_after: str | None) -> Iterator[ObjectMeta]:
        """Objects below ``directory`` (a key prefix ending in '/' or empty) in key order."""
        path = self.root / directory if directory else self.root
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return
        ordered = sorted(
            (entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""), entry)
            for entry in entries
        )
        for name, entry in ordered:
            key = directory + name
            if TEMP_MARKER in name or (not directory and name == UPLOADS_DIR + "/"):
                continue
            if name.endswith("/"):
                if not (key.startswith(prefix) or prefix.startswith(key)):
                    continue
                if (
                    start_after is not None
                    and key < start_after
                    and not start_after.startswith(key)
                ):
                    continue
                yield from self._walk(key, prefix, start_after)
            elif entry.is_file(follow_symlinks=False):
                if not key.startswith(prefix) or (start_after is not None and key <= start_after):
                    continue
                with contextlib.suppress(FileNotFoundError), self._open_object(key) as (fd, st):
                    yield self._meta(key, fd, st)

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        def work() -> None:
            segments = self._segments(key)
            try:
                dir_fd = self._open_dir(segments, key, create=False)
            except NotFound:
                if if_match is not None:
                    raise
                return
            try:
                if if_match is not None:
                    try:
                        st = os.stat(segments[-1], dir_fd=dir_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        raise NotFound("object not found", url=self.url_for(key)) from None
                    if self._etag(st) != if_match:
                        raise PreconditionFailed(f"etag is not {if_match}", url=self.url_for(key))
                try:
                    os.unlink(segments[-1], dir_fd=dir_fd)
                except FileNotFoundError:
                    return
                except IsADirectoryError:
                    raise NotFound(
                        "the key names a directory, not an object", url=self.url_for(key)
                    ) from None
            finally:
                os.close(dir_fd)
            self._prune_empty_dirs(segments[:-1])

        await self._run(key, work)

    def _prune_empty_dirs(self, segments: Sequence[str]) -> None:
        """Remove directories a delete left empty, as object stores have no empty folders."""
        for depth in range(len(segments), 0, -1):
            try:
                os.rmdir(self.root.joinpath(*segments[:depth]))
            except OSError:
                return

    # -- multipart: parts staged in an upload directory, published by a rename ------------
    #
    # A part sent with its offset (put_part_at) is written straight into its place in one
    # staging file and made durable before its record is written, so completing an upload
    # whose parts tile that file is an fsync and a rename. A part sent without an offset is
    # a file of its own, not fsynced, re-checked against its CRC32C and joined in the kernel
    # at completion; so is every part of an upload whose parts do not tile the staging file.

    def _upload_dir(self, upload_id: str, key: str) -> Path:
        if not upload_id.isalnum():
            raise NotFound(f"no multipart upload {upload_id}", url=self.url_for(key))
        return self.root / UPLOADS_DIR / upload_id

    def _manifest(self, key: str, upload_id: str) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = json.loads(
                (self._upload_dir(upload_id, key) / "manifest.json").read_text()
            )
        except FileNotFoundError:
            raise NotFound(f"no multipart upload {upload_id}", url=self.url_for(key)) from None
        if manifest["key"] != key:
            raise NotFound(f"upload {upload_id} is not for this key", url=self.url_for(key))
        return manifest

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        self._segments(key)
        upload_id = uuid.uuid4().hex

        def work() -> None:
            self._open_root()  # NotFound when the root is missing
            staging = self._upload_dir(upload_id, key)
            staging.mkdir(parents=True)
            manifest = {
                "key": key,
                "attributes": asdict(attributes or ObjectAttributes()),
                "initiated": datetime.now(UTC).isoformat(),
            }
            (staging / "manifest.json").write_text(json.dumps(manifest))

        await self._run(key, work)
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
        self.check_part(key, part_number, len(data))

        def work() -> PartToken:
            self._manifest(key, upload_id)
            staging = self._upload_dir(upload_id, key)
            temp = staging / f"{part_number:05d}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"
            checksum = _crc32c_b64(_written_crc32c(data, checksums, self.url_for(key)))
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
        self.check_part(key, part_number, len(data))
        if offset < 0:
            raise InvalidArgument(f"part offset {offset} is negative", url=self.url_for(key))

        def work() -> PartToken:
            self._manifest(key, upload_id)
            staging = self._upload_dir(upload_id, key)
            checksum = _crc32c_b64(_written_crc32c(data, checksums, self.url_for(key)))
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
                    f"part {part.part_number} was never uploaded", url=self.url_for(key)
                ) from None
        if stored != part.token:
            raise InvalidArgument(
                f"part {part.part_number} does not match its token", url=self.url_for(key)
            )
        return _StagedPart(part, path, None)

    async def complete_multipart(
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
                crc = crt_checksums.combine_crc32c(crc, _crc32c_int(part.token.token), part.size)
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
            return self._write_file(
                key, self._joiner(key, staged), attributes, create_only, if_match
            )

        meta: ObjectMeta = await self._run(key, work)
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
        segments = self._segments(key)
        dir_fd = self._open_dir(segments, key, create=True)
        try:
            staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                fd = os.open(STAGED_OBJECT, os.O_RDWR | os.O_NOFOLLOW, dir_fd=staging_fd)
                try:
                    # A part sent again shorter than before may have left bytes past the end.
                    os.ftruncate(fd, size)
                    self._seal(key, fd, crc, attributes)
                finally:
                    os.close(fd)
                try:
                    return self._publish(
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
                        or _crc32c_b64(_file_crc32c(part_fd, part.size)) != part.token.token
                    ):
                        raise InvalidArgument(
                            f"part {part.token.part_number} does not match its token",
                            url=self.url_for(key),
                        )
                    copied = 0
                    while copied < part.size:
                        done = os.copy_file_range(part_fd, fd, part.size - copied, start + copied)
                        if done == 0:
                            raise TransientError(
                                f"part {part.token.part_number} shrank while being joined",
                                url=self.url_for(key),
                            )
                        copied += done
                finally:
                    os.close(part_fd)
                crc = crt_checksums.combine_crc32c(crc, _crc32c_int(part.token.token), part.size)
            return crc

        return write

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        if not upload_id.isalnum():
            return
        if upload_id.startswith(TEMP_UPLOAD_PREFIX):
            temp = (
                self.root
                / UPLOADS_DIR
                / TEMP_DIR
                / f"{upload_id.removeprefix(TEMP_UPLOAD_PREFIX)}{TEMP_MARKER}"
            )
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(temp.unlink)
            return
        in_flight = self._part_writes.get(upload_id, set())
        await asyncio.gather(*in_flight, return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, self.root / UPLOADS_DIR / upload_id, True)

    async def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        def scan() -> list[MultipartUpload]:
            found = []
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.root / UPLOADS_DIR):
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
                for entry in os.scandir(self.root / UPLOADS_DIR / TEMP_DIR):
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

    async def copy_within(
        self,
        source_key: str,
        dest_key: str,
        *,
        if_match: str | None = None,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        dest_if_match: str | None = None,
    ) -> ObjectMeta:
        return await self.copy_from(
            self,
            source_key,
            dest_key,
            if_match=if_match,
            attributes=attributes,
            create_only=create_only,
            dest_if_match=dest_if_match,
        )

    def copies_from(self, source: ObjectStore) -> bool:
        """Any file store: the kernel copies between any two files this process can open
        (copy_file_range, a reflink where the file system shares extents)."""
        return isinstance(source, LocalStore)

    async def copy_from(
        self,
        source: ObjectStore,
        source_key: str,
        dest_key: str,
        *,
        if_match: str | None = None,
        attributes: ObjectAttributes | None = None,
        inspect: Callable[[memoryview, int], None] | None = None,
        extra_metadata: Callable[[], Mapping[str, str]] | None = None,
        create_only: bool = False,
        dest_if_match: str | None = None,
    ) -> ObjectMeta:
        """Copy in the kernel, read the copy back once (its CRC32C, ``inspect``), compare that
        CRC32C with the one the source file records (files this store wrote have one), make
        it durable and publish it under the destination's conditions, as a put does. A
        source that changes meanwhile fails the copy with PreconditionFailed, before anything
        is published."""
        if not isinstance(source, LocalStore):
            raise NotSupported(
                f"file:// copies from file stores only, not {source.root_url}",
                url=self.url_for(dest_key),
            )

        def work() -> ObjectMeta:
            with source._open_object(source_key) as (src_fd, st):
                source_url = source.url_for(source_key)
                if if_match is not None and self._etag(st) != if_match:
                    raise PreconditionFailed(f"etag is no longer {if_match}", url=source_url)
                before = source._meta(source_key, src_fd, st)
                keep = attributes or before.attributes

                def write(fd: int) -> int:
                    try:
                        crc = copy_and_read_back(src_fd, fd, st.st_size, inspect)
                    except SourceShrank as exc:
                        raise PreconditionFailed(f"{exc}: it changed", url=source_url) from None
                    if self._etag(os.fstat(src_fd)) != self._etag(st):
                        raise PreconditionFailed("changed while being copied", url=source_url)
                    recorded = before.checksums.get(ChecksumKind.CRC32C)
                    if recorded is not None and recorded != _crc32c_b64(crc):
                        raise IntegrityError(
                            f"the copy reads back with CRC32C {_crc32c_b64(crc)}, the source "
                            f"records {recorded}",
                            url=self.url_for(dest_key),
                        )
                    return crc

                return self._write_file(
                    dest_key, write, keep, create_only, dest_if_match, extra_metadata
                )

        meta: ObjectMeta = await self._run(dest_key, work)
        return meta


def _take(iterator: Iterator[ObjectMeta], count: int) -> list[ObjectMeta]:
    page = []
    for item in iterator:
        page.append(item)
        if len(page) == count:
            break
    return page
