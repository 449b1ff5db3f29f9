"""Leases (one daemon of the group does a named job at a time) and the findings of each
periodic reconciliation, so that ``replicator catalog reconciliations`` and the status pages
show what the safety net found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from replicator.catalog.base import CatalogBase, _now
from replicator.catalog.schema import leases, reconcile_runs


@dataclass(frozen=True)
class ReconcileRun:
    """What one reconciliation of a route found (drift by kind) and repaired."""

    route: str
    holder: str
    started_at: datetime
    finished_at: datetime
    compared: int
    in_sync: int
    missing: int
    different: int
    extra: int
    repairs: int
    failed: int
    error: str | None = None


class ReconcileRecords(CatalogBase):
    async def take_lease(
        self, name: str, holder: str, ttl: timedelta, now: datetime | None = None
    ) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl``; False if
        another holder has it and it has not expired."""
        now = now or _now()
        stmt = self._insert(leases).values(name=name, holder=holder, expires_at=now + ttl)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
            where=(leases.c.holder == holder) | (leases.c.expires_at < now),
        )
        async with self.database.write() as conn:
            await conn.execute(stmt)
            found = await conn.execute(select(leases.c.holder).where(leases.c.name == name))
            return found.scalar_one_or_none() == holder

    async def release_lease(self, name: str, holder: str) -> None:
        async with self.database.write() as conn:
            await conn.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )

    async def record_reconcile_run(self, run: ReconcileRun) -> None:
        async with self.database.write() as conn:
            await conn.execute(reconcile_runs.insert().values(**run.__dict__))

    async def reconcile_runs(
        self, route: str | None = None, limit: int = 100
    ) -> list[ReconcileRun]:
        """The latest runs first."""
        query = select(*(reconcile_runs.c[f] for f in ReconcileRun.__dataclass_fields__))
        if route is not None:
            query = query.where(reconcile_runs.c.route == route)
        query = query.order_by(reconcile_runs.c.started_at.desc()).limit(limit)
        async with self.database.read() as conn:
            rows = (await conn.execute(query)).all()
        return [ReconcileRun(*row) for row in rows]
