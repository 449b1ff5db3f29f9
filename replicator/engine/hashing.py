"""Object fingerprints and native checksums (pure: no I/O).

The fingerprint
===============
replicator's own object fingerprint is independent of how an object was cut into parts and of
the order in which the parts were read, so any reader of a replica can recompute it:

1. Split the object into blocks of exactly ``FINGERPRINT_BLOCK`` = 4 MiB (4,194,304 bytes); the
   last block may be shorter. An empty object has no blocks.
2. ``d_i`` = the 16-byte canonical (big-endian) XXH3-128 digest of block ``i`` (seed 0).
3. ``fingerprint`` = XXH3-128 of ``size`` as 8 bytes little-endian followed by
   ``d_0 || d_1 || ... || d_{n-1}``.
4. It is written as ``xxh3-128-4m:`` followed by the 32 lowercase hex digits of that digest.

Reference implementation for any reader::

    import xxhash
    h = xxhash.xxh3_128(); h.update(size.to_bytes(8, "little"))
    for block in blocks_of_4_MiB(data): h.update(xxhash.xxh3_128_digest(block))
    "xxh3-128-4m:" + h.hexdigest()

Native checksums are in the form cloud APIs use: base64 of the digest, big-endian for CRC32C
and MD5, little-endian for Azure's CRC64 (which is CRC-64/NVME).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

import xxhash
from awscrt import checksums

from connectors.base import ChecksumKind

FINGERPRINT_BLOCK = 4 * 1024 * 1024
FINGERPRINT_PREFIX = "xxh3-128-4m:"


def block_digests(data: bytes | bytearray | memoryview, offset: int) -> list[tuple[int, bytes]]:
    """Digests of the fingerprint blocks in ``data``, which starts at ``offset`` of the object.

    ``offset`` must be block-aligned; ``data`` may end mid-block only at the end of the object.
    """
    if offset % FINGERPRINT_BLOCK:
        raise ValueError(f"offset {offset} is not a multiple of {FINGERPRINT_BLOCK}")
    view = memoryview(data)
    first = offset // FINGERPRINT_BLOCK
    return [
        (first + i, xxhash.xxh3_128_digest(view[start : start + FINGERPRINT_BLOCK]))
        for i, start in enumerate(range(0, len(view), FINGERPRINT_BLOCK))
    ]


class Fingerprint:
    """Accumulates block digests in any order; ``hexdigest`` once every block is in."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.blocks = -(-size // FINGERPRINT_BLOCK)
        self._digests: dict[int, bytes] = {}

    def add(self, digests: Iterable[tuple[int, bytes]]) -> None:
        self._digests.update(digests)

    def add_data(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        self.add(block_digests(data, offset))

    def value(self) -> str:
        missing = self.blocks - len(self._digests)
        if missing:
            raise ValueError(f"fingerprint incomplete: {missing} of {self.blocks} blocks missing")
        hasher = xxhash.xxh3_128()
        hasher.update(self.size.to_bytes(8, "little"))
        for index in range(self.blocks):
            hasher.update(self._digests[index])
        return FINGERPRINT_PREFIX + hasher.hexdigest()


def fingerprint(data: bytes | bytearray | memoryview) -> str:
    """The fingerprint of a whole object held in memory."""
    accumulator = Fingerprint(len(data))
    accumulator.add_data(data, 0)
    return accumulator.value()


def crc32c(data: bytes | bytearray | memoryview, previous: int = 0) -> int:
    return int(checksums.crc32c(data, previous))


def combine_crc32c(first: int, second: int, second_length: int) -> int:
    """CRC32C of A || B from CRC32C(A), CRC32C(B) and len(B)."""
    return int(checksums.combine_crc32c(first, second, second_length))


def crc32c_b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def md5_b64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def crc64_b64(data: bytes | bytearray | memoryview) -> str:
    """Azure's CRC64 (CRC-64/NVME) in its wire form: 8 bytes little-endian, base64."""
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "little")).decode()


def checksum_b64(kind: ChecksumKind, data: bytes | bytearray | memoryview) -> str:
    """The checksum of ``data`` in wire form."""
    if kind is ChecksumKind.CRC32C:
        return crc32c_b64(crc32c(data))
    if kind is ChecksumKind.MD5:
        return md5_b64(data)
    return crc64_b64(data)


class PartCrcs:
    """CRC32C per part, combined in part order into the whole object's CRC32C."""

    def __init__(self) -> None:
        self._parts: dict[int, tuple[int, int]] = {}

    def add(self, part_number: int, crc: int, length: int) -> None:
        self._parts[part_number] = (crc, length)

    def whole(self) -> int:
        total = 0
        for number in sorted(self._parts):
            crc, length = self._parts[number]
            total = combine_crc32c(total, crc, length)
        return total
