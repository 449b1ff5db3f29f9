"""Conflicts of replication groups (``replicator.pipeline.groups``): the loser of every
conflicting pair of changes is recorded here, and what a member held before its own write is
asked here (a write made over a replica the member had received is a newer change, not a
conflict); so are the deletions the group made at its members, to recognise their echoes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from replicator.catalog.base import MAX_LIST, CatalogBase, _now
from replicator.catalog.model import ReplicaState
from replicator.catalog.schema import conflicts, group_deletions, replicas


@dataclass(frozen=True)
class Conflict:
    """One key changed at two members before either change was replicated: the winner every
    member keeps and the loser. A version of None is a deletion."""

    group: str
    key: str
    winner_member: str
    winner_version: str | None
    winner_time: datetime
    loser_member: str
    loser_version: str | None
    loser_time: datetime
    detected_at: datetime

    def as_json(self) -> dict[str, object]:
        return {
            "group": self.group,
            "key": self.key,
            "winner": {
                "member": self.winner_member,
                "version": self.winner_version,
                "deleted": self.winner_version is None,
                "time": self.winner_time.isoformat(),
            },
            "loser": {
                "member": self.loser_member,
                "version": self.loser_version,
                "deleted": self.loser_version is None,
                "time": self.loser_time.isoformat(),
            },
            "detected_at": self.detected_at.isoformat(),
        }


@dataclass(frozen=True)
class AppliedDeletion:
    """A deletion a group applied at a member object: the member it came from, and when its
    user deleted it there (the change's own event time)."""

    member: str
    deleted_at: datetime


class ConflictRecords(CatalogBase):
    async def record_conflict(self, conflict: Conflict) -> bool:
        """Record ``conflict``; False if it was recorded already (both members' daemons may
        each find it, in either order)."""
        stmt = (
            self._insert(conflicts)
            .values(
                group_name=conflict.group,
                key=conflict.key,
                winner_member=conflict.winner_member,
                winner_version=conflict.winner_version or "",
                winner_time=conflict.winner_time,
                loser_member=conflict.loser_member,
                loser_version=conflict.loser_version or "",
                loser_time=conflict.loser_time,
                detected_at=conflict.detected_at or _now(),
            )
            .on_conflict_do_nothing(
                index_elements=[
                    "group_name",
                    "key",
                    "winner_member",
                    "winner_version",
                    "loser_member",
                    "loser_version",
                ]
            )
        )
        async with self.database.write() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def conflicts(self, group: str | None = None, limit: int = MAX_LIST) -> list[Conflict]:
        """Recorded conflicts, the latest first."""
        query = select(
            conflicts.c.group_name,
            conflicts.c.key,
            conflicts.c.winner_member,
            conflicts.c.winner_version,
            conflicts.c.winner_time,
            conflicts.c.loser_member,
            conflicts.c.loser_version,
            conflicts.c.loser_time,
            conflicts.c.detected_at,
        )
        if group is not None:
            query = query.where(conflicts.c.group_name == group)
        query = query.order_by(conflicts.c.detected_at.desc(), conflicts.c.id.desc()).limit(limit)
        async with self.database.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Conflict(
                row[0], row[1], row[2], row[3] or None, row[4], row[5], row[6] or None, *row[7:]
            )
            for row in rows
        ]

    async def received(self, object_url: str, from_url: str, source_version: str) -> bool:
        """Whether the catalog recorded a verified replica at ``object_url`` of the object at
        ``from_url`` in version ``source_version`` (both URLs locations of one dataset)."""
        dataset, location, key = await self.resolve(object_url)
        origin = await self._resolve(from_url, None)
        if origin is None or origin[0].name != dataset.name:
            return False
        query = select(replicas.c.source_version).where(
            replicas.c.dataset_id == dataset.id,
            replicas.c.key == key,
            replicas.c.location_id == location.id,
            replicas.c.source_location_id == origin[1].id,
            replicas.c.state == str(ReplicaState.REPLICATED),
        )
        async with self.database.read() as conn:
            found = (await conn.execute(query)).scalar_one_or_none()
        return found is not None and found == source_version

    async def deleted_from(self, object_url: str) -> AppliedDeletion | None:
        """The deletion the catalog last applied to ``object_url`` (a deletion a group made
        there): the member it came from and its time; None if its last change there was no
        deletion."""
        dataset, location, key = await self.resolve(object_url)
        query = select(replicas.c.source_location_id, replicas.c.source_event_time).where(
            replicas.c.dataset_id == dataset.id,
            replicas.c.key == key,
            replicas.c.location_id == location.id,
            replicas.c.state == str(ReplicaState.DELETED),
        )
        async with self.database.read() as conn:
            found = (await conn.execute(query)).one_or_none()
        if found is None:
            return None
        member = next((loc.url for loc in dataset.locations if loc.id == found[0]), None)
        return None if member is None else AppliedDeletion(member, found[1])

    async def record_group_deletion(self, url: str, at: datetime, *, keep: timedelta) -> None:
        """Record that the group deleted the member object ``url`` at ``at``, forgetting its
        deletions there older than ``keep`` (their echoes came long ago)."""
        async with self.database.write() as conn:
            await conn.execute(
                delete(group_deletions).where(
                    group_deletions.c.url == url, group_deletions.c.deleted_at < at - keep
                )
            )
            await conn.execute(
                self._insert(group_deletions)
                .values(url=url, deleted_at=at)
                .on_conflict_do_nothing(index_elements=["url", "deleted_at"])
            )

    async def group_deleted(self, url: str, earliest: datetime, latest: datetime) -> bool:
        """Whether the group deleted the member object ``url`` between ``earliest`` and
        ``latest``."""
        query = select(group_deletions.c.url).where(
            group_deletions.c.url == url,
            group_deletions.c.deleted_at >= earliest,
            group_deletions.c.deleted_at <= latest,
        )
        async with self.database.read() as conn:
            return (await conn.execute(query.limit(1))).first() is not None
