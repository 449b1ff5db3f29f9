"""Writes of source changes and their replicas: the per-key high-water compare-and-set,
pending/replicated/failed/deleted rows, all group-committed.

Correctness under concurrency (several daemons on one PostgreSQL catalog) rests on two rules:

* Every write is one upsert whose ``WHERE`` compares sequencers, so it applies only if it does
  not move a row backwards: the per-key high-water is a compare-and-set (``excluded.sequencer >
  high_water.sequencer``), and a replica row changes only for a newer source change, or for the
  same change moving forward (pending -> failed -> replicated). The final state of a row is then
  the same whatever order concurrent writes commit in, and a stale or duplicate event can never
  roll a record back.
* ``record_replica`` takes what the destination store reported after the copy engine verified
  the write (``Replica.from_copy`` exists only for a verified copy), so a replicated row always
  describes verified bytes.

Concurrent writes are group-committed (``batching.GroupCommit``): each write still waits for the
commit of its own transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import (
    ColumnElement,
    Row,
    Table,
    and_,
    case,
    delete,
    func,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import KeyedColumnElement

from replicator.catalog.base import (
    _APPLIED,
    _ONE,
    _UNAPPLIED,
    _ZERO,
    CatalogBase,
    Excluded,
    _now,
)
from replicator.catalog.batching import GroupCommit
from replicator.catalog.database import dialect_insert
from replicator.catalog.lag import LagMetrics, Route
from replicator.catalog.model import (
    UNAPPLIED,
    Acceptance,
    CatalogError,
    Change,
    Dataset,
    Location,
    Replica,
    ReplicaState,
    Role,
)
from replicator.catalog.schema import (
    high_water,
    objects,
    replicas,
)
from replicator.catalog.sequencer import change_key, repair_key

log = structlog.get_logger(__name__)

_REPLICA_KEPT: list[ColumnElement[str]] = [
    literal_column(f"'{s}'")
    for s in (ReplicaState.RETAINED, ReplicaState.DELETE_SCHEDULED, ReplicaState.DELETE_PAUSED)
]


@dataclass
class _Write:
    """One write to the catalog, resolved to ids; ``kind`` picks the replica upsert."""

    kind: Literal["pending", "replicated", "deleted", "failed"]
    seq: str
    change: Change
    object_row: dict[str, Any] | None
    replica_rows: list[dict[str, Any]] = field(default_factory=list)
    route: Route | None = None
    lag_seconds: float | None = None


class ReplicaWrites(CatalogBase):
    """Accepting changes and recording what became of them at each destination."""

    metrics: LagMetrics | None
    slo: timedelta
    _writes: GroupCommit[_Write]

    # -- the per-key high-water -------------------------------------------------------------

    async def advance_high_water(
        self, source_url: str, sequencer: str, *, event_time: datetime, version: str | None = None
    ) -> bool:
        """Compare-and-set: raise the key's high-water to ``sequencer`` if it is higher.

        True if it was raised (the change is newer than anything seen for the key).
        """
        seq = change_key(source_url, sequencer, event_time)
        async with self.database.write() as conn:
            applied = await self._cas(conn, [(source_url, seq, version, event_time)])
        return source_url in applied

    async def _cas(
        self, conn: AsyncConnection, marks: Sequence[tuple[str, str, str | None, datetime]]
    ) -> set[str]:
        now = _now()
        rows = [
            {"source_url": u, "sequencer": s, "version": v, "event_time": t, "updated_at": now}
            for u, s, v, t in marks
        ]
        returned = await self._upsert(
            conn,
            "high_water",
            high_water,
            rows,
            conflict=("source_url",),
            update=lambda ex: {
                "sequencer": ex.sequencer,
                "version": ex.version,
                "event_time": ex.event_time,
                "updated_at": ex.updated_at,
            },
            where=lambda ex: ex.sequencer > high_water.c.sequencer,
        )
        return {row[0] for row in returned if row is not None}

    # -- replica state ----------------------------------------------------------------------

    async def mark_pending(
        self, change: Change, destinations: Sequence[str] | None = None
    ) -> Acceptance:
        """Accept a source change: compare-and-set the key's high-water, and if the change is
        new, record it on its object and mark its replicas pending.

        ``destinations`` are location URLs of the dataset (default: every replica location).
        A change outside every dataset is still deduplicated, but not tracked.
        """
        seq = self._seq(change)
        found = await self._resolve(change.source_url, Role.SOURCE)
        write = _Write("pending", seq, change, None)
        if found is not None:
            dataset, source, key = found
            targets = (
                dataset.replicas
                if destinations is None
                else [await self._location(dataset, url) for url in destinations]
            )
            write.object_row = _object_row(dataset.id, key, source.id, seq, change)
            now = _now()
            write.replica_rows = [
                {
                    **_replica_base(dataset.id, key, target.id, source.id, seq, change, now),
                    "state": str(ReplicaState.PENDING),
                    "source_size": change.size,
                    "pending_since": change.event_time,
                    "attempts": 0,
                }
                for target in targets
            ]
        result = await self._writes.submit(write)
        assert isinstance(result, Acceptance)
        return result

    async def accept_repair(
        self, change: Change, destinations: Sequence[str] | None = None
    ) -> Change | None:
        """Accept a repair of ``change``'s key: a listing saw its source in a state the replicas
        may not hold, but the key's high-water is newer than the listing (the event of the
        change it missed was lost, or the replica was changed behind our back). The repair is
        accepted as a new change ordered just after that high-water (``sequencer.repair_key``)
        and returned with that sequencer; None if a newer change was accepted meanwhile (its
        own event reads the source afresh and applies it).

        The caller must read the source only after this returns: every change the high-water
        had seen was then written at the source already, so the repair copies a state at
        least as new as all of them, and a change newer still is accepted after it.
        """
        async with self.database.read() as conn:
            found = await conn.execute(
                select(high_water.c.sequencer).where(high_water.c.source_url == change.source_url)
            )
            current = found.scalar_one_or_none()
        base = current if current is not None else self._seq(change)
        repair = replace(change, sequencer=repair_key(base, _now()))
        if await self.mark_pending(repair, destinations) is Acceptance.NEW:
            return repair
        return None

    async def record_replica(self, change: Change, location: str, replica: Replica) -> bool:
        """Record a verified replica of ``change`` at the dataset location ``location``.

        Lag is the replica's replicated time minus the change's event time. False if the row
        already holds this change or a newer one (nothing is rolled back).
        """
        dataset, source, key, target = await self._route_of(change, location)
        seq = self._seq(change)
        lag = (replica.replicated_time - change.event_time).total_seconds()
        now = _now()
        row = {
            **_replica_base(dataset.id, key, target.id, source.id, seq, change, now),
            "state": str(ReplicaState.REPLICATED),
            "source_version": replica.source_version,
            "source_size": replica.size,
            "pending_since": None,
            "version": replica.version,
            "etag": replica.etag,
            "size": replica.size,
            "fingerprint": replica.fingerprint,
            "checksums": dict(replica.checksums),
            "written_as": replica.written_as,
            "replicated_at": replica.replicated_time,
            "lag_seconds": lag,
            "attempts": 1,
        }
        object_row = _object_row(dataset.id, key, source.id, seq, change)
        object_row.update(
            source_version=replica.source_version,
            size=replica.size,
            fingerprint=replica.fingerprint,
            content_type=replica.content_type,
        )
        write = _Write(
            "replicated", seq, change, object_row, [row], Route(source.url, target.url), lag
        )
        result = await self._writes.submit(write)
        assert isinstance(result, bool)
        return result

    async def mark_deleted(self, change: Change, location: str, deleted_time: datetime) -> bool:
        """Record that the deletion ``change`` was applied at ``location``."""
        return await self._record_removal(change, location, ReplicaState.DELETED, deleted_time)

    async def mark_retained(
        self, change: Change, location: str, decided_time: datetime, *, note: str | None = None
    ) -> bool:
        """Record that ``change`` leaves the replica at ``location`` as it is: a deletion the
        route's policy never propagates, or (with a ``note`` saying why) a change that is not
        replicated, such as one to an object that is itself a replica."""
        return await self._record_removal(
            change, location, ReplicaState.RETAINED, decided_time, note=note
        )

    async def pause_delete(
        self, change: Change, location: str, *, when: datetime, reason: str
    ) -> bool:
        """Record that the deletion ``change`` at ``location`` is held back because the
        route's deletions are paused: still to do (it holds the watermark), carried out by the
        deletion sweeper once they are resumed."""
        return await self._record_removal(
            change, location, ReplicaState.DELETE_PAUSED, when, due=when, note=reason
        )

    async def schedule_delete(
        self, change: Change, location: str, *, due: datetime, decided_time: datetime
    ) -> bool:
        """Record that the deletion ``change`` reaches ``location`` at ``due`` (the route's
        delayed delete policy). A duplicate of the change keeps the first due time."""
        return await self._record_removal(
            change, location, ReplicaState.DELETE_SCHEDULED, decided_time, due=due
        )

    async def _record_removal(
        self,
        change: Change,
        location: str,
        state: ReplicaState,
        when: datetime,
        *,
        due: datetime | None = None,
        note: str | None = None,
    ) -> bool:
        dataset, source, key, target = await self._route_of(change, location)
        seq = self._seq(change)
        lag = (when - change.event_time).total_seconds()
        applied = state not in UNAPPLIED
        row = {
            **_replica_base(dataset.id, key, target.id, source.id, seq, change, _now()),
            "state": str(state),
            "pending_since": None if applied else change.event_time,
            "replicated_at": when if applied else None,
            "lag_seconds": lag if applied else None,
            "attempts": 1,
            "delete_due": due,
            "last_error": note,
        }
        object_row = _object_row(dataset.id, key, source.id, seq, change)
        # Only an applied change is observed as replicated (its latency, its SLO).
        route = Route(source.url, target.url) if applied else None
        write = _Write("deleted", seq, change, object_row, [row], route, lag)
        result = await self._writes.submit(write)
        assert isinstance(result, bool)
        return result

    async def mark_failed(self, change: Change, location: str, error: str) -> int | None:
        """Record a failed attempt to apply ``change`` at ``location``.

        Returns the number of attempts made for this change so far, or None if the replica
        already holds this change or a newer one (a late failure is not recorded).
        """
        dataset, source, key, target = await self._route_of(change, location)
        seq = self._seq(change)
        row = {
            **_replica_base(dataset.id, key, target.id, source.id, seq, change, _now()),
            "state": str(ReplicaState.FAILED),
            "source_size": change.size,
            "pending_since": change.event_time,
            "attempts": 1,
            "last_error": error,
            "first_failed_at": _now(),
        }
        object_row = _object_row(dataset.id, key, source.id, seq, change)
        write = _Write("failed", seq, change, object_row, [row], Route(source.url, target.url))
        result = await self._writes.submit(write)
        assert result is None or isinstance(result, int)
        return result

    async def forget_pending(self, dataset: str, location: str) -> int:
        """Drop the changes still to apply at ``location`` (a destination removed from its
        route: they will never be applied there and must not hold its watermark); replicas
        already there keep their rows. Returns how many were dropped."""
        found = await self.dataset(dataset)
        target = await self._location(found, location)
        async with self.database.write() as conn:
            result = await conn.execute(
                delete(replicas).where(
                    replicas.c.dataset_id == found.id,
                    replicas.c.location_id == target.id,
                    replicas.c.state.in_(_UNAPPLIED),
                )
            )
        return int(result.rowcount or 0)

    async def mark_stale(self, dataset: str, key: str, location: str) -> bool:
        """Mark a replica found behind its source (by a reconciliation) as stale: it is no
        longer served by ``locate`` and holds the watermark until replicated again."""
        found = await self.dataset(dataset)
        target = await self._location(found, location)
        async with self.database.write() as conn:
            result = await conn.execute(
                update(replicas)
                .where(
                    replicas.c.dataset_id == found.id,
                    replicas.c.key == key,
                    replicas.c.location_id == target.id,
                    replicas.c.state.in_(_APPLIED),
                )
                .values(
                    state=str(ReplicaState.STALE),
                    pending_since=replicas.c.source_event_time,
                    updated_at=_now(),
                )
            )
        return bool(result.rowcount)

    async def _route_of(
        self, change: Change, location: str
    ) -> tuple[Dataset, Location, str, Location]:
        dataset, source, key = await self.resolve(change.source_url, Role.SOURCE)
        return dataset, source, key, await self._location(dataset, location)

    def _seq(self, change: Change) -> str:
        if change.event_time.tzinfo is None:
            raise CatalogError("event times must be timezone-aware")
        return change_key(change.source_url, change.sequencer, change.event_time)

    async def _apply(self, batch: Sequence[_Write]) -> list[object]:
        """One transaction for a batch of writes; results in batch order.

        The writes of a batch were concurrent, so any order among them is a valid one; the
        sequencer guards make the outcome the same in every order anyway.
        """
        results: list[object] = [None] * len(batch)
        async with self.database.write() as conn:
            pending = [i for i, w in enumerate(batch) if w.kind == "pending"]
            accepted: set[int] = set()
            if pending:
                accepted = await self._accept(conn, batch, pending, results)
            # A change applied (or attempted) was seen: events older than it are stale.
            seen = [
                (w.change.source_url, w.seq, w.change.version, w.change.event_time)
                for w in batch
                if w.kind != "pending"
            ]
            if seen:
                await self._cas(conn, seen)
            effective = [i for i, w in enumerate(batch) if w.kind != "pending" or i in accepted]
            object_rows = [batch[i].object_row for i in effective]
            await self._upsert_objects(conn, [r for r in object_rows if r is not None])
            for kind in ("pending", "replicated", "deleted", "failed"):
                chosen = [i for i in effective if batch[i].kind == kind]
                rows = [(i, row) for i in chosen for row in batch[i].replica_rows]
                if not rows:
                    continue
                returned = await self._upsert_replicas(conn, kind, [r for _, r in rows])
                if kind == "pending":
                    continue
                for (i, _), got in zip(rows, returned, strict=True):
                    if kind == "failed":
                        results[i] = None if got is None else int(got[-1])
                    else:
                        results[i] = got is not None
        self._observe(batch, results)
        return results

    async def _accept(
        self,
        conn: AsyncConnection,
        batch: Sequence[_Write],
        indexes: list[int],
        results: list[object],
    ) -> set[int]:
        accepted: set[int] = set()
        # Two changes of one key in one batch: the second is compared with the first.
        for round_ in _rounds(indexes, key=lambda i: batch[i].change.source_url):
            applied = await self._cas(
                conn,
                [
                    (w.change.source_url, w.seq, w.change.version, w.change.event_time)
                    for w in (batch[i] for i in round_)
                ],
            )
            refused = [batch[i].change.source_url for i in round_]
            refused = [url for url in refused if url not in applied]
            current: dict[str, str] = {}
            if refused:
                found = await conn.execute(
                    select(high_water.c.source_url, high_water.c.sequencer).where(
                        high_water.c.source_url.in_(refused)
                    )
                )
                current = {url: seq for url, seq in found.all()}
            for i in round_:
                url, seq = batch[i].change.source_url, batch[i].seq
                if url in applied:
                    results[i] = Acceptance.NEW
                    accepted.add(i)
                else:
                    same = current.get(url) == seq
                    results[i] = Acceptance.DUPLICATE if same else Acceptance.STALE
                    if not same:
                        await self._hold_watermark(conn, batch[i])
        return accepted

    async def _hold_watermark(self, conn: AsyncConnection, write: _Write) -> None:
        """An older change arriving after a newer one of its key is superseded, but its
        effect reaches the replicas only with the newer change: until that is applied, the
        watermark must not pass the older change's event time."""
        r = replicas.c
        for row in write.replica_rows:
            await conn.execute(
                update(replicas)
                .where(
                    r.dataset_id == row["dataset_id"],
                    r.key == row["key"],
                    r.location_id == row["location_id"],
                    r.state.in_(_UNAPPLIED),
                    r.pending_since > write.change.event_time,
                )
                .values(pending_since=write.change.event_time)
            )

    async def _upsert_objects(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        def newer(ex: Excluded) -> ColumnElement[bool]:
            return ex.source_sequencer > objects.c.source_sequencer

        def latest(ex: Excluded, column: str) -> ColumnElement[Any]:
            # A newer change replaces what is known; the same change only fills gaps.
            return case(
                (newer(ex), ex[column]),
                else_=func.coalesce(ex[column], objects.c[column]),
            )

        await self._upsert(
            conn,
            "objects",
            objects,
            rows,
            conflict=("dataset_id", "key"),
            update=lambda ex: {
                "source_location_id": ex.source_location_id,
                "source_sequencer": ex.source_sequencer,
                "source_event_time": ex.source_event_time,
                "deleted": ex.deleted,
                "updated_at": ex.updated_at,
                **{
                    c: latest(ex, c)
                    for c in ("source_version", "size", "etag", "fingerprint", "content_type")
                },
            },
            where=lambda ex: ex.source_sequencer >= objects.c.source_sequencer,
        )

    async def _upsert_replicas(
        self, conn: AsyncConnection, kind: str, rows: list[dict[str, Any]]
    ) -> list[Row[Any] | None]:
        r = replicas.c

        def same(ex: Excluded) -> ColumnElement[bool]:
            return ex.source_sequencer == r.source_sequencer

        def newer(ex: Excluded) -> ColumnElement[bool]:
            return ex.source_sequencer > r.source_sequencer

        def forward(ex: Excluded) -> ColumnElement[bool]:
            # A newer change, or the same change not yet applied here.
            return or_(newer(ex), and_(same(ex), r.state.not_in(_APPLIED)))

        def earliest_pending(ex: Excluded) -> ColumnElement[Any]:
            # An unapplied older change keeps its (earlier) event time as the pending start.
            return case(
                (
                    and_(r.state.in_(_UNAPPLIED), r.pending_since < ex.pending_since),
                    r.pending_since,
                ),
                else_=ex.pending_since,
            )

        def source(ex: Excluded) -> dict[str, Any]:
            return {
                "source_location_id": ex.source_location_id,
                "state": ex.state,
                "source_sequencer": ex.source_sequencer,
                "source_version": ex.source_version,
                "source_event_time": ex.source_event_time,
                "source_size": ex.source_size,
                "delete_due": ex.delete_due,
                "updated_at": ex.updated_at,
                "claimed_until": ex.claimed_until,
                # The first failure of a change is kept while it fails again.
                "first_failed_at": case(
                    (
                        and_(
                            same(ex),
                            r.first_failed_at.is_not(None),
                            ex.first_failed_at.is_not(None),
                        ),
                        r.first_failed_at,
                    ),
                    else_=ex.first_failed_at,
                ),
            }

        def attempts(ex: Excluded) -> ColumnElement[Any]:
            return case((same(ex), r.attempts + _ONE), else_=_ONE)

        update_: Callable[[Excluded], dict[str, Any]]
        where: Callable[[Excluded], ColumnElement[bool]]
        if kind == "pending":

            def update_(ex: Excluded) -> dict[str, Any]:
                return {
                    **source(ex),
                    "pending_since": earliest_pending(ex),
                    "attempts": _ZERO,
                    "last_error": null(),
                }

            where = newer
        elif kind == "failed":

            def update_(ex: Excluded) -> dict[str, Any]:
                return {
                    **source(ex),
                    "pending_since": earliest_pending(ex),
                    "attempts": attempts(ex),
                    "last_error": ex.last_error,
                }

            where = forward
        else:

            def update_(ex: Excluded) -> dict[str, Any]:
                held = ("version", "etag", "size", "fingerprint", "checksums", "written_as")
                # A deletion that leaves the replica in place (retained, or scheduled for
                # later) keeps what is known of it: the sweeper deletes only that replica.
                kept = ex.state.in_(_REPLICA_KEPT)
                return {
                    **source(ex),
                    **{c: case((kept, r[c]), else_=ex[c]) for c in held},
                    # Applied: nothing pending; a deletion held back by a pause is pending.
                    "pending_since": case(
                        (ex.pending_since.is_(None), null()), else_=earliest_pending(ex)
                    ),
                    "replicated_at": ex.replicated_at,
                    "lag_seconds": ex.lag_seconds,
                    "attempts": attempts(ex),
                    "last_error": ex.last_error,
                }

            where = forward
        return await self._upsert(
            conn,
            f"replicas-{kind}",
            replicas,
            rows,
            conflict=("dataset_id", "key", "location_id"),
            update=update_,
            where=where,
            returning=(r.attempts,),
        )

    async def _upsert(
        self,
        conn: AsyncConnection,
        name: str,
        table: Table,
        rows: list[dict[str, Any]],
        *,
        conflict: tuple[str, ...],
        update: Callable[[Excluded], Mapping[str, Any]],
        where: Callable[[Excluded], ColumnElement[bool]],
        returning: tuple[KeyedColumnElement[Any], ...] = (),
    ) -> list[Row[Any] | None]:
        """INSERT ... ON CONFLICT DO UPDATE ... WHERE for many rows; for each row, the
        RETURNING row (conflict columns, then ``returning``) if it was written, else None.

        The statement is built once per ``name`` and executed with many parameter sets, which
        the driver layer sends as multi-row statements. Rows are split into rounds without
        repeated conflict keys (a statement may touch a row once), each round sorted by key so
        that concurrent transactions lock rows in the same order and cannot deadlock.
        """
        stmt = self._statements.get(name)
        if stmt is None:
            columns = (*(table.c[c] for c in conflict), *returning)
            insert = dialect_insert(self.database.backend, table)
            stmt = insert.on_conflict_do_update(
                index_elements=list(conflict),
                set_=update(insert.excluded),
                where=where(insert.excluded),
            ).returning(*columns)
            self._statements[name] = stmt
        out: list[Row[Any] | None] = [None] * len(rows)

        def key_of(row: dict[str, Any]) -> tuple[Any, ...]:
            return tuple(row[c] for c in conflict)

        for round_ in _rounds(list(enumerate(rows)), key=lambda item: key_of(item[1])):
            round_.sort(key=lambda item: key_of(item[1]))
            result = await conn.execute(stmt, [row for _, row in round_])
            written = {tuple(row[: len(conflict)]): row for row in result.all()}
            for i, row in round_:
                out[i] = written.get(key_of(row))
        return out

    def _observe(self, batch: Sequence[_Write], results: Sequence[object]) -> None:
        for write, result in zip(batch, results, strict=True):
            if write.route is None or result in (None, False):
                continue
            if write.kind == "failed":
                if self.metrics is not None:
                    self.metrics.observe_failed(write.route)
                continue
            lag = write.lag_seconds if write.lag_seconds is not None else 0.0
            missed = lag > self.slo.total_seconds()
            if missed:
                log.warning(
                    "replication latency objective missed",
                    route=str(write.route),
                    source=write.change.source_url,
                    lag_seconds=round(lag, 3),
                    slo_seconds=self.slo.total_seconds(),
                )
            if self.metrics is not None:
                self.metrics.observe_replicated(write.route, lag, missed_slo=missed)


def _rounds(items: Iterable[Any], key: Callable[[Any], Any]) -> list[list[Any]]:
    """Split ``items`` into rounds in which no key repeats, keeping each key's order."""
    rounds: list[list[Any]] = []
    seen: dict[Any, int] = {}
    for item in items:
        k = key(item)
        n = seen.get(k, 0)
        seen[k] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(item)
    return rounds


def _object_row(
    dataset_id: int, key: str, source_id: int, seq: str, change: Change
) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "key": key,
        "source_location_id": source_id,
        "source_sequencer": seq,
        "source_version": change.version,
        "source_event_time": change.event_time,
        "size": None if change.deleted else change.size,
        "etag": None if change.deleted else change.etag,
        "fingerprint": None,
        "content_type": None,
        "deleted": change.deleted,
        "updated_at": _now(),
    }


def _replica_base(
    dataset_id: int,
    key: str,
    location_id: int,
    source_id: int,
    seq: str,
    change: Change,
    now: datetime,
) -> dict[str, Any]:
    """Every column of a replica row (multi-row inserts need the same keys in every row)."""
    return {
        "dataset_id": dataset_id,
        "key": key,
        "location_id": location_id,
        "source_location_id": source_id,
        "source_sequencer": seq,
        "source_version": change.version,
        "source_event_time": change.event_time,
        "source_size": None,
        "pending_since": None,
        "version": None,
        "etag": None,
        "size": None,
        "fingerprint": None,
        "checksums": None,
        "written_as": None,
        "replicated_at": None,
        "lag_seconds": None,
        "attempts": 0,
        "last_error": None,
        "delete_due": None,
        "updated_at": now,
        "claimed_until": None,
        "first_failed_at": None,
    }
