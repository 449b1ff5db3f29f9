"""Writes of a LocalStore: through a temporary file, sealed (attributes and CRC32C in
its extended attribute, fsynced) and then moved into place, so readers never see a partial
object."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

from connectors.base import (
    AlreadyExists,
    InvalidKey,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    PreconditionFailed,
)
from connectors.local.checksums import crc32c_b64
from connectors.local.layout import TEMP_DIR, TEMP_MARKER, UPLOADS_DIR, XATTR

if TYPE_CHECKING:
    from connectors.local.store import LocalStore


class LocalWrites:
    """The writes of one store."""

    def __init__(self, store: LocalStore) -> None:
        self._store = store

    def write_file(
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
        segments = self._store._segments(key)
        dir_fd = self._store._open_dir(segments, key, create=True)
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
                self.seal(key, fd, crc, attributes)
            finally:
                os.close(fd)
            return self.publish(key, dir_fd, temp_dir_fd, temp, segments[-1], create_only, if_match)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=temp_dir_fd)
            if temp_dir_fd != dir_fd:
                os.close(temp_dir_fd)
            os.close(dir_fd)

    def _temp_dir_for(self, dir_fd: int) -> int:
        """The directory a single write is staged in: the store's staging area, or the key's
        own directory when that is on another file system (a rename cannot cross one)."""
        fd = self._store._open_root()
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

    def seal(self, key: str, fd: int, crc: int, attributes: ObjectAttributes | None) -> None:
        """Record the attributes and CRC32C of a finished file and make it durable."""
        record = {
            "attributes": asdict(attributes or ObjectAttributes()),
            "crc32c": crc32c_b64(crc),
        }
        try:
            os.setxattr(fd, XATTR, json.dumps(record).encode())
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            if attributes is not None and attributes != ObjectAttributes():
                raise NotSupported(
                    f"{self._store.root} does not support user extended attributes, so "
                    "object attributes cannot be kept",
                    url=self._store.url_for(key),
                ) from None
        os.fsync(fd)

    def publish(
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
        with self._store._open_object(key) as (fd, st):
            return self._store._meta(key, fd, st)

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
        url = self._store.url_for(key)
        try:
            existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise InvalidKey("a file store key cannot also be a directory of other keys", url=url)
        if if_match is not None and (existing is None or self._store._etag(existing) != if_match):
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
