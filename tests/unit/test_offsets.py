"""Commit only below the lowest unfinished offset, whatever order records finish in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.pipeline.offsets import PartitionOffsets


def test_nothing_to_commit_before_any_record() -> None:
    assert PartitionOffsets().committable() is None


def test_commit_waits_for_the_lowest_unfinished() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12):
        assert offsets.start(offset)
    offsets.finish(12)
    offsets.finish(11)
    assert offsets.committable() == 10
    offsets.finish(10)
    assert offsets.committable() == 13


def test_no_repeat_commit_of_the_same_position() -> None:
    offsets = PartitionOffsets()
    offsets.start(0)
    offsets.finish(0)
    assert offsets.committable() == 1
    offsets.mark_committed(1)
    assert offsets.committable() is None


def test_an_older_commit_never_moves_the_committed_position_back() -> None:
    offsets = PartitionOffsets()
    offsets.start(0)
    offsets.finish(0)
    offsets.mark_committed(1)
    offsets.mark_committed(0)
    assert offsets.committed == 1


def test_a_redelivered_offset_is_reported_and_changes_nothing() -> None:
    """A record delivered again (the consumer's position moved back) is not taken twice and is
    not an error: the worker must survive it."""
    offsets = PartitionOffsets()
    assert offsets.start(5)
    assert offsets.start(6)
    offsets.finish(6)
    assert not offsets.start(5)
    assert not offsets.start(6)
    assert not offsets.start(2)
    assert offsets.committable() == 5
    offsets.finish(5)
    assert offsets.committable() == 7


def test_finishing_what_was_not_started_is_refused() -> None:
    offsets = PartitionOffsets()
    offsets.start(5)
    with pytest.raises(ValueError, match="not started"):
        offsets.finish(6)
    offsets.finish(5)
    with pytest.raises(ValueError, match="finished already"):
        offsets.finish(5)


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_never_commits_past_an_unfinished_record(order: list[int], finish_count: int) -> None:
    """Property: for any completion order and any prefix of it, the committable offset is
    exactly the lowest unfinished offset (or one past the last when all are done)."""
    offsets = PartitionOffsets()
    for offset in range(30):
        offsets.start(offset)
    done = set(order[:finish_count])
    for offset in order[:finish_count]:
        offsets.finish(offset)
    expected = min(set(range(30)) - done, default=30)
    assert offsets.committable() == expected


@given(
    st.lists(st.integers(min_value=0, max_value=40), max_size=80),
    st.randoms(use_true_random=False),
)
def test_redeliveries_in_any_order_never_commit_past_unfinished(
    deliveries: list[int], rng: object
) -> None:
    """Property: whatever offsets arrive (repeats and going back included), the committable
    offset never passes a started, unfinished one."""
    offsets = PartitionOffsets()
    started = [offset for offset in deliveries if offsets.start(offset)]
    assert started == sorted(set(started))
    unfinished = set(started)
    for offset in started[::2]:
        offsets.finish(offset)
        unfinished.discard(offset)
    position = offsets.committable()
    if position is not None:
        assert all(offset >= position for offset in unfinished)
