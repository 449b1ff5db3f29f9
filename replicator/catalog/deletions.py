"""Replica deletions a route's delayed delete policy scheduled: listing the due ones,
claiming each for one sweeper, settling it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    func,
    select,
    update,
)

from replicator.catalog.base import (
    CatalogBase,
    _now,
)
from replicator.catalog.model import (
    SWEPT,
    CatalogError,
    ReplicaState,
    ScheduledDelete,
)
from replicator.catalog.schema import (
    replicas,
)


class ScheduledDeletions(CatalogBase):
    """The queue of deletions to carry out later (scheduled by a delayed delete policy, or
    held back by a pause), kept in the replica rows themselves."""

    async def due_deletes(self, now: datetime, *, limit: int = 100) -> list[ScheduledDelete]:
        """Deletions due at ``now`` (scheduled or paused), the longest overdue first."""
        index = await self._load_index()
        r = replicas.c
        async with self.database.read() as conn:
            rows = (
                await conn.execute(
                    select(
                        r.key,
                        r.location_id,
                        r.source_location_id,
                        r.source_sequencer,
                        r.delete_due,
                        r.state,
                        r.etag,
                    )
                    .where(r.state.in_([str(s) for s in SWEPT]), r.delete_due <= now)
                    .order_by(r.delete_due, r.key, r.location_id)
                    .limit(limit)
                )
            ).all()
        out = []
        for key, location_id, source_id, seq, due, state, etag in rows:
            target, origin = index.by_id[location_id], index.by_id[source_id]
            out.append(
                ScheduledDelete(
                    target.dataset,
                    key,
                    origin.url + key,
                    target.url,
                    seq,
                    due,
                    ReplicaState(state),
                    etag,
                )
            )
        return out

    async def scheduled_delete_count(self) -> int:
        async with self.database.read() as conn:
            count = (
                await conn.execute(
                    select(func.count()).where(
                        replicas.c.state == str(ReplicaState.DELETE_SCHEDULED)
                    )
                )
            ).scalar_one()
        return int(count)

    async def claim_delete(self, item: ScheduledDelete, until: datetime) -> bool:
        """Take ``item`` for this process by moving its due time to ``until``: concurrent
        sweepers claim each deletion once, and one that dies leaves it due again at ``until``."""
        return await self._update_scheduled(
            item, {"delete_due": until}, replicas.c.delete_due == item.due
        )

    async def settle_delete(
        self,
        item: ScheduledDelete,
        state: ReplicaState,
        *,
        when: datetime,
        error: str | None = None,
    ) -> bool:
        """End a scheduled deletion as ``deleted`` (done), ``retained`` (the policy changed to
        keep replicas) or ``stale`` (the source is back, or the replica is not ours: it needs a
        look). Nothing happens if a newer change of the key has replaced the deletion."""
        values: dict[str, Any] = {"state": str(state), "delete_due": None, "last_error": error}
        if state is ReplicaState.DELETED:
            values.update(
                replicated_at=when,
                pending_since=None,
                **dict.fromkeys(
                    ("version", "etag", "size", "fingerprint", "checksums", "written_as")
                ),
            )
        elif state is ReplicaState.STALE:
            values["pending_since"] = replicas.c.source_event_time
        elif state is ReplicaState.RETAINED:
            values["pending_since"] = None
        else:
            raise CatalogError(f"a scheduled deletion cannot end as {state}")
        return await self._update_scheduled(item, values)

    async def _update_scheduled(
        self,
        item: ScheduledDelete,
        values: dict[str, Any],
        *conditions: ColumnElement[bool],
    ) -> bool:
        found = await self.dataset(item.dataset)
        target = await self._location(found, item.location)
        r = replicas.c
        async with self.database.write() as conn:
            result = await conn.execute(
                update(replicas)
                .where(
                    r.dataset_id == found.id,
                    r.key == item.key,
                    r.location_id == target.id,
                    r.state == str(item.state),
                    r.source_sequencer == item.sequencer,
                    *conditions,
                )
                .values(**values, updated_at=_now())
            )
        return bool(result.rowcount)
