"""The catalog: datasets and their locations, objects, replicas, per-key high-water marks.

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

import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self

import structlog
from sqlalchemy import (
    ColumnElement,
    Row,
    Table,
    and_,
    case,
    func,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import KeyedColumnElement

from connectors import parse_store_url
from connectors.base import InvalidStoreURL
from replicator.catalog.batching import GroupCommit
from replicator.catalog.database import Database, dialect_insert, open_database
from replicator.catalog.journal import CatalogJournal
from replicator.catalog.model import (
    APPLIED,
    UNAPPLIED,
    Acceptance,
    CatalogError,
    Change,
    Dataset,
    Location,
    LocationSpec,
    LocationStatus,
    ObjectEntry,
    Replica,
    ReplicaState,
    Role,
    ScheduledDelete,
    StaleReplica,
    UnknownDataset,
    UnknownLocation,
)
from replicator.catalog.schema import (
    checkpoints,
    datasets,
    high_water,
    locations,
    objects,
    replicas,
)
from replicator.catalog.sequencer import change_key
from replicator.lag import DEFAULT_SLO, LagMetrics, Route, RouteLag, nearest_rank, watermark

log = structlog.get_logger(__name__)

_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Locations added by another process become visible to this one within this time.
_INDEX_TTL = timedelta(seconds=30)
MAX_LIST = 10_000

Excluded = ReadOnlyColumnCollection[str, KeyedColumnElement[Any]]
# Constants inside the upserts are SQL literals, not bound parameters: the upserts run with
# many parameter sets, which are sent as multi-row statements only when every bound parameter
# belongs to a row.
# What a listing shows: fewer columns to fetch and convert (times and JSON are costly).
_LISTED_OBJECT = [
    objects.c[c]
    for c in (
        "key",
        "source_location_id",
        "source_sequencer",
        "source_version",
        "source_event_time",
        "size",
        "etag",
        "fingerprint",
        "content_type",
        "deleted",
    )
]
_LISTED_REPLICA = [
    replicas.c[c]
    for c in (
        "key",
        "location_id",
        "state",
        "source_sequencer",
        "version",
        "etag",
        "size",
        "replicated_at",
        "lag_seconds",
        "attempts",
        "last_error",
    )
]
_REPLICATED = str(ReplicaState.REPLICATED)
_ZERO: ColumnElement[int] = literal_column("0")
_ONE: ColumnElement[int] = literal_column("1")
_APPLIED: list[ColumnElement[str]] = [literal_column(f"'{s}'") for s in APPLIED]
_UNAPPLIED: list[ColumnElement[str]] = [literal_column(f"'{s}'") for s in UNAPPLIED]


async def open_catalog(
    url: str,
    *,
    metrics: LagMetrics | None = None,
    slo: timedelta = DEFAULT_SLO,
) -> Catalog:
    """Open (creating or migrating as needed) the catalog at ``url``."""
    database = await open_database(url)
    return Catalog(database, metrics=metrics, slo=slo)


class _Index:
    """Datasets and locations, cached: they change rarely and every write needs them."""

    def __init__(self, found: Sequence[Dataset], loaded: datetime) -> None:
        self.loaded = loaded
        self.by_name = {d.name: d for d in found}
        self.by_id = {loc.id: loc for d in found for loc in d.locations}
        self.dataset_by_id = {d.id: d for d in found}
        # Longest prefix first, so a nested location wins over its parent.
        self.prefixes = sorted(self.by_id.values(), key=lambda loc: len(loc.url), reverse=True)

    def resolve(self, url: str, role: Role | None = None) -> tuple[Dataset, Location, str] | None:
        for loc in self.prefixes:
            inside = url.startswith(loc.url) and len(url) > len(loc.url)
            if inside and (role is None or loc.role is role):
                return self.by_name[loc.dataset], loc, url[len(loc.url) :]
        return None


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


class Catalog:
    """The repository API over one open catalog database."""

    def __init__(
        self,
        database: Database,
        *,
        metrics: LagMetrics | None = None,
        slo: timedelta = DEFAULT_SLO,
    ) -> None:
        self.database = database
        self.metrics = metrics
        self.slo = slo
        self._index: _Index | None = None
        self._statements: dict[str, Any] = {}
        self._writes: GroupCommit[_Write] = GroupCommit(self._apply)

    @property
    def url(self) -> str:
        return self.database.display_url

    async def close(self) -> None:
        await self._writes.close()
        await self.database.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def journal(self) -> CatalogJournal:
        """An UploadJournal for the copy engine, persisted in this catalog."""
        return CatalogJournal(self.database)

    # -- datasets ---------------------------------------------------------------------------

    async def add_dataset(self, name: str, specs: Sequence[LocationSpec]) -> Dataset:
        """Create ``name`` or add locations to it; a known location gets the new role/region."""
        if not _DATASET_NAME.fullmatch(name):
            raise CatalogError(
                f"invalid dataset name {name!r}: letters, digits, '.', '_' and '-' only"
            )
        for spec in specs:
            _check_location(spec)
        now = _now()
        async with self.database.writer.begin() as conn:
            await conn.execute(
                self._insert(datasets)
                .values(name=name, created_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            dataset_id = (
                await conn.execute(select(datasets.c.id).where(datasets.c.name == name))
            ).scalar_one()
            for spec in specs:
                owner = (
                    await conn.execute(
                        select(datasets.c.name)
                        .join(locations, locations.c.dataset_id == datasets.c.id)
                        .where(locations.c.url == spec.url)
                    )
                ).scalar_one_or_none()
                if owner is not None and owner != name:
                    raise CatalogError(f"{spec.url} is already a location of dataset {owner}")
                stmt = self._insert(locations).values(
                    dataset_id=dataset_id,
                    url=spec.url,
                    role=str(spec.role),
                    region=spec.region,
                    created_at=now,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["url"],
                        set_={"role": stmt.excluded.role, "region": stmt.excluded.region},
                    )
                )
        index = await self._load_index()
        return index.by_name[name]

    async def datasets(self) -> list[Dataset]:
        index = await self._load_index()
        return sorted(index.by_name.values(), key=lambda d: d.name)

    async def dataset(self, name: str) -> Dataset:
        index = await self._fresh_index()
        found = index.by_name.get(name)
        if found is None:
            index = await self._load_index()
            found = index.by_name.get(name)
        if found is None:
            raise UnknownDataset(f"no dataset named {name!r}")
        return found

    async def resolve(self, url: str, role: Role | None = None) -> tuple[Dataset, Location, str]:
        """The dataset, location and key of an object URL (the longest matching location)."""
        found = await self._resolve(url, role)
        if found is None:
            raise UnknownLocation(f"{url} is under no dataset location")
        return found

    async def _resolve(self, url: str, role: Role | None) -> tuple[Dataset, Location, str] | None:
        found = (await self._fresh_index()).resolve(url, role)
        if found is None:
            found = (await self._load_index()).resolve(url, role)
        return found

    async def _location(self, dataset: Dataset, url: str) -> Location:
        try:
            return dataset.location(url)
        except UnknownLocation:
            return (await self.dataset(dataset.name)).location(url)

    async def _fresh_index(self) -> _Index:
        if self._index is None or _now() - self._index.loaded > _INDEX_TTL:
            return await self._load_index()
        return self._index

    async def _load_index(self) -> _Index:
        async with self.database.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        datasets.c.id,
                        datasets.c.name,
                        locations.c.id,
                        locations.c.url,
                        locations.c.role,
                        locations.c.region,
                    )
                    .select_from(datasets)
                    .outerjoin(locations, locations.c.dataset_id == datasets.c.id)
                    .order_by(datasets.c.name, locations.c.role.desc(), locations.c.url)
                )
            ).all()
        grouped: dict[tuple[int, str], list[Location]] = {}
        for dataset_id, name, loc_id, url, role, region in rows:
            members = grouped.setdefault((dataset_id, name), [])
            if loc_id is not None:
                members.append(Location(loc_id, name, url, Role(role), region))
        self._index = _Index(
            [Dataset(i, n, tuple(locs)) for (i, n), locs in grouped.items()], _now()
        )
        return self._index

    # -- the per-key high-water -------------------------------------------------------------

    async def advance_high_water(
        self, source_url: str, sequencer: str, *, event_time: datetime, version: str | None = None
    ) -> bool:
        """Compare-and-set: raise the key's high-water to ``sequencer`` if it is higher.

        True if it was raised (the change is newer than anything seen for the key).
        """
        seq = change_key(source_url, sequencer, event_time)
        async with self.database.writer.begin() as conn:
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

    async def mark_retained(self, change: Change, location: str, decided_time: datetime) -> bool:
        """Record that the deletion ``change`` leaves the replica at ``location`` in place (the
        route's policy never deletes replicas)."""
        return await self._record_removal(change, location, ReplicaState.RETAINED, decided_time)

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
    ) -> bool:
        dataset, source, key, target = await self._route_of(change, location)
        seq = self._seq(change)
        lag = (when - change.event_time).total_seconds()
        row = {
            **_replica_base(dataset.id, key, target.id, source.id, seq, change, _now()),
            "state": str(state),
            "pending_since": None,
            "replicated_at": when,
            "lag_seconds": lag,
            "attempts": 1,
            "delete_due": due,
        }
        object_row = _object_row(dataset.id, key, source.id, seq, change)
        write = _Write(
            "deleted", seq, change, object_row, [row], Route(source.url, target.url), lag
        )
        result = await self._writes.submit(write)
        assert isinstance(result, bool)
        return result

    # -- delayed deletions ------------------------------------------------------------------

    async def due_deletes(self, now: datetime, *, limit: int = 100) -> list[ScheduledDelete]:
        """Scheduled deletions due at ``now``, the longest overdue first."""
        index = await self._load_index()
        r = replicas.c
        async with self.database.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        r.key, r.location_id, r.source_location_id, r.source_sequencer, r.delete_due
                    )
                    .where(r.state == str(ReplicaState.DELETE_SCHEDULED), r.delete_due <= now)
                    .order_by(r.delete_due, r.key, r.location_id)
                    .limit(limit)
                )
            ).all()
        out = []
        for key, location_id, source_id, seq, due in rows:
            target, origin = index.by_id[location_id], index.by_id[source_id]
            out.append(ScheduledDelete(target.dataset, key, origin.url + key, target.url, seq, due))
        return out

    async def scheduled_delete_count(self) -> int:
        async with self.database.reader.connect() as conn:
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
            values["replicated_at"] = when
        elif state is ReplicaState.STALE:
            values["pending_since"] = replicas.c.source_event_time
        elif state is not ReplicaState.RETAINED:
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
        async with self.database.writer.begin() as conn:
            result = await conn.execute(
                update(replicas)
                .where(
                    r.dataset_id == found.id,
                    r.key == item.key,
                    r.location_id == target.id,
                    r.state == str(ReplicaState.DELETE_SCHEDULED),
                    r.source_sequencer == item.sequencer,
                    *conditions,
                )
                .values(**values, updated_at=_now())
            )
        return bool(result.rowcount)

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
        }
        object_row = _object_row(dataset.id, key, source.id, seq, change)
        write = _Write("failed", seq, change, object_row, [row], Route(source.url, target.url))
        result = await self._writes.submit(write)
        assert result is None or isinstance(result, int)
        return result

    async def mark_stale(self, dataset: str, key: str, location: str) -> bool:
        """Mark a replica found behind its source (by a reconciliation) as stale: it is no
        longer served by ``locate`` and holds the watermark until replicated again."""
        found = await self.dataset(dataset)
        target = await self._location(found, location)
        async with self.database.writer.begin() as conn:
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
        async with self.database.writer.begin() as conn:
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
                held = ("version", "etag", "size", "fingerprint", "checksums")
                return {
                    **source(ex),
                    **{c: ex[c] for c in held},
                    "pending_since": null(),
                    "replicated_at": ex.replicated_at,
                    "lag_seconds": ex.lag_seconds,
                    "attempts": attempts(ex),
                    "last_error": null(),
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

    def _insert(self, table: Table) -> Any:
        return dialect_insert(self.database.backend, table)

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

    # -- checkpoints ------------------------------------------------------------------------

    async def set_checkpoint(self, name: str, value: str) -> None:
        async with self.database.writer.begin() as conn:
            stmt = self._insert(checkpoints).values(name=name, value=value, updated_at=_now())
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"],
                    set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
                )
            )

    async def checkpoint(self, name: str) -> str | None:
        async with self.database.reader.connect() as conn:
            value: str | None = (
                await conn.execute(select(checkpoints.c.value).where(checkpoints.c.name == name))
            ).scalar_one_or_none()
            return value

    # -- queries ----------------------------------------------------------------------------

    async def ls(
        self,
        dataset: str,
        prefix: str = "",
        *,
        after: str | None = None,
        limit: int = 1000,
        include_deleted: bool = False,
    ) -> list[ObjectEntry]:
        """Objects of ``dataset`` under ``prefix`` in key order (after ``after``), each with
        every location of the dataset and whether it holds the newest version."""
        if not 1 <= limit <= MAX_LIST:
            raise CatalogError(f"limit must be between 1 and {MAX_LIST}")
        found = await self.dataset(dataset)
        o = objects.c
        conditions: list[ColumnElement[bool]] = [o.dataset_id == found.id]
        if prefix:
            conditions.append(o.key >= prefix)
            end = _prefix_end(prefix)
            if end is not None:
                conditions.append(o.key < end)
        if after is not None:
            conditions.append(o.key > after)
        if not include_deleted:
            conditions.append(o.deleted.is_(False))
        async with self.database.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_LISTED_OBJECT).where(*conditions).order_by(o.key).limit(limit)
                )
            ).all()
            if not rows:
                return []
            held = (
                await conn.execute(
                    select(*_LISTED_REPLICA).where(
                        replicas.c.dataset_id == found.id,
                        replicas.c.key >= rows[0].key,
                        replicas.c.key <= rows[-1].key,
                    )
                )
            ).all()
        by_key: dict[str, list[Row[Any]]] = {}
        for replica in held:
            by_key.setdefault(replica.key, []).append(replica)
        return [_entry(found, row, by_key.get(row.key, [])) for row in rows]

    async def locate(self, dataset: str, key: str, prefer: str | None = None) -> LocationStatus:
        """The best location holding the newest version of ``dataset``/``key``.

        Only fresh copies qualify (the source, or a replica verified at the newest known
        version); among them one in the preferred region or store kind first, then the source,
        then the replica that caught up fastest.
        """
        entries = await self.ls(dataset, key, limit=1)
        entry = entries[0] if entries and entries[0].key == key else None
        if entry is None:
            raise CatalogError(f"{dataset}/{key} is not in the catalog (or is deleted)")
        fresh = [loc for loc in entry.locations if loc.fresh]
        if not fresh:
            raise CatalogError(f"no fresh copy of {dataset}/{key}")
        found = await self.dataset(dataset)

        def rank(status: LocationStatus) -> tuple[bool, bool, float]:
            where = found.location(status.location)
            preferred = prefer is not None and where.matches(prefer)
            return (not preferred, status.role is not Role.SOURCE, status.lag_seconds or 0.0)

        return min(fresh, key=rank)

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
        async with self.database.reader.connect() as conn:
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
    ) -> list[RouteLag]:
        """The consistency figures of every route, or of the routes into ``destination`` (a
        location URL); see ``replicator.lag``. Latency figures cover changes applied at or
        after ``since`` (default: every current replica). ``percentiles=False`` leaves out
        p50/p99, which sort each route's replicas (the metrics gauges do not need them)."""
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
        async with self.database.reader.connect() as conn:
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
                        watermark=watermark(oldest, newest),
                        deletes_scheduled=int(deletes or 0),
                        next_delete_due=next_due,
                    )
                )
        return sorted(out, key=lambda lag: lag.route)

    async def export_entries(
        self, dataset: str | None = None, *, page: int = 2000
    ) -> AsyncIterator[list[ObjectEntry]]:
        """Every object (deleted ones too) of ``dataset`` or of all datasets, a page at a time."""
        names = [dataset] if dataset is not None else [d.name for d in await self.datasets()]
        for name in names:
            after: str | None = None
            while True:
                entries = await self.ls(name, after=after, limit=page, include_deleted=True)
                if not entries:
                    break
                yield entries
                after = entries[-1].key


def _now() -> datetime:
    return datetime.now(UTC)


def _seconds(value: Any) -> float | None:
    """Seconds from an aggregate (float or Decimal); skew-negative latencies count as zero."""
    return None if value is None else max(0.0, float(value))


def _check_location(spec: LocationSpec) -> None:
    try:
        parse_store_url(spec.url)
    except InvalidStoreURL as exc:
        raise CatalogError(str(exc)) from None
    if not spec.url.endswith("/"):
        raise CatalogError(f"location {spec.url!r} must end with '/': it is a key prefix")
    if spec.region is not None and not _REGION.fullmatch(spec.region):
        raise CatalogError(f"invalid region label {spec.region!r}")


def _prefix_end(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (None: no bound).

    Both databases compare keys as UTF-8 bytes, which is code point order.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            following = last + 1 if last + 1 != 0xD800 else 0xE000
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


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
        "replicated_at": None,
        "lag_seconds": None,
        "attempts": 0,
        "last_error": None,
        "delete_due": None,
        "updated_at": now,
    }


def _entry(dataset: Dataset, row: Sequence[Any], held: Sequence[Sequence[Any]]) -> ObjectEntry:
    """One listed object; rows are unpacked once (attribute access on rows is slow, and a
    listing builds thousands of these)."""
    (key, source_id, seq, version, event_time, size, etag, fingerprint, ctype, deleted) = row
    by_location = {replica[1]: replica for replica in held}
    statuses = []
    for loc in dataset.locations:
        replica = by_location.get(loc.id)
        if loc.id == source_id:
            status = LocationStatus(
                loc.url + key, loc.url, Role.SOURCE, loc.region, "source", not deleted,
                version, etag, size, None, None, 0, None,
            )  # fmt: skip
        elif replica is not None:
            _, _, state, held_seq, r_version, r_etag, r_size, at, lag, attempts, error = replica
            fresh = not deleted and state == _REPLICATED and held_seq == seq
            status = LocationStatus(
                loc.url + key, loc.url, loc.role, loc.region, state, fresh,
                r_version, r_etag, r_size, at, lag, attempts, error,
            )  # fmt: skip
        elif loc.role is Role.REPLICA:
            status = LocationStatus(
                loc.url + key, loc.url, loc.role, loc.region, "missing", False,
                None, None, None, None, None, 0, None,
            )  # fmt: skip
        else:
            continue
        statuses.append(status)
    return ObjectEntry(
        dataset.name, key, size, fingerprint, ctype, version, event_time, deleted, tuple(statuses)
    )
