"""Route controls shared by the whole fleet: pauses (a route's deletions held back by its
delete limit or by an operator; a route's or one destination's replication held back by an
operator) and the count of deletions per route and minute, so that a route's
``max_deletes_per_minute`` holds for every daemon together, not for each one.

Minutes are those of the deciding daemon's clock (the fleet's clocks are assumed to be kept
in step, as for event times): the limit is "at most N deletions in each calendar minute".
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, delete, or_, select

from replicator.catalog.base import CatalogBase, _now
from replicator.catalog.model import Pause, PauseScope, UnknownLocation
from replicator.catalog.schema import delete_windows, pauses


class RouteControls(CatalogBase):
    """Pauses and the fleet-wide delete budget."""

    async def admit_delete(self, route: str, limit: int, now: datetime | None = None) -> bool:
        """Take one deletion from ``route``'s budget for the current minute; False when the
        minute's ``limit`` is spent (nothing is taken then)."""
        if limit <= 0:
            return False
        minute = (now or _now()).replace(second=0, microsecond=0)
        w = delete_windows.c
        stmt = self._insert(delete_windows).values(route=route, window_start=minute, used=1)
        same_minute = w.window_start == stmt.excluded.window_start
        stmt = stmt.on_conflict_do_update(
            index_elements=["route"],
            set_={
                "used": case((same_minute, w.used + 1), else_=1),
                "window_start": stmt.excluded.window_start,
            },
            # A new minute starts afresh; within one, only while budget is left.
            where=or_(w.window_start < stmt.excluded.window_start, w.used < limit),
        ).returning(w.used)
        async with self.database.write() as conn:
            taken = (await conn.execute(stmt)).first()
        return taken is not None

    async def pause(
        self,
        route: str,
        *,
        scope: PauseScope,
        reason: str,
        paused_by: str,
        destination: str = "",
        until: datetime | None = None,
    ) -> Pause:
        """Hold back ``scope`` of ``route`` (of one ``destination``, if given) until it is
        resumed or ``until`` passes. Pausing what is paused already keeps the first pause's
        time and replaces its reason and end. A replication pause must name a route of the
        catalog (and one of its destinations, if any): a typo would otherwise pause nothing."""
        if scope is PauseScope.REPLICATION:
            dataset = await self.dataset(route)
            if destination and destination not in {loc.url for loc in dataset.replicas}:
                raise UnknownLocation(f"{destination} is not a destination of route {route!r}")
        now = _now()
        stmt = self._insert(pauses).values(
            route=route,
            destination=destination,
            scope=str(scope),
            reason=reason,
            paused_by=paused_by,
            paused_at=now,
            until=until,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["route", "destination", "scope"],
            set_={
                "reason": stmt.excluded.reason,
                "paused_by": stmt.excluded.paused_by,
                "until": stmt.excluded.until,
            },
        )
        async with self.database.write() as conn:
            await conn.execute(stmt)
        return next(
            p
            for p in await self.pauses(include_expired=True)
            if (p.route, p.destination, p.scope) == (route, destination, scope)
        )

    async def resume(self, route: str, *, scope: PauseScope, destination: str = "") -> bool:
        """End a pause; False if there was none."""
        p = pauses.c
        async with self.database.write() as conn:
            result = await conn.execute(
                delete(pauses).where(
                    p.route == route, p.destination == destination, p.scope == str(scope)
                )
            )
        return bool(result.rowcount)

    async def pauses(
        self, now: datetime | None = None, *, include_expired: bool = False
    ) -> list[Pause]:
        """The pauses in force at ``now`` (every recorded one with ``include_expired``)."""
        now = now or _now()
        async with self.database.read() as conn:
            rows = (
                await conn.execute(
                    select(pauses).order_by(pauses.c.route, pauses.c.destination, pauses.c.scope)
                )
            ).all()
        found = [
            Pause(
                route=row.route,
                destination=row.destination,
                scope=PauseScope(row.scope),
                reason=row.reason,
                paused_by=row.paused_by,
                paused_at=row.paused_at,
                until=row.until,
            )
            for row in rows
        ]
        return found if include_expired else [p for p in found if p.active(now)]

    async def paused_destinations(self, now: datetime | None = None) -> dict[str, Pause]:
        """The destinations (location URLs) whose replication is paused at ``now``, with the
        pause in force (one of the destination itself before one of its whole route)."""
        index = await self._load_index()
        found: dict[str, Pause] = {}
        replication = [p for p in await self.pauses(now) if p.scope is PauseScope.REPLICATION]
        # Route-wide pauses first, so that a destination's own pause replaces them.
        for pause in sorted(replication, key=lambda p: p.destination != ""):
            dataset = index.by_name.get(pause.route)
            for loc in dataset.replicas if dataset is not None else ():
                if pause.destination in ("", loc.url):
                    found[loc.url] = pause
        return found

    async def end_expired_pauses(self, now: datetime | None = None) -> list[Pause]:
        """Remove the pauses whose ``until`` has passed (a scheduled resume); returns them.
        They are no longer in force either way: this keeps the table to what is."""
        now = now or _now()
        expired = [p for p in await self.pauses(now, include_expired=True) if not p.active(now)]
        if not expired:
            return []
        p = pauses.c
        async with self.database.write() as conn:
            await conn.execute(delete(pauses).where(p.until.is_not(None), p.until <= now))
        return expired
