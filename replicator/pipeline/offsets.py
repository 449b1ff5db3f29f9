"""Which offset of one partition may be committed, when records finish out of order (pure).

Records of one partition are handed to workers in offset order but finish in any order
(different keys run concurrently). Only the offset below which every record is finished may be
committed: committing past a record still in flight would lose it in a crash.

A record delivered again while this member still owns the partition (the consumer's position
moved back, for example after the group lost its committed offsets) is one that was already
taken: it is reported as such, never an error, so a redelivery cannot stop the worker.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class PartitionOffsets:
    """Started and finished offsets of one partition, for as long as this member owns it."""

    in_flight: set[int] = field(default_factory=set)
    _pending: list[int] = field(default_factory=list)
    highest_seen: int = -1
    committed: int | None = None

    def start(self, offset: int) -> bool:
        """Record that ``offset`` was taken; False if it was taken before (a redelivery)."""
        if offset <= self.highest_seen:
            return False
        self.highest_seen = offset
        self.in_flight.add(offset)
        heapq.heappush(self._pending, offset)
        return True

    def finish(self, offset: int) -> None:
        if offset not in self.in_flight:
            raise ValueError(f"offset {offset} was not started, or was finished already")
        self.in_flight.discard(offset)

    def committable(self) -> int | None:
        """The offset to commit (the next one to read), if it moved since the last commit."""
        if self.highest_seen < 0:
            return None
        while self._pending and self._pending[0] not in self.in_flight:
            heapq.heappop(self._pending)
        position = self._pending[0] if self._pending else self.highest_seen + 1
        if self.committed is not None and position <= self.committed:
            return None
        return position

    def mark_committed(self, offset: int) -> None:
        """The broker accepted a commit of ``offset``."""
        if self.committed is None or offset > self.committed:
            self.committed = offset
