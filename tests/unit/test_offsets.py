"""Commit only below the lowest unfinished offset, whatever order records finish in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.pipeline.offsets import OffsetTracker


def test_nothing_to_commit_before_any_record() -> None:
    assert OffsetTracker().committable("t", 0) is None


def test_commit_waits_for_the_lowest_unfinished() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started("t", 0, offset)
    tracker.finished("t", 0, 12)
    tracker.finished("t", 0, 11)
    assert tracker.committable("t", 0) == 10
    tracker.finished("t", 0, 10)
    assert tracker.committable("t", 0) == 13


def test_no_repeat_commit_of_the_same_position() -> None:
    tracker = OffsetTracker()
    tracker.started("t", 0, 0)
    tracker.finished("t", 0, 0)
    assert tracker.committable("t", 0) == 1
    tracker.mark_committed("t", 0, 1)
    assert tracker.committable("t", 0) is None


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    tracker.started("t", 0, 5)
    tracker.started("t", 1, 7)
    tracker.finished("t", 1, 7)
    assert tracker.committable("t", 0) == 5
    assert tracker.committable("t", 1) == 8


def test_misuse_is_refused() -> None:
    tracker = OffsetTracker()
    tracker.started("t", 0, 5)
    with pytest.raises(ValueError, match="started after"):
        tracker.started("t", 0, 5)
    with pytest.raises(ValueError, match="not started"):
        tracker.finished("t", 0, 6)


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_never_commits_past_an_unfinished_record(order: list[int], finish_count: int) -> None:
    """Property: for any completion order and any prefix of it, the committable offset is
    exactly the lowest unfinished offset (or one past the last when all are done)."""
    tracker = OffsetTracker()
    for offset in range(30):
        tracker.started("t", 3, offset)
    done = set(order[:finish_count])
    for offset in order[:finish_count]:
        tracker.finished("t", 3, offset)
    expected = min(set(range(30)) - done, default=30)
    assert tracker.committable("t", 3) == expected
