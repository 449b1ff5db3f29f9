"""Daily cost totals per route, destination and store (``replicator catalog costs``, the
status pages): daemons add what their ledgers counted (``replicator.engine.costs``) in
batches, one transaction per flush, every daemon of a group adding to the same rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import select

from replicator.catalog.base import CatalogBase
from replicator.catalog.model import CostRow
from replicator.catalog.schema import COST_COUNTS, route_costs
from replicator.engine.costs import Usage, UsageKey


class CostRecords(CatalogBase):
    async def add_costs(self, rows: Sequence[CostRow]) -> None:
        """Add ``rows`` to the day's totals, in one transaction."""
        if not rows:
            return
        values = [
            {
                "day": row.day,
                "route": row.key.route,
                "destination": row.key.destination,
                "store": row.key.store,
                **row.usage.as_dict(),
                "cost_usd": row.cost_usd,
            }
            for row in rows
        ]
        stmt = self._insert(route_costs)
        stmt = stmt.on_conflict_do_update(
            index_elements=["day", "route", "destination", "store"],
            set_={
                name: route_costs.c[name] + stmt.excluded[name]
                for name in (*COST_COUNTS, "cost_usd")
            },
        )
        async with self.database.write() as conn:
            for value in values:
                await conn.execute(stmt, value)

    async def costs(self, since: date, route: str | None = None) -> list[CostRow]:
        """The daily rows from ``since`` on, by day, route, destination and store."""
        columns = route_costs.c
        query = select(route_costs).where(columns.day >= since)
        if route is not None:
            query = query.where(columns.route == route)
        query = query.order_by(columns.day, columns.route, columns.destination, columns.store)
        async with self.database.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            CostRow(
                day=row["day"],
                key=UsageKey(row["route"], row["destination"], row["store"]),
                usage=Usage.of({name: int(row[name]) for name in COST_COUNTS}),
                cost_usd=float(row["cost_usd"]),
            )
            for row in rows
        ]
