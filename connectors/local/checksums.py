"""CRC32C of a file store's bytes: in wire form, of a file read back, and of the bytes
of a write checked against the caller's."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

from awscrt import checksums as crt_checksums

from connectors.base import Buffer, ChecksumKind, IntegrityError

COPY_CHUNK = 8 * 1024 * 1024


def crc32c_b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def file_crc32c(fd: int, size: int) -> int:
    crc, offset = 0, 0
    while offset < size:
        chunk = os.pread(fd, min(COPY_CHUNK, size - offset), offset)
        if not chunk:
            break
        crc = crt_checksums.crc32c(chunk, crc)
        offset += len(chunk)
    return crc


def crc32c_int(encoded: str) -> int:
    return int.from_bytes(base64.b64decode(encoded), "big")


def written_crc32c(data: Buffer, checksums: Mapping[ChecksumKind, str] | None, url: str) -> int:
    """The CRC32C of the bytes about to be written, refusing them when the caller's CRC32C
    (computed from the bytes it read) differs: the check a cloud store makes on its side."""
    actual = int(crt_checksums.crc32c(data))
    given = (checksums or {}).get(ChecksumKind.CRC32C)
    if given is not None and crc32c_int(given) != actual:
        raise IntegrityError(
            f"bytes to write have CRC32C {crc32c_b64(actual)}, the write says {given}", url=url
        )
    return actual
