"""Read-side queries of the lake: objects under a prefix with every location's freshness,
the best fresh location of one object, exports, and named checkpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    select,
)

from replicator.catalog.base import (
    MAX_LIST,
    CatalogBase,
    _now,
)
from replicator.catalog.model import (
    CatalogError,
    Dataset,
    LocationStatus,
    ObjectEntry,
    ReplicaState,
    Role,
)
from replicator.catalog.schema import (
    checkpoints,
    objects,
    replicas,
)

_REPLICATED = str(ReplicaState.REPLICATED)

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
        "written_as",
    )
]


class CatalogQueries(CatalogBase):
    """Listings, locate, export and checkpoints."""

    # -- checkpoints ------------------------------------------------------------------------

    async def set_checkpoint(self, name: str, value: str) -> None:
        async with self.database.write() as conn:
            stmt = self._insert(checkpoints).values(name=name, value=value, updated_at=_now())
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"],
                    set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
                )
            )

    async def checkpoint(self, name: str) -> str | None:
        async with self.database.read() as conn:
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
        async with self.database.read() as conn:
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
            (_, _, state, held_seq, r_version, r_etag, r_size, at, lag, attempts, error,
             written_as) = replica  # fmt: skip
            fresh = not deleted and state == _REPLICATED and held_seq == seq
            status = LocationStatus(
                loc.url + key, loc.url, loc.role, loc.region, state, fresh,
                r_version, r_etag, r_size, at, lag, attempts, error, written_as,
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
