"""Federated lake queries on both backends: datasets, ls, locate, stale, export."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from replicator.catalog import (
    Catalog,
    CatalogError,
    LocationSpec,
    Role,
    UnknownDataset,
    UnknownLocation,
)
from replicator.catalog.export import export_catalog
from replicator.catalog.model import Change
from tests.catalog.conftest import DatasetFactory, store_url, unique
from tests.catalog.test_replicas import T0, change, verified

# Byte order, not any locale's: digits < upper < '_' < lower < non-ASCII, and prefixes whose
# last character is the highest code point of its range.
HOSTILE_KEYS = [
    "a/b c.parquet",
    "a/b%20c.parquet",
    "a/B.parquet",
    "a/_temporary/0",
    "a/zz",
    "a/é.csv",
    "a/\uffff/x",
    "a/\U0001f600.json",
    "a0",
    "a\U0010ffff",
    "b/dt=2024-01-01/part-0.parquet",
]


class TestDatasets:
    async def test_add_dataset_is_idempotent_and_updates_locations(self, catalog: Catalog) -> None:
        """Adding a dataset again adds new locations and updates a known location's region;
        the listing shows every location with its role and store."""
        name, tag = unique("lake-"), unique("")
        s3 = f"s3://lake-{tag}/clickstream/"
        gs = f"gs://ml-{tag}/clickstream/"
        await catalog.add_dataset(name, [LocationSpec(s3, Role.SOURCE, "us-east-1")])
        ds = await catalog.add_dataset(
            name,
            [LocationSpec(gs, region="europe-west1"), LocationSpec(s3, Role.SOURCE, "us-west-2")],
        )
        assert {(loc.url, loc.role, loc.region, loc.store) for loc in ds.locations} == {
            (s3, Role.SOURCE, "us-west-2", "s3"),
            (gs, Role.REPLICA, "europe-west1", "gs"),
        }
        assert ds in await catalog.datasets()
        assert (await catalog.dataset(name)) == ds

    async def test_a_location_belongs_to_one_dataset(self, catalog: Catalog) -> None:
        """A location URL already in another dataset, a URL that is no store prefix, and a bad
        name are refused."""
        url = f"s3://{unique('b-')}/x/"
        await catalog.add_dataset(unique("one-"), [LocationSpec(url, Role.SOURCE)])
        with pytest.raises(CatalogError, match="already a location"):
            await catalog.add_dataset(unique("two-"), [LocationSpec(url)])
        with pytest.raises(CatalogError, match="must end with '/'"):
            await catalog.add_dataset(unique("three-"), [LocationSpec("s3://b/prefix")])
        with pytest.raises(CatalogError):
            await catalog.add_dataset(unique("four-"), [LocationSpec("ftp://b/prefix/")])
        with pytest.raises(CatalogError, match="invalid dataset name"):
            await catalog.add_dataset("a/b", [LocationSpec(f"s3://{unique('b-')}/")])
        with pytest.raises(UnknownDataset):
            await catalog.dataset(unique("missing-"))

    async def test_a_url_resolves_to_the_longest_matching_location(self, catalog: Catalog) -> None:
        """Nested locations: an object belongs to the innermost one, with its key relative."""
        bucket = f"s3://{unique('b-')}/"
        outer, inner = unique("outer-"), unique("inner-")
        await catalog.add_dataset(outer, [LocationSpec(bucket, Role.SOURCE)])
        await catalog.add_dataset(inner, [LocationSpec(bucket + "raw/", Role.SOURCE)])
        ds, loc, key = await catalog.resolve(bucket + "raw/2024/x.csv")
        assert (ds.name, loc.url, key) == (inner, bucket + "raw/", "2024/x.csv")
        ds, _, key = await catalog.resolve(bucket + "rawer/y")
        assert (ds.name, key) == (outer, "rawer/y")
        with pytest.raises(UnknownLocation):
            await catalog.resolve(f"gs://{unique('b-')}/k")


class TestLs:
    async def test_keys_are_listed_in_byte_order_under_a_prefix(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """Keys come back byte-exact in UTF-8 byte order on both databases; a prefix selects
        exactly the keys starting with it, whatever characters end it; paging with ``after``
        visits every key once."""
        ds = await make_dataset()
        await asyncio.gather(*(catalog.mark_pending(change(ds, k, 1)) for k in HOSTILE_KEYS))
        everything = [e.key for e in await catalog.ls(ds.name)]
        assert everything == sorted(HOSTILE_KEYS, key=lambda k: k.encode())
        for prefix in ("a/", "a", "a/\uffff", "a/b", "a\U0010ffff", "b/dt=", "c"):
            listed = [e.key for e in await catalog.ls(ds.name, prefix)]
            assert listed == [k for k in everything if k.startswith(prefix)], prefix
        paged: list[str] = []
        after: str | None = None
        while page := await catalog.ls(ds.name, after=after, limit=3):
            paged += [e.key for e in page]
            after = page[-1].key
        assert paged == everything

    async def test_each_object_lists_every_location_with_its_freshness(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """The source, a replica holding the newest version, one behind, one never written."""
        ds = await make_dataset()
        gs, az = store_url(ds, "gs"), store_url(ds, "az")
        first, second = change(ds, "k", 1), change(ds, "k", 2, at=60, size=222)
        await catalog.record_replica(first, az, verified(first))
        await catalog.record_replica(second, gs, verified(second, after=7))
        await catalog.mark_pending(change(ds, "other", 1))
        [entry, _] = await catalog.ls(ds.name)
        assert (entry.key, entry.size, entry.source_version) == ("k", 222, "v2")
        by_store = {loc.location.partition("://")[0]: loc for loc in entry.locations}
        assert by_store["s3"].url == ds.sources[0].url + "k"
        assert (by_store["s3"].state, by_store["s3"].fresh) == ("source", True)
        assert (by_store["gs"].state, by_store["gs"].fresh, by_store["gs"].lag_seconds) == (
            "replicated",
            True,
            7.0,
        )
        assert (by_store["az"].state, by_store["az"].fresh, by_store["az"].version) == (
            "replicated",
            False,
            "dest-v1",
        )
        assert by_store["gs"].region == "europe-west1"

    async def test_limits_are_checked(self, catalog: Catalog, make_dataset: DatasetFactory) -> None:
        """A listing asks for at least one and at most 10,000 rows."""
        ds = await make_dataset()
        for bad in (0, 10_001):
            with pytest.raises(CatalogError):
                await catalog.ls(ds.name, limit=bad)


class TestLocate:
    async def test_preference_picks_a_fresh_replica_else_the_source(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """A preferred region or store kind wins when its copy is fresh; otherwise the source
        (always fresh) is returned, never a stale replica."""
        ds = await make_dataset()
        gs, az = store_url(ds, "gs"), store_url(ds, "az")
        first = change(ds, "k", 1)
        await catalog.record_replica(first, gs, verified(first))
        await catalog.record_replica(first, az, verified(first))
        assert (await catalog.locate(ds.name, "k", "europe-west1")).url == gs + "k"
        assert (await catalog.locate(ds.name, "k", "az")).url == az + "k"
        assert (await catalog.locate(ds.name, "k")).url == ds.sources[0].url + "k"
        second = change(ds, "k", 2, at=10)
        await catalog.mark_pending(second)
        assert (await catalog.locate(ds.name, "k", "gs")).url == ds.sources[0].url + "k"
        await catalog.record_replica(second, gs, verified(second))
        assert (await catalog.locate(ds.name, "k", "gs")).url == gs + "k"
        assert (await catalog.locate(ds.name, "k", "az")).url == ds.sources[0].url + "k"

    async def test_a_groups_nearest_fresh_member(self, catalog: Catalog) -> None:
        """In a replication group every member is a source; ``locate`` returns the member in
        the preferred region if it holds the key's latest change, else the member the change
        came from, never a member still behind."""
        tag = unique("")
        # Stores whose notifications carry sequencers of one kind (S3's and Azure's, both
        # hex), so that the changes of the three members are ordered by them.
        members = {
            "us": LocationSpec(f"s3://lake-{tag}/", Role.SOURCE, "us-east-1"),
            "eu": LocationSpec(f"s3://lake-eu-{tag}/", Role.SOURCE, "eu-west-1"),
            "west": LocationSpec(f"az://lake-{tag}/", Role.SOURCE, "westeurope"),
        }
        ds = await catalog.add_dataset(f"group-{tag}", list(members.values()))
        url = {name: spec.url for name, spec in members.items()}

        def written_at(member: str, seq: int, at: float) -> Change:
            return Change(
                source_url=url[member] + "k",
                sequencer=f"{seq:016X}",
                event_time=T0 + timedelta(seconds=at),
                version=f"v{seq}",
                size=100,
                etag=f"etag-{seq}",
            )

        first = written_at("us", 1, 0)
        await catalog.mark_pending(first, [url["eu"], url["west"]])
        for member in ("eu", "west"):
            await catalog.record_replica(first, url[member], verified(first))
        assert (await catalog.locate(ds.name, "k", "eu-west-1")).url == url["eu"] + "k"
        assert (await catalog.locate(ds.name, "k", "westeurope")).url == url["west"] + "k"
        assert (await catalog.locate(ds.name, "k")).url == url["us"] + "k"

        # A newer write at the European member: the others are behind until it reaches them.
        second = written_at("eu", 2, 10)
        await catalog.mark_pending(second, [url["us"], url["west"]])
        assert (await catalog.locate(ds.name, "k", "westeurope")).url == url["eu"] + "k"
        assert (await catalog.locate(ds.name, "k", "us-east-1")).url == url["eu"] + "k"
        await catalog.record_replica(second, url["west"], verified(second))
        assert (await catalog.locate(ds.name, "k", "westeurope")).url == url["west"] + "k"
        assert (await catalog.locate(ds.name, "k", "us-east-1")).url == url["eu"] + "k"
        assert (await catalog.locate(ds.name, "k")).url == url["eu"] + "k"

    async def test_locate_never_returns_a_stale_replica(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """For many interleavings of newer changes and replications, whatever is preferred,
        the copy returned holds the newest accepted change."""
        ds = await make_dataset()
        replicas = [store_url(ds, "gs"), store_url(ds, "az")]
        newest: dict[str, int] = {}
        holds: dict[tuple[str, str], int] = {}
        steps = [(k, seq) for seq in range(1, 5) for k in ("x", "y")]
        for n, (key, seq) in enumerate(steps):
            c = change(ds, key, seq, at=n)
            await catalog.mark_pending(c)
            newest[key] = seq
            target = replicas[n % 2]
            if n % 3:
                await catalog.record_replica(c, target, verified(c))
                holds[(key, target)] = seq
            for k in newest:
                for prefer in ("gs", "az", "europe-west1", None):
                    found = await catalog.locate(ds.name, k, prefer)
                    if found.role is Role.REPLICA:
                        assert holds[(k, found.location)] == newest[k]

    async def test_unknown_or_deleted_objects_are_not_located(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """Nothing to point at: a key never seen, a deleted key, a key that only shares a
        prefix with a known one."""
        ds = await make_dataset()
        await catalog.mark_pending(change(ds, "kept-longer", 1))
        await catalog.mark_pending(change(ds, "gone", 1, deleted=True))
        for key in ("never", "gone", "kept"):
            with pytest.raises(CatalogError):
                await catalog.locate(ds.name, key)


class TestStale:
    async def test_stale_lists_replicas_behind_oldest_first_per_route(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """Pending and failed replicas are listed oldest first with attempts and errors, and
        can be narrowed to one route; replicated ones are not listed."""
        ds = await make_dataset()
        gs, az = store_url(ds, "gs"), store_url(ds, "az")
        late, early = change(ds, "late", 1, at=20), change(ds, "early", 1, at=10)
        await catalog.mark_pending(late)
        await catalog.mark_pending(early)
        await catalog.mark_failed(early, gs, "403 denied")
        await catalog.record_replica(late, az, verified(late))
        listed = await catalog.stale(source=ds.sources[0].url)
        # Ties in age go in key order, then in the order the locations were added.
        assert [(s.key, s.url, s.state.value) for s in listed] == [
            ("early", gs + "early", "failed"),
            ("early", az + "early", "pending"),
            ("late", gs + "late", "pending"),
        ]
        only_gs = await catalog.stale(destination=gs)
        assert [(s.key, s.attempts, s.last_error) for s in only_gs] == [
            ("early", 1, "403 denied"),
            ("late", 0, None),
        ]
        assert only_gs[0].route == f"{ds.sources[0].url} -> {gs}"
        with pytest.raises(UnknownLocation):
            await catalog.stale(destination="gs://nowhere/")


class TestExport:
    async def test_parquet_and_jsonl_hold_one_row_per_object_location(
        self, catalog: Catalog, make_dataset: DatasetFactory, tmp_path: Path
    ) -> None:
        """Both formats hold every (object, location) of the dataset, deleted objects too,
        with freshness, for lake tools to read."""
        ds = await make_dataset()
        gs = store_url(ds, "gs")
        keys = [f"part-{n:04d}.parquet" for n in range(25)]
        for key in keys:
            c = change(ds, key, 1)
            await catalog.mark_pending(c)
            await catalog.record_replica(c, gs, verified(c))
        await catalog.mark_pending(change(ds, "gone", 1, deleted=True))
        parquet, jsonl = tmp_path / "lake.parquet", tmp_path / "lake.jsonl"
        assert await export_catalog(catalog, str(parquet), "parquet", ds.name) == 26 * 3
        assert await export_catalog(catalog, str(jsonl), "jsonl", ds.name) == 26 * 3
        table = pq.read_table(parquet)
        rows = table.to_pylist()
        lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert len(rows) == len(lines) == 78
        fresh_gs = {r["key"] for r in rows if r["location"] == gs and r["fresh"]}
        assert fresh_gs == set(keys)
        assert {r["key"] for r in lines if r["deleted"]} == {"gone"}
        assert str(table.schema.field("source_event_time").type) == "timestamp[us, tz=UTC]"
        with pytest.raises(CatalogError):
            await export_catalog(catalog, "-", "parquet", ds.name)
