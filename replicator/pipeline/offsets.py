"""Which Kafka offsets may be committed, when records finish out of order (pure).

Records of one partition are handed to workers in offset order but finish in any order
(different keys run concurrently). Only the offset below which every record is finished may be
committed: committing past a record still in flight would lose it in a crash.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class _Partition:
    in_flight: set[int] = field(default_factory=set)
    pending_heap: list[int] = field(default_factory=list)
    highest_seen: int = -1
    committed: int | None = None


class OffsetTracker:
    """Tracks started and finished offsets per (topic, partition)."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], _Partition] = {}

    def started(self, topic: str, partition: int, offset: int) -> None:
        state = self._partitions.setdefault((topic, partition), _Partition())
        if offset <= state.highest_seen:
            raise ValueError(
                f"{topic}[{partition}]: offset {offset} started after {state.highest_seen}"
            )
        state.highest_seen = offset
        state.in_flight.add(offset)
        heapq.heappush(state.pending_heap, offset)

    def finished(self, topic: str, partition: int, offset: int) -> None:
        state = self._partitions.get((topic, partition))
        if state is None or offset not in state.in_flight:
            raise ValueError(f"{topic}[{partition}]: offset {offset} was not started")
        state.in_flight.discard(offset)

    def is_started(self, topic: str, partition: int, offset: int) -> bool:
        """Whether ``offset`` was started and is not finished yet."""
        state = self._partitions.get((topic, partition))
        return state is not None and offset in state.in_flight

    def committable(self, topic: str, partition: int) -> int | None:
        """The offset to commit (the next one to read), if it moved since the last commit."""
        state = self._partitions.get((topic, partition))
        if state is None or state.highest_seen < 0:
            return None
        while state.pending_heap and state.pending_heap[0] not in state.in_flight:
            heapq.heappop(state.pending_heap)
        position = state.pending_heap[0] if state.pending_heap else state.highest_seen + 1
        if state.committed is not None and position <= state.committed:
            return None
        return position

    def mark_committed(self, topic: str, partition: int, offset: int) -> None:
        state = self._partitions.get((topic, partition))
        if state is not None:
            state.committed = offset

    def in_flight(self, topic: str, partition: int) -> int:
        state = self._partitions.get((topic, partition))
        return len(state.in_flight) if state else 0

    def partitions(self) -> list[tuple[str, int]]:
        return list(self._partitions)

    def forget(self, topic: str, partition: int) -> None:
        """Drop a partition's state once it was revoked and its final offset committed."""
        self._partitions.pop((topic, partition), None)
