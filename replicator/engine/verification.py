"""The checksums a copy computes from the bytes it reads, and its checks of what stores
report against them: the engine's verification, apart from the moving of bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.base import Buffer, ChecksumKind, IntegrityError, MiB, ObjectMeta, PartToken
from replicator.engine import hashing
from replicator.engine.planner import Part

# Hashing a buffer this large is done off the event loop (the hash libraries release the
# GIL), so that other copies' I/O is not held up behind it.
THREAD_HASH_BYTES = 1 * MiB


@dataclass(frozen=True)
class Digest:
    """Everything computed from one buffer, in one pass over it: its CRC32C, the checksum the
    destination verifies writes by (sent with the write, so it is not computed twice), and
    the fingerprint blocks it holds."""

    crc32c: int
    checksums: dict[ChecksumKind, str]
    blocks: list[tuple[int, bytes]]


def digest_now(data: Buffer, offset: int, write_kind: ChecksumKind) -> Digest:
    crc = hashing.crc32c(data)
    checksums = {ChecksumKind.CRC32C: hashing.crc32c_b64(crc)}
    if write_kind is not ChecksumKind.CRC32C:
        checksums[write_kind] = hashing.checksum_b64(write_kind, data)
    return Digest(crc, checksums, hashing.block_digests(data, offset))


async def digest_of(data: Buffer, offset: int, write_kind: ChecksumKind) -> Digest:
    if len(data) >= THREAD_HASH_BYTES:
        return await asyncio.to_thread(digest_now, data, offset, write_kind)
    return digest_now(data, offset, write_kind)


def check_size(meta: ObjectMeta, src: ObjectMeta) -> None:
    if meta.size != src.size:
        raise IntegrityError(
            f"destination holds {meta.size} bytes, source has {src.size}", url=meta.url
        )


def check_source_crc(src: ObjectMeta, crc: int) -> None:
    reported = src.checksums.get(ChecksumKind.CRC32C)
    if reported is not None and reported != hashing.crc32c_b64(crc):
        raise IntegrityError(
            f"bytes read have CRC32C {hashing.crc32c_b64(crc)} but the source reports {reported}",
            url=src.url,
        )


def check_checksums(
    reported: Mapping[ChecksumKind, str], expected: Mapping[ChecksumKind, str], url: str
) -> None:
    for kind, value in expected.items():
        got = reported.get(kind)
        if got is not None and got != value:
            raise IntegrityError(f"destination {kind} is {got}, expected {value}", url=url)


def check_part(token: PartToken, digest: Digest, part: Part, url: str) -> None:
    """The store took the part's bytes whole, and every checksum it reports for them is the
    one of the bytes read."""
    if token.size != part.length:
        raise IntegrityError(
            f"part {part.number}: store took {token.size} bytes, sent {part.length}", url=url
        )
    for kind, value in digest.checksums.items():
        got = token.checksums.get(kind)
        if got is not None and got != value:
            raise IntegrityError(
                f"part {part.number}: store holds {kind} {got}, bytes read have {value}", url=url
            )
