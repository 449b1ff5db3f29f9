"""The catalog's common ground: the open database, the cached index of datasets and their
locations (which every write and query resolves URLs against), and shared SQL pieces.

``Catalog`` (``repository``) is this base with the writes, deletions, queries and lag figures
of its sibling modules mixed in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    literal_column,
    select,
)
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import KeyedColumnElement

from connectors import parse_store_url
from connectors.base import InvalidStoreURL
from replicator.catalog.database import Database, dialect_insert
from replicator.catalog.model import (
    APPLIED,
    UNAPPLIED,
    CatalogError,
    Dataset,
    Location,
    LocationSpec,
    Role,
    UnknownDataset,
    UnknownLocation,
)
from replicator.catalog.schema import (
    datasets,
    locations,
)

_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Locations added by another process become visible to this one within this time.
_INDEX_TTL = timedelta(seconds=30)
# The most rows one listing returns.
MAX_LIST = 10_000

Excluded = ReadOnlyColumnCollection[str, KeyedColumnElement[Any]]
# Constants inside the upserts are SQL literals, not bound parameters: the upserts run with
# many parameter sets, which are sent as multi-row statements only when every bound parameter
# belongs to a row.
_ZERO: ColumnElement[int] = literal_column("0")
_ONE: ColumnElement[int] = literal_column("1")
_APPLIED: list[ColumnElement[str]] = [literal_column(f"'{s}'") for s in APPLIED]
_UNAPPLIED: list[ColumnElement[str]] = [literal_column(f"'{s}'") for s in UNAPPLIED]


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


class CatalogBase:
    """The database, the dataset index and what every part of the catalog shares."""

    database: Database
    _index: _Index | None
    _statements: dict[str, Any]

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
        async with self.database.write() as conn:
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
        async with self.database.read() as conn:
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

    def _insert(self, table: Table) -> Any:
        return dialect_insert(self.database.backend, table)


def _now() -> datetime:
    return datetime.now(UTC)


def _check_location(spec: LocationSpec) -> None:
    try:
        parse_store_url(spec.url)
    except InvalidStoreURL as exc:
        raise CatalogError(str(exc)) from None
    if not spec.url.endswith("/"):
        raise CatalogError(f"location {spec.url!r} must end with '/': it is a key prefix")
    if spec.region is not None and not _REGION.fullmatch(spec.region):
        raise CatalogError(f"invalid region label {spec.region!r}")
