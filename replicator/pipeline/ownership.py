"""Partition ownership: the one place that knows which partitions this member of the consumer
group owns, the work in flight on each, and which offsets may be committed.

The consumer (``bus.AsyncConsumer``) reports rebalances here; the worker asks here whether a
record is to be processed and reports each task it starts. The rules:

* A record is taken only from a partition this member owns and is not giving up, and only once
  per ownership (a redelivered offset is dropped, not an error).
* Revoked partitions (a rebalance, or this member stopping): their work gets ``drain_deadline_s``
  to finish; what is left is cancelled, and the partitions are released only once every task
  has finished (a cancelled copy aborts its upload first). The offsets committed before they
  go cover exactly what finished. So when another member takes a partition, no task of this
  member still writes any of its keys.
* Lost partitions (the group moved on without this member, e.g. its session expired): they
  already belong to someone else, so their work is cancelled at once, awaited, and nothing is
  committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from replicator.pipeline.offsets import PartitionOffsets

log = structlog.get_logger(__name__)

TopicPartition = tuple[str, int]


def describe(partitions: Iterable[TopicPartition]) -> list[str]:
    """Partitions as log-friendly strings (``topic[3]``)."""
    return [f"{topic}[{partition}]" for topic, partition in partitions]


@dataclass(eq=False)
class OwnedPartition:
    """One partition for as long as this member owns it (a new object each assignment)."""

    key: TopicPartition
    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    paused: bool = False
    leaving: bool = False


@dataclass
class OwnershipStats:
    assigned: int = 0
    revoked: int = 0
    lost: int = 0
    cancelled: int = 0
    redelivered: int = 0


class Ownership:
    """The partitions this member owns and the work running on them."""

    def __init__(self, *, drain_deadline_s: float = 30.0, cancel_deadline_s: float = 60.0) -> None:
        self.drain_deadline_s = drain_deadline_s
        self.cancel_deadline_s = cancel_deadline_s
        self.stats = OwnershipStats()
        self._owned: dict[TopicPartition, OwnedPartition] = {}

    @property
    def release_deadline_s(self) -> float:
        """The longest giving up partitions can take: the consumer waits this long."""
        return self.drain_deadline_s + self.cancel_deadline_s + 5.0

    def owned(self) -> list[OwnedPartition]:
        return [part for part in self._owned.values() if not part.leaving]

    def take(self, topic: str, partition: int, offset: int) -> OwnedPartition | None:
        """The partition to run this record under, or None if it is not to be processed."""
        part = self._owned.get((topic, partition))
        if part is None or part.leaving:
            return None
        if not part.offsets.start(offset):
            self.stats.redelivered += 1
            return None
        return part

    def positions(self) -> dict[OwnedPartition, int]:
        """Per owned partition, the offset that may be committed now (if it moved)."""
        positions = {}
        for part in self.owned():
            offset = part.offsets.committable()
            if offset is not None:
                positions[part] = offset
        return positions

    def committed(self, positions: dict[OwnedPartition, int]) -> None:
        """The broker accepted these commits."""
        for part, offset in positions.items():
            part.offsets.mark_committed(offset)

    # -- rebalances (called by the consumer) --------------------------------------------

    def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        for key in partitions:
            self._owned[key] = OwnedPartition(key)
        self.stats.assigned += len(partitions)

    async def revoked(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Finish or cancel the work of ``partitions``; returns the offsets to commit before
        they are released."""
        leaving = self._leave(partitions)
        self.stats.revoked += len(leaving)
        tasks = {task for part in leaving for task in part.tasks}
        late: set[asyncio.Task[None]] = set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.drain_deadline_s)
        if late:
            log.warning(
                "drain deadline passed; cancelling work of revoked partitions",
                partitions=describe(p.key for p in leaving),
                tasks=len(late),
                drain_deadline_s=self.drain_deadline_s,
            )
            await self._cancel(late)
        positions = {}
        for part in leaving:
            offset = part.offsets.committable()
            if offset is not None:
                positions[part.key] = offset
            self._forget(part)
        return positions

    async def lost(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop the work of partitions another member may already own; commit nothing."""
        leaving = self._leave(partitions)
        self.stats.lost += len(leaving)
        tasks = {task for part in leaving for task in part.tasks}
        if tasks:
            log.warning(
                "partitions lost; cancelling their work, which the new owner redoes",
                partitions=describe(p.key for p in leaving),
                tasks=len(tasks),
            )
            await self._cancel(tasks)
        for part in leaving:
            self._forget(part)

    def _leave(self, partitions: Sequence[TopicPartition]) -> list[OwnedPartition]:
        leaving = [self._owned[key] for key in partitions if key in self._owned]
        for part in leaving:
            part.leaving = True
        return leaving

    def _forget(self, part: OwnedPartition) -> None:
        if self._owned.get(part.key) is part:
            del self._owned[part.key]

    async def _cancel(self, tasks: set[asyncio.Task[None]]) -> None:
        """Cancel ``tasks`` and wait until each has finished its clean-up."""
        for task in tasks:
            task.cancel()
        self.stats.cancelled += len(tasks)
        _, stuck = await asyncio.wait(tasks, timeout=self.cancel_deadline_s)
        if stuck:
            # Nothing more can be done without blocking the group for ever; the records
            # are redone by the next owner, and a late write of these is an older version.
            log.error(
                "cancelled work did not finish; releasing its partitions anyway",
                tasks=len(stuck),
                cancel_deadline_s=self.cancel_deadline_s,
                alert=True,
            )
