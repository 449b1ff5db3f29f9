"""Replica state on both backends: high-water compare-and-set, no roll-back, lag, watermark."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from connectors.base import ChecksumKind, ObjectAttributes, ObjectMeta
from replicator.catalog import (
    Acceptance,
    Catalog,
    CatalogError,
    Change,
    Dataset,
    Replica,
    ReplicaState,
    UnknownLocation,
    open_catalog,
)
from replicator.catalog.lag import Route
from replicator.engine.planner import Strategy
from replicator.engine.transfer import CopyResult
from tests.catalog.conftest import DatasetFactory, store_url, unique

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def change(
    ds: Dataset, key: str, seq: int, at: float = 0.0, *, size: int = 100, deleted: bool = False
) -> Change:
    """Change number ``seq`` of ``key`` at its dataset's source, ``at`` seconds after T0."""
    return Change(
        source_url=ds.sources[0].url + key,
        sequencer=f"{seq:016X}",
        event_time=T0 + timedelta(seconds=at),
        version=f"v{seq}",
        size=None if deleted else size,
        etag=None if deleted else f"etag-{seq}",
        deleted=deleted,
    )


def verified(c: Change, after: float = 5.0) -> Replica:
    """What a destination reports after a verified copy of ``c``, ``after`` seconds later."""
    return Replica(
        source_version=c.version or "",
        size=c.size or 0,
        version=f"dest-{c.version}",
        etag=f"dest-etag-{c.version}",
        fingerprint=f"xxh3-128-4m:{c.version}",
        replicated_time=c.event_time + timedelta(seconds=after),
        checksums={"crc32c": "AAAAAA=="},
        content_type="application/x-parquet",
    )


async def replica_of(catalog: Catalog, ds: Dataset, key: str, location: str) -> dict[str, object]:
    [entry] = await catalog.ls(ds.name, key, limit=1, include_deleted=True)
    assert entry.key == key
    [status] = [loc for loc in entry.locations if loc.location == location]
    return {
        "state": status.state,
        "fresh": status.fresh,
        "version": status.version,
        "attempts": status.attempts,
        "error": status.last_error,
        "lag": status.lag_seconds,
    }


class TestAcceptance:
    async def test_new_change_marks_every_replica_pending(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """An accepted change makes every replica location pending and not fresh, while the
        source itself is the fresh copy."""
        ds = await make_dataset()
        assert await catalog.mark_pending(change(ds, "a", 1)) is Acceptance.NEW
        [entry] = await catalog.ls(ds.name)
        states = {loc.location: (loc.state, loc.fresh) for loc in entry.locations}
        assert states == {
            ds.sources[0].url: ("source", True),
            store_url(ds, "gs"): ("pending", False),
            store_url(ds, "az"): ("pending", False),
        }
        assert entry.size == 100
        assert entry.source_version == "v1"

    async def test_duplicate_and_stale_changes_are_told_apart_and_change_nothing(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """The newest change again is a duplicate, an older one is stale; neither touches a
        replica row that already moved on."""
        ds = await make_dataset()
        gs = store_url(ds, "gs")
        newest = change(ds, "k", 5, at=50)
        assert await catalog.mark_pending(newest) is Acceptance.NEW
        assert await catalog.record_replica(newest, gs, verified(newest))
        assert await catalog.mark_pending(newest) is Acceptance.DUPLICATE
        assert await catalog.mark_pending(change(ds, "k", 4, at=40)) is Acceptance.STALE
        row = await replica_of(catalog, ds, "k", gs)
        assert row["state"] == "replicated"
        assert row["fresh"] is True
        assert row["version"] == "dest-v5"

    async def test_a_stale_event_never_rolls_a_replica_back(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """After change 9 is replicated, nothing about change 7 (a late copy, a late failure,
        a late event) changes the row."""
        ds = await make_dataset()
        gs = store_url(ds, "gs")
        newer, older = change(ds, "k", 9, at=90), change(ds, "k", 7, at=70)
        assert await catalog.record_replica(newer, gs, verified(newer))
        assert not await catalog.record_replica(older, gs, verified(older))
        assert await catalog.mark_failed(older, gs, "late failure") is None
        assert await catalog.mark_pending(older) is Acceptance.STALE
        assert not await catalog.mark_deleted(change(ds, "k", 8, deleted=True), gs, T0)
        row = await replica_of(catalog, ds, "k", gs)
        assert row == {
            "state": "replicated",
            "fresh": True,
            "version": "dest-v9",
            "attempts": 1,
            "error": None,
            "lag": 5.0,
        }

    async def test_changes_of_one_key_in_one_batch_are_compared_with_each_other(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """Concurrent changes of one key share a transaction and still see each other: in
        rising order each is new, in falling order only the first is."""
        ds = await make_dataset()
        rising = await asyncio.gather(
            *(catalog.mark_pending(change(ds, "up", s)) for s in range(1, 6))
        )
        assert rising == [Acceptance.NEW] * 5
        falling = await asyncio.gather(
            *(catalog.mark_pending(change(ds, "down", s)) for s in range(5, 0, -1))
        )
        assert falling == [Acceptance.NEW] + [Acceptance.STALE] * 4

    async def test_a_change_outside_every_dataset_is_deduplicated_but_not_tracked(
        self, catalog: Catalog
    ) -> None:
        """Events of keys under no dataset still go through the high-water."""
        url = f"s3://{unique('nowhere-')}/x"
        c = Change(url, "0A", T0)
        assert await catalog.mark_pending(c) is Acceptance.NEW
        assert await catalog.mark_pending(c) is Acceptance.DUPLICATE
        assert await catalog.mark_pending(Change(url, "09", T0)) is Acceptance.STALE
        with pytest.raises(UnknownLocation):
            await catalog.record_replica(c, "gs://x/", verified(Change(url, "0A", T0, "v")))

    async def test_changes_without_a_sequencer_are_ordered_by_event_time(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """A store that sends no sequencer (and a listing scan) is ordered by event time, and
        never overrides a change that has a native sequencer."""
        ds = await make_dataset()
        url = ds.sources[0].url + "k"
        assert await catalog.mark_pending(Change(url, "", T0)) is Acceptance.NEW
        assert await catalog.mark_pending(Change(url, "", T0 - timedelta(1))) is Acceptance.STALE
        assert await catalog.mark_pending(Change(url, "0055AE", T0)) is Acceptance.NEW
        later = T0 + timedelta(days=1)
        assert await catalog.mark_pending(Change(url, "", later)) is Acceptance.STALE


class TestReplicaRecords:
    async def test_failures_count_attempts_until_the_replica_is_recorded(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """Each failure adds an attempt and keeps its error; the verified copy clears it."""
        ds = await make_dataset()
        gs = store_url(ds, "gs")
        c = change(ds, "k", 1)
        await catalog.mark_pending(c)
        assert await catalog.mark_failed(c, gs, "throttled") == 1
        assert await catalog.mark_failed(c, gs, "timeout") == 2
        failed = await replica_of(catalog, ds, "k", gs)
        assert (failed["state"], failed["error"], failed["fresh"]) == ("failed", "timeout", False)
        assert await catalog.record_replica(c, gs, verified(c, after=12.5))
        done = await replica_of(catalog, ds, "k", gs)
        assert done == {
            "state": "replicated",
            "fresh": True,
            "version": "dest-v1",
            "attempts": 3,
            "error": None,
            "lag": 12.5,
        }
        assert await catalog.mark_failed(c, gs, "a late duplicate failing") is None
        assert (await replica_of(catalog, ds, "k", gs))["state"] == "replicated"

    async def test_recording_the_same_replica_twice_is_a_no_op(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """Redoing a change after a crash re-records nothing: lag and attempts stay put."""
        ds = await make_dataset()
        gs = store_url(ds, "gs")
        c = change(ds, "k", 3)
        assert await catalog.record_replica(c, gs, verified(c, after=4))
        assert not await catalog.record_replica(c, gs, verified(c, after=400))
        row = await replica_of(catalog, ds, "k", gs)
        assert (row["lag"], row["attempts"]) == (4.0, 1)

    async def test_object_records_what_the_copy_learnt(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """The verified copy fills in the object's fingerprint and content type, and the
        replica's checksums and version, without a prior pending mark."""
        ds = await make_dataset()
        c = change(ds, "data/part-0.parquet", 2)
        assert await catalog.record_replica(c, store_url(ds, "az"), verified(c))
        [entry] = await catalog.ls(ds.name, "data/")
        assert entry.fingerprint == "xxh3-128-4m:v2"
        assert entry.content_type == "application/x-parquet"
        az = next(loc for loc in entry.locations if loc.location == store_url(ds, "az"))
        assert (az.version, az.etag, az.size, az.fresh) == ("dest-v2", "dest-etag-v2", 100, True)
        gs = next(loc for loc in entry.locations if loc.location == store_url(ds, "gs"))
        assert (gs.state, gs.fresh) == ("missing", False)

    async def test_a_newer_change_makes_a_replicated_copy_unfresh(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """Once a newer change is accepted, the old replica still shows what it holds but is
        no longer fresh."""
        ds = await make_dataset()
        gs = store_url(ds, "gs")
        first = change(ds, "k", 1)
        await catalog.record_replica(first, gs, verified(first))
        await catalog.mark_pending(change(ds, "k", 2, at=10))
        row = await replica_of(catalog, ds, "k", gs)
        assert (row["state"], row["fresh"], row["version"]) == ("pending", False, "dest-v1")

    async def test_deletion_propagates_and_hides_the_object(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """A source deletion hides the object from listings and locate; the replica's deletion
        is recorded as applied."""
        ds = await make_dataset(replicas=1)
        gs = store_url(ds, "gs")
        put = change(ds, "k", 1)
        await catalog.record_replica(put, gs, verified(put))
        gone = change(ds, "k", 2, at=30, deleted=True)
        assert await catalog.mark_pending(gone) is Acceptance.NEW
        assert await catalog.ls(ds.name) == []
        with pytest.raises(CatalogError):
            await catalog.locate(ds.name, "k")
        assert await catalog.mark_deleted(gone, gs, gone.event_time + timedelta(seconds=2))
        [entry] = await catalog.ls(ds.name, include_deleted=True)
        assert entry.deleted
        [status] = [loc for loc in entry.locations if loc.location == gs]
        assert (status.state, status.lag_seconds, status.version) == ("deleted", 2.0, None)
        [lag] = await catalog.route_lag(destination=gs)
        assert lag.pending_ops == 0
        assert lag.watermark == gone.event_time

    async def test_a_replica_found_stale_is_no_longer_served(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """A reconciliation marking a replica stale takes it out of locate and puts it in the
        stale list; the watermark holds at its change until it is replicated again."""
        ds = await make_dataset(replicas=1)
        gs = store_url(ds, "gs")
        c = change(ds, "k", 1, at=5)
        await catalog.record_replica(c, gs, verified(c))
        assert await catalog.mark_stale(ds.name, "k", gs)
        assert not await catalog.mark_stale(ds.name, "k", gs)
        located = await catalog.locate(ds.name, "k", prefer="gs")
        assert located.location == ds.sources[0].url
        [stale] = await catalog.stale(destination=gs)
        assert (stale.state, stale.key) == (ReplicaState.STALE, "k")
        [lag] = await catalog.route_lag(destination=gs)
        assert lag.watermark == c.event_time
        assert lag.pending_ops == 1

    async def test_record_needs_a_location_of_the_dataset(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """A replica at a URL that is no location of the dataset is refused, not guessed."""
        ds = await make_dataset()
        c = change(ds, "k", 1)
        with pytest.raises(UnknownLocation):
            await catalog.record_replica(c, "gs://elsewhere/clickstream/", verified(c))


class TestConcurrentWriters:
    async def test_two_writers_racing_on_one_key_the_higher_sequencer_wins(
        self, catalog: Catalog, catalog_url: str, make_dataset: DatasetFactory
    ) -> None:
        """Two catalog connections (two daemons) write the same replica with different
        sequencers at the same moment, in random order: the higher always ends up recorded,
        and the high-water ends at the highest sequencer whatever the order."""
        ds = await make_dataset(replicas=1)
        gs = store_url(ds, "gs")
        rng = random.Random(7)
        other = await open_catalog(catalog_url)
        try:
            for round_ in range(12):
                key = f"race-{round_}"
                a, b = rng.sample(range(1, 1000), 2)
                writers = [(catalog, change(ds, key, a)), (other, change(ds, key, b))]
                rng.shuffle(writers)
                await asyncio.gather(*(w.record_replica(c, gs, verified(c)) for w, c in writers))
                row = await replica_of(catalog, ds, key, gs)
                assert row["version"] == f"dest-v{max(a, b)}"
                seqs = rng.sample(range(1, 1000), 8)
                results = await asyncio.gather(
                    *(
                        (catalog if i % 2 else other).mark_pending(change(ds, f"hw-{key}", s))
                        for i, s in enumerate(seqs)
                    )
                )
                assert Acceptance.NEW in results
                top = max(seqs)
                assert await catalog.mark_pending(change(ds, f"hw-{key}", top)) is (
                    Acceptance.DUPLICATE
                )
                assert await other.mark_pending(change(ds, f"hw-{key}", top - 1)) is (
                    Acceptance.STALE
                )
        finally:
            await other.close()

    async def test_high_water_compare_and_set_applies_once_per_sequencer(
        self, catalog: Catalog, catalog_url: str
    ) -> None:
        """The same sequencer raced by two connections is applied by exactly one of them."""
        other = await open_catalog(catalog_url)
        try:
            for n in range(10):
                url = f"gs://{unique('hw-')}/k{n}"
                won = await asyncio.gather(
                    catalog.advance_high_water(url, "1700000000000001", event_time=T0),
                    other.advance_high_water(url, "1700000000000001", event_time=T0),
                )
                assert sorted(won) == [False, True]
                # GCS generations compare as numbers, not as text.
                assert await other.advance_high_water(url, "99999999999999999", event_time=T0)
                assert not await catalog.advance_high_water(url, "1700000000000002", event_time=T0)
        finally:
            await other.close()


class TestLag:
    async def test_route_figures(self, catalog: Catalog, make_dataset: DatasetFactory) -> None:
        """Latency max/p50/p99 over replicated changes, pending operations and bytes, failed
        operations, SLO misses and the oldest pending change, per route."""
        ds = await make_dataset()
        gs, az = store_url(ds, "gs"), store_url(ds, "az")
        done = [change(ds, f"done-{n:03d}", n, at=n) for n in range(1, 101)]
        await asyncio.gather(
            *(
                catalog.record_replica(c, gs, verified(c, after=n * 10.0))
                for n, c in enumerate(done, 1)
            )
        )
        for n in range(3):
            await catalog.mark_pending(change(ds, f"todo-{n}", 1, at=500 + n, size=1000))
        c = change(ds, "todo-0", 1, at=500, size=1000)
        assert await catalog.mark_failed(c, gs, "boom") == 1
        lags = {lag.route.destination: lag for lag in await catalog.route_lag()}
        g = lags[gs]
        assert g.route == Route(ds.sources[0].url, gs)
        assert (g.replicated_ops, g.pending_ops, g.pending_bytes, g.failed_ops) == (100, 3, 3000, 1)
        assert (g.latency_max_seconds, g.latency_p50_seconds, g.latency_p99_seconds) == (
            1000.0,
            500.0,
            990.0,
        )
        assert g.slo_missed == 10
        assert g.oldest_pending == T0 + timedelta(seconds=500)
        assert g.watermark == T0 + timedelta(seconds=500)
        a = lags[az]
        assert (a.pending_ops, a.replicated_ops, a.latency_p50_seconds) == (3, 0, None)
        recent = {
            lag.route.destination: lag
            for lag in await catalog.route_lag(since=T0 + timedelta(seconds=1089))
        }
        assert recent[gs].replicated_ops == 2
        [lean] = await catalog.route_lag(destination=gs, percentiles=False)
        assert (lean.replicated_ops, lean.pending_ops, lean.latency_max_seconds) == (100, 3, 1000.0)
        assert (lean.latency_p50_seconds, lean.latency_p99_seconds) == (None, None)

    async def test_slo_miss_is_logged_and_counted(
        self, catalog: Catalog, make_dataset: DatasetFactory, registry: CollectorRegistry
    ) -> None:
        """A change replicated later than the objective logs a warning and counts in
        replicator_slo_missed_total; every replicated change is in the latency histogram and
        every failure in replicator_operations_failed_total."""
        ds = await make_dataset(replicas=1)
        gs = store_url(ds, "gs")
        route = str(Route(ds.sources[0].url, gs))
        slow, fast = change(ds, "slow", 1), change(ds, "fast", 1)
        with capture_logs() as logs:
            await catalog.record_replica(slow, gs, verified(slow, after=16 * 60))
            await catalog.record_replica(fast, gs, verified(fast, after=3))
        assert [e["event"] for e in logs] == ["replication latency objective missed"]
        assert logs[0]["route"] == route
        labels = {"route": route}
        assert registry.get_sample_value("replicator_slo_missed_total", labels) == 1
        assert (
            registry.get_sample_value("replicator_replication_latency_seconds_count", labels) == 2
        )
        assert registry.get_sample_value("replicator_replication_latency_seconds_sum", labels) == (
            16 * 60 + 3
        )
        await catalog.mark_failed(change(ds, "bad", 1), gs, "denied")
        assert registry.get_sample_value("replicator_operations_failed_total", labels) == 1

    async def test_lag_is_measured_between_store_clocks(
        self, catalog: Catalog, make_dataset: DatasetFactory
    ) -> None:
        """From a copy result, the replicated time is the destination store's own time of the
        write, not this machine's clock."""
        ds = await make_dataset(replicas=1)
        gs = store_url(ds, "gs")
        c = change(ds, "k", 1)
        written = c.event_time + timedelta(seconds=42)
        source = ObjectMeta(
            c.source_url,
            "k",
            100,
            "etag-1",
            "v1",
            c.event_time,
            ObjectAttributes(content_type="text/csv"),
        )
        dest = ObjectMeta(
            gs + "k",
            "k",
            100,
            "d-etag",
            "1714564842000000",
            written,
            ObjectAttributes(),
            {ChecksumKind.CRC32C: "AAAAAA=="},
        )
        result = CopyResult("copied", source, dest, fingerprint="xxh3-128-4m:ab")
        replica = Replica.from_copy(result)
        assert replica.replicated_time == written
        assert replica.checksums == {"crc32c": "AAAAAA=="}
        await catalog.record_replica(c, gs, replica)
        row = await replica_of(catalog, ds, "k", gs)
        assert (row["lag"], row["version"]) == (42.0, "1714564842000000")
        with pytest.raises(CatalogError):
            Replica.from_copy(CopyResult("skipped", source, None, reason="source is a replica"))

    @pytest.mark.parametrize(
        ("strategy", "ordered", "written_as"),
        [
            (Strategy.MULTIPART, True, "ordered_upload"),
            (Strategy.MULTIPART, False, "multipart"),
            (Strategy.SERVER_SIDE, False, "server_side"),
            (None, False, None),
        ],
    )
    async def test_how_the_replica_was_written_is_recorded(
        self,
        catalog: Catalog,
        make_dataset: DatasetFactory,
        strategy: Strategy | None,
        ordered: bool,
        written_as: str | None,
    ) -> None:
        """A GCS replica from one upload session (an ordinary object) is told from one
        composed of parts; a replica found already written (a skipped copy) says nothing."""
        ds = await make_dataset(replicas=1)
        gs = store_url(ds, "gs")
        c = change(ds, "k", 1)
        source = ObjectMeta(c.source_url, "k", 100, "etag-1", "v1", c.event_time)
        dest = ObjectMeta(gs + "k", "k", 100, "1", "1", c.event_time)
        status = "copied" if strategy else "skipped"
        result = CopyResult(status, source, dest, strategy, ordered_upload=ordered)
        await catalog.record_replica(c, gs, Replica.from_copy(result))
        [entry] = await catalog.ls(ds.name, "k", limit=1)
        assert [loc.written_as for loc in entry.locations if loc.location == gs] == [written_as]


class TestWatermark:
    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    async def test_watermark_never_passes_an_unreplicated_change(
        self, catalog: Catalog, make_dataset: DatasetFactory, data: st.DataObject
    ) -> None:
        """Changes to a few keys are accepted and completed in any interleaving (each change
        accepted before it completes, completions in any order): after every step the route's
        watermark is at most the event time of every accepted change not yet covered by a
        replicated change of its key at least as new, and once all are done it reaches the
        newest event time."""
        ds = await make_dataset(replicas=1)
        gs = store_url(ds, "gs")
        count = data.draw(st.integers(min_value=1, max_value=10))
        keys = [data.draw(st.sampled_from("abc")) for _ in range(count)]
        times = [data.draw(st.integers(min_value=0, max_value=1000)) for _ in range(count)]
        changes = [change(ds, keys[i], i + 1, at=times[i]) for i in range(count)]
        steps = data.draw(st.permutations([i for i in range(count) for _ in (0, 1)]))
        accepted: set[int] = set()
        completed: set[int] = set()
        for i in steps:
            if i not in accepted:
                accepted.add(i)
                await catalog.mark_pending(changes[i], [gs])
            else:
                completed.add(i)
                await catalog.record_replica(changes[i], gs, verified(changes[i]))
            [lag] = await catalog.route_lag(destination=gs)
            for j in accepted:
                covered = any(keys[k] == keys[j] and k >= j for k in completed)
                if not covered:
                    assert lag.watermark is not None
                    assert lag.watermark <= changes[j].event_time
        [lag] = await catalog.route_lag(destination=gs)
        newest = {keys[i]: changes[i].event_time for i in range(count)}
        assert lag.pending_ops == 0
        assert lag.watermark == max(newest.values())


class TestCheckpoints:
    async def test_checkpoints_are_kept_and_replaced(self, catalog: Catalog) -> None:
        """A named checkpoint reads back as last written; an unknown one is None."""
        name = unique("scan-")
        assert await catalog.checkpoint(name) is None
        await catalog.set_checkpoint(name, "key-0001")
        await catalog.set_checkpoint(name, "key-0002")
        assert await catalog.checkpoint(name) == "key-0002"
