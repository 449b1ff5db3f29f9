"""Copying a file's bytes in the kernel, then reading the copy back once (for the file store).

``copy_file_range`` moves the bytes without passing them through the process (a reflink, with
no bytes moved at all, where the file system shares extents: XFS, Btrfs, and NFS 4.2 / SMB
server-side copy). Each chunk of the copy is then read back from the new file, from the page
cache in the common case, to compute its CRC32C and hand it to the caller's ``inspect`` (the
engine builds the fingerprint from it); that CRC32C is what the caller compares with the
source's, so the copy is checked by one read of the replica rather than a read of the source
and a write of the replica through the process.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from awscrt import checksums as crt_checksums

#: Bytes copied then read back at a time: a multiple of every fingerprint block size in use.
CHUNK = 8 * 1024 * 1024

Inspect = Callable[[memoryview, int], None]


class SourceShrank(Exception):
    """The source ended before the size it had when the copy started."""


def copy_and_read_back(src_fd: int, dst_fd: int, size: int, inspect: Inspect | None) -> int:
    """Copy ``size`` bytes from ``src_fd`` to ``dst_fd`` (opened read-write), both from
    offset 0; return the CRC32C of the copy as read back. ``inspect(chunk, offset)`` sees
    every chunk of the copy, in order, at offsets that are multiples of ``CHUNK``."""
    crc, offset = 0, 0
    buffer = bytearray(min(CHUNK, size))
    with memoryview(buffer) as view:
        while offset < size:
            length = min(CHUNK, size - offset)
            _copy_range(src_fd, dst_fd, offset, length)
            got = os.preadv(dst_fd, [view[:length]], offset)
            if got != length:
                raise OSError(errno.EIO, f"read back {got} of {length} bytes just copied")
            chunk = view[:length]
            crc = crt_checksums.crc32c(chunk, crc)
            if inspect is not None:
                inspect(chunk, offset)
            offset += length
    return int(crc)


def _copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    done = 0
    while done < length:
        try:
            moved = os.copy_file_range(src_fd, dst_fd, length - done, offset + done, offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            moved = _copy_through_process(src_fd, dst_fd, offset + done, length - done)
        if moved == 0:
            raise SourceShrank(f"the source ended at {offset + done} bytes")
        done += moved


def _copy_through_process(src_fd: int, dst_fd: int, offset: int, length: int) -> int:
    """For file systems without copy_file_range between these files: one pread, one pwrite."""
    data = os.pread(src_fd, min(length, CHUNK), offset)
    view, at = memoryview(data), offset
    while view:
        written = os.pwrite(dst_fd, view, at)
        view, at = view[written:], at + written
    return len(data)
