"""The consistency figures read from the replica rows: what is behind (``stale``) and each
route's lag, pending work and watermark (``route_lag``; definitions in ``catalog.lag``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    func,
    select,
)

from replicator.catalog.base import (
    _APPLIED,
    _UNAPPLIED,
    MAX_LIST,
    CatalogBase,
)
from replicator.catalog.lag import Route, RouteLag, nearest_rank, watermark
from replicator.catalog.model import (
    CatalogError,
    ReplicaState,
    StaleReplica,
    UnknownLocation,
)
from replicator.catalog.schema import (
    replicas,
)


class LagQueries(CatalogBase):
    """Per-route lag and the list of replicas behind their source."""

    slo: timedelta

    async def stale(
        self,
        *,
        destination: str | None = None,
        source: str | None = None,
        limit: int = 1000,
    ) -> list[StaleReplica]:
        """Replicas not holding their newest change (pending, failed or stale), oldest first,
        optionally of one route (given by its destination and/or source location URL)."""
        if not 1 <= limit <= MAX_LIST:
            raise CatalogError(f"limit must be between 1 and {MAX_LIST}")
        index = await self._load_index()
        by_url = {loc.url: loc for loc in index.by_id.values()}
        conditions: list[ColumnElement[bool]] = [replicas.c.state.in_(_UNAPPLIED)]
        for url, column in (
            (destination, replicas.c.location_id),
            (source, replicas.c.source_location_id),
        ):
            if url is not None:
                if url not in by_url:
                    raise UnknownLocation(f"{url} is not a dataset location")
                conditions.append(column == by_url[url].id)
        async with self.database.read() as conn:
            rows = (
                await conn.execute(
                    select(replicas)
                    .where(*conditions)
                    .order_by(replicas.c.pending_since, replicas.c.key, replicas.c.location_id)
                    .limit(limit)
                )
            ).all()
        out = []
        for row in rows:
            target = index.by_id[row.location_id]
            origin = index.by_id[row.source_location_id]
            out.append(
                StaleReplica(
                    dataset=target.dataset,
                    key=row.key,
                    url=target.url + row.key,
                    route=str(Route(origin.url, target.url)),
                    state=ReplicaState(row.state),
                    source_version=row.source_version,
                    pending_since=row.pending_since,
                    attempts=row.attempts,
                    last_error=row.last_error,
                )
            )
        return out

    async def route_lag(
        self,
        *,
        since: datetime | None = None,
        destination: str | None = None,
        percentiles: bool = True,
        held: Callable[[str], datetime | None] | None = None,
    ) -> list[RouteLag]:
        """The consistency figures of every route, or of the routes into ``destination`` (a
        location URL); see ``replicator.catalog.lag``. Latency figures cover changes applied at or
        after ``since`` (default: every current replica). ``percentiles=False`` leaves out
        p50/p99, which sort each route's replicas (the metrics gauges do not need them).

        ``held(source_location_url)``: the oldest event time of changes under that source that
        this process holds and has not recorded yet (its ingest backlog); it holds the route's
        watermark back like an unapplied change in the catalog."""
        index = await self._load_index()
        r = replicas.c
        routes: list[ColumnElement[bool]] = []
        if destination is not None:
            target = next((loc for loc in index.by_id.values() if loc.url == destination), None)
            if target is None:
                raise UnknownLocation(f"{destination} is not a dataset location")
            routes.append(r.location_id == target.id)
        unapplied = r.state.in_(_UNAPPLIED)
        applied = r.state.in_(_APPLIED)
        scheduled = r.state == str(ReplicaState.DELETE_SCHEDULED)
        timed = and_(applied, r.lag_seconds.is_not(None))
        if since is not None:
            timed = and_(timed, r.replicated_at >= since)
        slo = self.slo.total_seconds()
        aggregate = (
            select(
                r.source_location_id,
                r.location_id,
                func.sum(case((unapplied, 1), else_=0)),
                func.sum(case((unapplied, func.coalesce(r.source_size, 0)), else_=0)),
                func.sum(case((r.state == str(ReplicaState.FAILED), 1), else_=0)),
                func.sum(case((timed, 1), else_=0)),
                func.max(case((timed, r.lag_seconds))),
                func.sum(case((and_(timed, r.lag_seconds > slo), 1), else_=0)),
                func.min(case((unapplied, r.pending_since))),
                func.max(case((applied, r.source_event_time))),
                func.sum(case((scheduled, 1), else_=0)),
                func.min(case((scheduled, r.delete_due))),
            )
            .where(*routes)
            .group_by(r.source_location_id, r.location_id)
        )
        out = []
        async with self.database.read() as conn:
            for row in (await conn.execute(aggregate)).all():
                (
                    src_id,
                    dst_id,
                    pending,
                    size,
                    failed,
                    timed_count,
                    worst,
                    missed,
                    oldest,
                    newest,
                    deletes,
                    next_due,
                ) = row
                route_filter = and_(timed, r.source_location_id == src_id, r.location_id == dst_id)
                quantiles: dict[float, float | None] = {}
                for q in (0.5, 0.99):
                    quantiles[q] = None
                    if timed_count and percentiles:
                        quantiles[q] = (
                            await conn.execute(
                                select(r.lag_seconds)
                                .where(route_filter)
                                .order_by(r.lag_seconds)
                                .offset(nearest_rank(int(timed_count), q))
                                .limit(1)
                            )
                        ).scalar_one()
                out.append(
                    RouteLag(
                        route=Route(index.by_id[src_id].url, index.by_id[dst_id].url),
                        pending_ops=int(pending or 0),
                        pending_bytes=int(size or 0),
                        failed_ops=int(failed or 0),
                        replicated_ops=int(timed_count or 0),
                        latency_max_seconds=_seconds(worst),
                        latency_p50_seconds=_seconds(quantiles[0.5]),
                        latency_p99_seconds=_seconds(quantiles[0.99]),
                        slo_missed=int(missed or 0),
                        oldest_pending=oldest,
                        watermark=watermark(
                            _earliest(oldest, held(index.by_id[src_id].url) if held else None),
                            newest,
                        ),
                        deletes_scheduled=int(deletes or 0),
                        next_delete_due=next_due,
                    )
                )
        return sorted(out, key=lambda lag: lag.route)


def _seconds(value: Any) -> float | None:
    """Seconds from an aggregate (float or Decimal); skew-negative latencies count as zero."""
    return None if value is None else max(0.0, float(value))


def _earliest(*times: datetime | None) -> datetime | None:
    return min((t for t in times if t is not None), default=None)
