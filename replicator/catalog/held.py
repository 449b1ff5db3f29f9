"""Changes waiting in the catalog to be handed back to Kafka: held while their destination's
replication is paused, and failed ones an operator sends back (``replicator failed retry``).
Each row is claimed by one daemon at a time (a lease in ``claimed_until``), so concurrent
daemons publish it once per lease and one that dies leaves it to the others when the lease
ends; the row stays ``held`` until its change is applied.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update

from replicator.catalog.base import MAX_LIST, CatalogBase, _now
from replicator.catalog.model import (
    CatalogError,
    Change,
    HeldChange,
    ReplicaState,
    Role,
    UnknownDataset,
)
from replicator.catalog.schema import objects, replicas
from replicator.catalog.sequencer import change_key

# A change held while still waiting to be applied (a try in progress, or a failed one).
_HOLDABLE = (ReplicaState.PENDING, ReplicaState.FAILED, ReplicaState.HELD)


class HeldChanges(CatalogBase):
    """The queue of changes to hand back to Kafka from the catalog, and the failed list."""

    async def hold(self, change: Change, location: str, reason: str) -> bool:
        """Mark ``change`` held at ``location`` (its destination is paused): once resumed, it
        is published again from this row. False when the row holds another change by now (a newer
        one, held or applied on its own)."""
        sequencer = change_key(change.source_url, change.sequencer, change.event_time)
        dataset, _, key = await self.resolve(change.source_url, Role.SOURCE)
        target = await self._location(dataset, location)
        r = replicas.c
        async with self.database.write() as conn:
            result = await conn.execute(
                update(replicas)
                .where(
                    r.dataset_id == dataset.id,
                    r.key == key,
                    r.location_id == target.id,
                    r.source_sequencer == sequencer,
                    r.state.in_([str(s) for s in _HOLDABLE]),
                )
                .values(
                    state=str(ReplicaState.HELD),
                    last_error=reason,
                    claimed_until=None,
                    updated_at=_now(),
                )
            )
        return bool(result.rowcount)

    async def held_changes(
        self, now: datetime, *, paused: Collection[tuple[str, str]] = (), limit: int = 100
    ) -> list[HeldChange]:
        """Held changes any daemon may take at ``now`` (not claimed, or their lease ended),
        the oldest first, leaving out destinations ``paused`` names as (route, destination URL;
        '' for every destination of the route)."""
        index = await self._load_index()
        excluded = {
            loc.id
            for route, destination in paused
            if (dataset := index.by_name.get(route)) is not None
            for loc in dataset.replicas
            if destination in ("", loc.url)
        }
        r = replicas.c
        conditions: list[ColumnElement[bool]] = [
            r.state == str(ReplicaState.HELD),
            or_(r.claimed_until.is_(None), r.claimed_until <= now),
        ]
        if excluded:
            conditions.append(r.location_id.not_in(sorted(excluded)))
        return await self._select_held(conditions, limit, order=(r.pending_since, r.key))

    async def claim_held(self, item: HeldChange, now: datetime, until: datetime) -> bool:
        """Take ``item`` for this process until ``until``; False if another took it, or its
        row moved on (a newer change, or applied meanwhile)."""
        r = replicas.c
        return await self._update_row(
            item,
            {"claimed_until": until},
            r.state == str(ReplicaState.HELD),
            or_(r.claimed_until.is_(None), r.claimed_until <= now),
        )

    async def defer_held(self, item: HeldChange, not_before: datetime) -> bool:
        """Give back the claim on a held change that could not be handed over (Kafka did not
        take its event): it is taken again from ``not_before``, by any daemon."""
        return await self._update_row(
            item,
            {"claimed_until": not_before},
            replicas.c.state == str(ReplicaState.HELD),
        )

    async def failed_changes(
        self,
        *,
        routes: Sequence[str] = (),
        keys: Sequence[str] = (),
        limit: int = 1000,
        min_attempts: int = 0,
        failed_before: datetime | None = None,
    ) -> list[HeldChange]:
        """The failed list: changes whose retry budget ran out at a destination (and those
        failing right now), oldest failure first, of the ``routes`` (dataset names) and the
        ``keys`` given (default: all), tried at least ``min_attempts`` times and last failed
        before ``failed_before`` if given."""
        if not 1 <= limit <= MAX_LIST:
            raise CatalogError(f"limit must be between 1 and {MAX_LIST}")
        r = replicas.c
        conditions: list[ColumnElement[bool]] = [r.state == str(ReplicaState.FAILED)]
        if min_attempts:
            conditions.append(r.attempts >= min_attempts)
        if failed_before is not None:
            conditions.append(r.updated_at < failed_before)
        if routes:
            ids = []
            for route in routes:
                ids.append((await self.dataset(route)).id)
            conditions.append(r.dataset_id.in_(ids))
        if keys:
            conditions.append(r.key.in_(list(keys)))
        return await self._select_held(conditions, limit, order=(r.first_failed_at, r.key))

    async def retry_failed(
        self,
        *,
        routes: Sequence[str] = (),
        keys: Sequence[str] = (),
        limit: int = MAX_LIST,
        min_attempts: int = 0,
        failed_before: datetime | None = None,
    ) -> list[HeldChange]:
        """Send failed changes back to be applied (held again: a daemon publishes each to its
        key's partition owner, which reads the source afresh): each gets a new retry budget.
        The filters are those of ``failed_changes``. Returns those sent back."""
        found = await self.failed_changes(
            routes=routes,
            keys=keys,
            limit=limit,
            min_attempts=min_attempts,
            failed_before=failed_before,
        )
        sent = []
        for item in found:
            moved = await self._update_row(
                item,
                {
                    "state": str(ReplicaState.HELD),
                    "claimed_until": None,
                    "attempts": 0,
                },
                replicas.c.state == str(ReplicaState.FAILED),
            )
            if moved:
                sent.append(item)
        return sent

    async def _select_held(
        self,
        conditions: Sequence[ColumnElement[bool]],
        limit: int,
        *,
        order: tuple[Any, ...],
    ) -> list[HeldChange]:
        index = await self._load_index()
        r = replicas.c
        o = objects.c
        # Whether the row's change is a deletion: the object row holds it while that change
        # is the newest of the key (a newer one makes the row's change stale anyway).
        deletion = (
            select(o.deleted)
            .where(
                o.dataset_id == r.dataset_id,
                o.key == r.key,
                o.source_sequencer == r.source_sequencer,
            )
            .scalar_subquery()
        )
        async with self.database.read() as conn:
            rows = (
                await conn.execute(
                    select(replicas, deletion.label("change_deleted"))
                    .where(and_(*conditions))
                    .order_by(*order, r.location_id)
                    .limit(limit)
                )
            ).all()
        out = []
        for row in rows:
            target = index.by_id.get(row.location_id)
            origin = index.by_id.get(row.source_location_id)
            if target is None or origin is None:
                # Registered after the index was read: seen on a later call.
                continue
            out.append(
                HeldChange(
                    dataset=target.dataset,
                    key=row.key,
                    source_url=origin.url + row.key,
                    location=target.url,
                    sequencer=row.source_sequencer,
                    event_time=row.source_event_time,
                    version=row.source_version,
                    size=row.source_size,
                    deleted=bool(row.change_deleted),
                    state=ReplicaState(row.state),
                    attempts=row.attempts,
                    last_error=row.last_error,
                    first_failed_at=row.first_failed_at,
                    last_failed_at=row.updated_at if row.first_failed_at else None,
                )
            )
        return out

    async def _update_row(
        self, item: HeldChange, values: dict[str, Any], *conditions: ColumnElement[bool]
    ) -> bool:
        try:
            dataset = await self.dataset(item.dataset)
        except UnknownDataset:
            return False
        target = await self._location(dataset, item.location)
        r = replicas.c
        async with self.database.write() as conn:
            result = await conn.execute(
                update(replicas)
                .where(
                    r.dataset_id == dataset.id,
                    r.key == item.key,
                    r.location_id == target.id,
                    r.source_sequencer == item.sequencer,
                    *conditions,
                )
                .values(**values, updated_at=_now())
            )
        return bool(result.rowcount)
