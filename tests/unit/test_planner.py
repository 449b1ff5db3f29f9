"""The planner is a pure function of sizes and limits."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors import open_store
from connectors.base import ChecksumKind, GiB, Limits, MiB, ObjectMeta, TiB
from replicator.engine.hashing import FINGERPRINT_BLOCK
from replicator.engine.planner import (
    DEFAULT_PART_SIZE,
    ORDERED_UPLOAD_MAX,
    PlanError,
    Strategy,
    auto_part_size,
    choose_part_size,
    plan_copy,
    split,
    stripes,
)
from replicator.engine.transfer import Copier

S3 = Limits(
    min_part_size=5 * MiB,
    max_part_size=5 * GiB,
    max_parts=10_000,
    max_object_size=5 * TiB,
    max_single_put=5 * GiB,
    max_key_bytes=1024,
    native_checksums=frozenset({ChecksumKind.CRC32C}),
    server_side_copy=True,
)
AZURE = Limits(
    min_part_size=1,
    max_part_size=4000 * MiB,
    max_parts=50_000,
    max_object_size=50_000 * 4000 * MiB,
    max_single_put=5000 * MiB,
    max_key_bytes=1024,
    native_checksums=frozenset({ChecksumKind.MD5}),
)
NO_MULTIPART = Limits(
    min_part_size=1,
    max_part_size=1,
    max_parts=1,
    max_object_size=10 * GiB,
    max_single_put=1 * GiB,
    max_key_bytes=1024,
    native_checksums=frozenset(),
    multipart=False,
)


class TestStrategy:
    def test_same_store_uses_server_side_copy(self) -> None:
        """Both ends in one store that copies internally: no bytes through the client."""
        assert plan_copy(100 * MiB, S3, same_store=True).strategy is Strategy.SERVER_SIDE

    def test_server_side_copy_up_to_the_stores_copy_limit(self) -> None:
        """Past a single request's limit only a store that copies in parts copies internally."""
        big = 6 * GiB
        assert plan_copy(big, S3, same_store=True).strategy is Strategy.MULTIPART
        in_parts = dataclasses.replace(S3, max_server_side_copy=S3.max_object_size)
        assert plan_copy(big, in_parts, same_store=True).strategy is Strategy.SERVER_SIDE

    def test_small_object_is_a_single_put(self) -> None:
        plan = plan_copy(MiB, S3, same_store=False, part_size=16 * MiB)
        assert plan.strategy is Strategy.SINGLE
        assert [(p.offset, p.length) for p in plan.parts] == [(0, MiB)]

    def test_zero_byte_object_is_a_single_put(self) -> None:
        assert plan_copy(0, AZURE, same_store=False).strategy is Strategy.SINGLE

    def test_large_object_is_multipart(self) -> None:
        plan = plan_copy(100 * MiB, S3, same_store=False, part_size=16 * MiB)
        assert plan.strategy is Strategy.MULTIPART
        assert len(plan.parts) == 7
        assert plan.parts[-1].length == 100 * MiB - 6 * 16 * MiB

    def test_larger_than_destination_maximum_is_refused(self) -> None:
        """Refused before any byte moves, naming both sizes."""
        with pytest.raises(PlanError, match="maximum object size"):
            plan_copy(6 * TiB, S3, same_store=False)

    def test_no_multipart_and_too_big_for_one_put(self) -> None:
        with pytest.raises(PlanError, match="single-put"):
            plan_copy(2 * GiB, NO_MULTIPART, same_store=False)


class TestPartSize:
    def test_raised_to_fit_max_parts(self) -> None:
        """5 TiB at 16 MiB would be 327,680 parts; S3 allows 10,000."""
        size = 5 * TiB
        part = choose_part_size(size, S3, 16 * MiB)
        assert -(-size // part) <= 10_000
        assert part % FINGERPRINT_BLOCK == 0

    def test_raised_to_destination_minimum(self) -> None:
        assert choose_part_size(100 * MiB, S3, 1 * MiB) >= 5 * MiB

    @given(
        size=st.integers(min_value=1, max_value=5 * TiB),
        requested=st.integers(min_value=1, max_value=512 * MiB),
    )
    def test_parts_cover_object_exactly(self, size: int, requested: int) -> None:
        """Parts are contiguous, block-aligned, within limits, and add up to the size."""
        plan = plan_copy(size, S3, same_store=False, part_size=requested)
        offset = 0
        for number, part in enumerate(plan.parts, start=1):
            assert part.number == number
            assert part.offset == offset
            assert part.offset % FINGERPRINT_BLOCK == 0
            offset += part.length
        assert offset == size
        assert len(plan.parts) <= S3.max_parts
        if plan.strategy is Strategy.MULTIPART:
            assert all(p.length >= S3.min_part_size for p in plan.parts[:-1])
            assert all(p.length <= S3.max_part_size for p in plan.parts)


@pytest.mark.parametrize(
    ("size", "concurrency", "budget", "expected"),
    [
        (4 * GiB, 8, 256 * MiB, 32 * MiB),  # four parts per slot would exceed the budget
        (1 * GiB, 8, 1024 * MiB, 32 * MiB),  # four parts per slot
        (512 * MiB, 8, 512 * MiB, DEFAULT_PART_SIZE),
        (64 * MiB, 8, 256 * MiB, DEFAULT_PART_SIZE),  # never below the default
        (10 * GiB, 4, 64 * MiB, DEFAULT_PART_SIZE),  # a small budget keeps the default
        (0, 8, 256 * MiB, DEFAULT_PART_SIZE),
    ],
)
def test_auto_part_size(size: int, concurrency: int, budget: int, expected: int) -> None:
    assert auto_part_size(size, concurrency=concurrency, budget=budget) == expected


def test_auto_parts_still_fit_the_destination() -> None:
    size = 4 * 1024 * GiB
    requested = auto_part_size(size, concurrency=8, budget=256 * MiB)
    plan = plan_copy(size, S3, same_store=False, part_size=requested)
    assert len(plan.parts) <= S3.max_parts


def test_stripes_are_runs_of_consecutive_parts() -> None:
    parts = [p for p in split(10 * MiB, MiB) if p.number not in (4, 5)]
    runs = stripes(parts, 3)
    assert [[p.number for p in run] for run in runs] == [[1, 2, 3], [6, 7, 8], [9, 10]]
    assert stripes([], 4) == []


class TestReason:
    """Every plan says why it was chosen, in words ``cp --explain`` prints."""

    def test_server_side_names_the_scope_and_the_request(self) -> None:
        limits = dataclasses.replace(
            S3, server_side_copy_via="CopyObject", server_side_copy_scope="one bucket"
        )
        plan = plan_copy(MiB, limits, same_store=True)
        assert plan.reason == "one store (one bucket): CopyObject; no bytes through this process"

    def test_another_store_says_where_server_side_copy_reaches(self) -> None:
        limits = dataclasses.replace(S3, server_side_copy_scope="one bucket")
        plan = plan_copy(MiB, limits, same_store=False, part_size=16 * MiB)
        assert plan.reason.startswith(
            "not one store: the destination copies server-side only within one bucket; "
        )
        assert plan.reason.endswith(f"{MiB} bytes fit in one part of {16 * MiB}: one put")

    def test_a_destination_without_server_side_copy(self) -> None:
        plan = plan_copy(100 * MiB, AZURE, same_store=True, part_size=16 * MiB)
        assert plan.reason == (
            "the destination has no server-side copy; "
            f"{100 * MiB} bytes in 7 parts of {16 * MiB} bytes"
        )

    def test_over_the_server_side_copy_limit(self) -> None:
        limits = dataclasses.replace(S3, max_server_side_copy=GiB)
        plan = plan_copy(2 * GiB, limits, same_store=True, part_size=GiB)
        assert plan.reason.startswith(
            f"{2 * GiB} bytes exceed the destination's server-side copy limit of {GiB} bytes; "
        )

    def test_a_part_size_raised_to_fit_says_so(self) -> None:
        plan = plan_copy(100 * GiB, S3, same_store=False, part_size=5 * MiB)
        assert plan.part_size > 5 * MiB
        assert f"(raised from {5 * MiB} to fit the destination's 10000 parts" in plan.reason

    def test_no_multipart(self) -> None:
        plan = plan_copy(MiB, NO_MULTIPART, same_store=False, part_size=1)
        assert plan.reason.endswith("the destination has no multipart upload: one put")


class TestOrderedUploads:
    """To a destination with ordered uploads (GCS sessions), parts go in order into one
    upload up to ORDERED_UPLOAD_MAX, unless an upload is left to resume."""

    GCS = dataclasses.replace(S3, min_part_size=1, ordered_uploads=True)

    def test_up_to_the_limit_in_order(self) -> None:
        plan = plan_copy(ORDERED_UPLOAD_MAX, self.GCS, same_store=False, part_size=16 * MiB)
        assert plan.strategy is Strategy.MULTIPART
        assert plan.ordered
        assert plan.reason.endswith(", in order into one upload: an ordinary object")

    def test_over_the_limit_composed(self) -> None:
        plan = plan_copy(ORDERED_UPLOAD_MAX + 1, self.GCS, same_store=False, part_size=16 * MiB)
        assert not plan.ordered
        assert plan.reason.endswith(f", in parallel and composed (over {ORDERED_UPLOAD_MAX} bytes)")

    def test_in_parallel_when_told_why(self) -> None:
        """An upload left to resume, or an ordered one that came out damaged."""
        plan = plan_copy(
            64 * MiB, self.GCS, same_store=False, part_size=16 * MiB, unordered_because="why"
        )
        assert not plan.ordered
        assert plan.reason.endswith(", in parallel: why")

    def test_never_for_stores_without_them_nor_single_puts(self) -> None:
        assert not plan_copy(64 * MiB, S3, same_store=False, part_size=16 * MiB).ordered
        assert not plan_copy(MiB, self.GCS, same_store=False, part_size=16 * MiB).ordered


def test_a_copier_with_ordered_uploads_turned_off_sends_gcs_parts_in_parallel() -> None:
    """``[copy] ordered_uploads = false``: a GCS destination gets parallel parts, composed,
    and the plan says why."""
    source, dest = open_store("s3://bucket/"), open_store("gs://bucket/")
    assert dest.limits.ordered_uploads
    src = ObjectMeta(
        url="s3://bucket/k", key="k", size=32 * MiB, etag='"e"', version=None, last_modified=None
    )
    on = Copier(part_size=8 * MiB).plan(src, source, dest)
    off = Copier(part_size=8 * MiB, ordered_uploads=False).plan(src, source, dest)
    assert on.ordered
    assert not off.ordered
    assert "ordered uploads are turned off" in off.reason
