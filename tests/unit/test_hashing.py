"""The fingerprint does not depend on part size or order, and matches its documented form."""

from __future__ import annotations

import itertools
import os
import random

import pytest
import xxhash

from replicator.engine import hashing
from replicator.engine.hashing import FINGERPRINT_BLOCK, Fingerprint


def reference(data: bytes) -> str:
    """The definition in the module docstring, written out independently."""
    h = xxhash.xxh3_128()
    h.update(len(data).to_bytes(8, "little"))
    for start in range(0, len(data), FINGERPRINT_BLOCK):
        h.update(xxhash.xxh3_128_digest(data[start : start + FINGERPRINT_BLOCK]))
    return "xxh3-128-4m:" + h.hexdigest()


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        FINGERPRINT_BLOCK - 1,
        FINGERPRINT_BLOCK,
        FINGERPRINT_BLOCK + 1,
        3 * FINGERPRINT_BLOCK + 17,
    ],
)
def test_matches_reference_definition(size: int) -> None:
    data = os.urandom(size)
    assert hashing.fingerprint(data) == reference(data)


def test_independent_of_part_size_and_order() -> None:
    """Parts of 1 block or 2 blocks, added in shuffled order, give the same fingerprint."""
    data = os.urandom(5 * FINGERPRINT_BLOCK + 999)
    for blocks_per_part in (1, 2, 3):
        step = blocks_per_part * FINGERPRINT_BLOCK
        parts = [(offset, data[offset : offset + step]) for offset in range(0, len(data), step)]
        random.Random(blocks_per_part).shuffle(parts)
        accumulator = Fingerprint(len(data))
        for offset, chunk in parts:
            accumulator.add_data(chunk, offset)
        assert accumulator.value() == hashing.fingerprint(data)


def test_differs_on_one_flipped_bit() -> None:
    data = bytearray(os.urandom(FINGERPRINT_BLOCK + 10))
    before = hashing.fingerprint(bytes(data))
    data[FINGERPRINT_BLOCK + 3] ^= 1
    assert hashing.fingerprint(bytes(data)) != before


def test_incomplete_fingerprint_refuses_a_value() -> None:
    accumulator = Fingerprint(2 * FINGERPRINT_BLOCK)
    accumulator.add_data(os.urandom(FINGERPRINT_BLOCK), 0)
    with pytest.raises(ValueError, match="incomplete"):
        accumulator.value()


def test_unaligned_offset_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        hashing.block_digests(b"x", 5)


def test_part_crcs_combine_to_whole_object_crc() -> None:
    data = os.urandom(1_000_003)
    crcs = hashing.PartCrcs()
    cuts = [0, 1, 4096, 500_000, len(data)]
    for number, (start, end) in reversed(list(enumerate(itertools.pairwise(cuts), start=1))):
        crcs.add(number, hashing.crc32c(data[start:end]), end - start)
    assert crcs.whole() == hashing.crc32c(data)
