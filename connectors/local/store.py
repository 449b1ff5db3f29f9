"""LocalStore: keys resolved safely below the root, object reads, listings and deletes;
writes (``connectors.local.writes``), multipart uploads (``connectors.local.multipart``) and
server-side copies (``connectors.local.copy``) are delegated."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

from connectors.base import (
    Buffer,
    ChecksumKind,
    ContainerNotFound,
    InvalidKey,
    Limits,
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
from connectors.delegated import DelegatedMultipart
from connectors.local.checksums import written_crc32c
from connectors.local.copy import LocalServerSideCopy
from connectors.local.layout import NAME_MAX, TEMP_MARKER, UPLOADS_DIR, XATTR
from connectors.local.multipart import LocalMultipart
from connectors.local.writes import LocalWrites


class LocalStore(DelegatedMultipart):
    scheme: ClassVar[str] = "file"
    _multipart: LocalMultipart
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
        self._writes = LocalWrites(self)
        self._multipart = LocalMultipart(self)
        self._server_side_copy = LocalServerSideCopy(self)

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

    @contextlib.contextmanager
    def _open_range(
        self, key: str, start: int, end: int | None, if_match: str | None
    ) -> Iterator[tuple[int, int, int]]:
        """The object open, pinned to ``if_match``, and ``[start, end)`` clipped to it."""
        with self._open_object(key) as (fd, st):
            if if_match is not None and self._etag(st) != if_match:
                raise PreconditionFailed(f"etag is no longer {if_match}", url=self.url_for(key))
            lo, hi = clip_range(st.st_size, start, end, self.url_for(key))
            yield fd, lo, hi

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
            with self._open_range(key, start, end, if_match) as (fd, lo, hi):
                return os.pread(fd, hi - lo, lo) if hi > lo else b""

        data: bytes = await self._run(key, work)
        return data

    async def read_into(
        self,
        key: str,
        start: int,
        buffer: bytearray,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> int:
        """Straight into ``buffer`` (a multipart copy's reused part buffers): no fresh
        allocation per part in the worker thread, whose own malloc arena would keep it."""
        self._refuse_version(key, version)

        def work() -> int:
            with self._open_range(key, start, start + len(buffer), if_match) as (fd, lo, hi):
                done = 0
                view = memoryview(buffer)
                while lo + done < hi:
                    got = os.preadv(fd, [view[done : hi - lo]], lo + done)
                    if got == 0:
                        break
                    done += got
                return done

        read: int = await self._run(key, work)
        return read

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
            return written_crc32c(data, checksums, self.url_for(key))

        meta: ObjectMeta = await self._run(
            key, self._writes.write_file, key, write, attributes, create_only, if_match
        )
        return meta

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

    # -- multipart ----------------------------------------------------------------------

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
        return await self._multipart.put_part_at(
            key, upload_id, part_number, offset, data, checksums=checksums
        )

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
        return await self._server_side_copy.copy(
            source,
            source_key,
            dest_key,
            if_match=if_match,
            attributes=attributes,
            inspect=inspect,
            extra_metadata=extra_metadata,
            create_only=create_only,
            dest_if_match=dest_if_match,
        )


def _take(iterator: Iterator[ObjectMeta], count: int) -> list[ObjectMeta]:
    page = []
    for item in iterator:
        page.append(item)
        if len(page) == count:
            break
    return page
