"""The catalog's rows of a group's key follow its changes at every member in time order,
whichever stores the members are: sequencers of different stores (S3's hex, GCS's
generations) do not compare, so a group member's events are ordered by their times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from replicator.catalog import open_catalog
from replicator.daemon.applier import record_accepted, register_datasets
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ingest.publisher import routed_events
from replicator.pipeline.rules import Router, load_config

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def written(url: str, sequencer: str, at: float, version: str) -> ChangeEvent:
    return ChangeEvent(
        kind="put",
        source_url=url,
        version=version,
        sequencer=sequencer,
        size=10,
        etag=f"etag-{version}",
        event_time=T0 + timedelta(seconds=at),
        origin="s3" if url.startswith("s3://") else "gcs",
    )


async def test_a_later_write_at_a_gcs_member_supersedes_an_s3_members(tmp_path: Path) -> None:
    s3, gs = "s3://lake-order/", "gs://lake-order/"
    config = load_config({"groups": [{"name": "lake", "members": [s3, gs]}]})
    router = Router(config)
    catalog = await open_catalog(f"sqlite:///{tmp_path}/catalog.db")
    try:
        await register_datasets(catalog, config)
        # An S3 sequencer (hex, left-aligned) sorts above any GCS generation (decimal).
        first = written(s3 + "k.bin", "0055AED6DCD90281E5", 0, "s3-version")
        second = written(gs + "k.bin", "1764504000000000", 10, "1764504000000000")
        for event in (first, second):
            await record_accepted(catalog, router, routed_events(router, [event]))
        [entry] = await catalog.ls("lake", "k.bin", limit=1)
        assert entry.source_version == "1764504000000000", "the later write is not the latest"
        pending = {loc.location: loc.state for loc in entry.locations}
        assert pending == {gs: "source", s3: "pending"}
    finally:
        await catalog.close()


def test_routes_outside_groups_keep_their_stores_sequencers() -> None:
    config = load_config(
        {
            "routes": [{"name": "r", "source": "s3://src/", "destinations": ["gs://dst/"]}],
            "groups": [{"name": "lake", "members": ["s3://a/", "gs://b/"]}],
        }
    )
    router = Router(config)
    alone = written("s3://src/k", "0055AED6DCD90281E5", 0, "v")
    member = written("s3://a/k", "0055AED6DCD90281E5", 0, "v")
    outside = written("s3://elsewhere/k", "0055AED6DCD90281E5", 0, "v")
    assert [e.sequencer for e in routed_events(router, [alone, member, outside])] == [
        "0055AED6DCD90281E5",
        "",
    ]
