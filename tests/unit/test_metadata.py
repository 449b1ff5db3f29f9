"""User metadata crosses clouds mapped by documented rules, never silently dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.base import ObjectAttributes
from replicator.engine.metadata import (
    ENCODED_KEY,
    MetadataError,
    map_user_metadata,
    replica_attributes,
    replica_origin,
    replica_source,
    replica_source_modified,
    replica_source_version,
)


def test_azure_names_become_identifiers() -> None:
    assert map_user_metadata({"run-id": "1", "2nd": "x", "ok_name": "y"}, "az") == {
        "run_id": "1",
        "_2nd": "x",
        "ok_name": "y",
    }


def test_collision_is_refused_naming_both() -> None:
    with pytest.raises(MetadataError, match="'run-id' and 'run_id'"):
        map_user_metadata({"run-id": "1", "run_id": "2"}, "az")


def test_s3_lower_cases_and_refuses_case_collisions() -> None:
    assert map_user_metadata({"Owner": "a"}, "s3") == {"owner": "a"}
    with pytest.raises(MetadataError):
        map_user_metadata({"Owner": "a", "owner": "b"}, "s3")


def test_non_ascii_values_are_encoded_and_recorded() -> None:
    mapped = map_user_metadata({"title": "café"}, "s3")
    assert mapped["title"] == "caf%C3%A9"
    assert mapped[ENCODED_KEY] == "title"
    assert map_user_metadata({"title": "café"}, "gs") == {"title": "café"}


def test_replica_marks_round_trip_any_url() -> None:
    url = "s3://b/naïve key %2F #frag?"
    attributes = replica_attributes(
        ObjectAttributes(), "az", source_url=url, source_version="v1", fingerprint="xxh3-128-4m:00"
    )
    assert replica_source(attributes.user_metadata) == url
    assert replica_source_version(attributes.user_metadata) == "v1"
    assert all(v.isascii() for v in attributes.user_metadata.values())


def test_marks_are_found_whatever_the_case() -> None:
    assert replica_source({"Replicator_Source": "s3%3A//b/k"}) == "s3://b/k"
    assert replica_source({"other": "x"}) is None


def test_a_forwarded_replica_keeps_its_origin_and_the_original_time() -> None:
    """A chain of groups forwards a replica (A's write, copied to B) on to C: C's replica
    names B as its source, but A's object, version and write time as the origin the
    conflict rule compares, however many groups forwarded it."""
    written = datetime(2026, 11, 30, 12, 0, 1, tzinfo=UTC)
    at_b = replica_attributes(
        ObjectAttributes(user_metadata={"owner": "x"}),
        "gs",
        source_url="s3://a/k",
        source_version="va",
        source_modified=written,
    )
    assert replica_origin(at_b.user_metadata) == ("s3://a/k", "va")
    copied_at = datetime(2026, 11, 30, 12, 0, 9, tzinfo=UTC)
    at_c = replica_attributes(
        at_b, "az", source_url="gs://b/k", source_version="vb", source_modified=copied_at
    )
    at_d = replica_attributes(
        at_c, "s3", source_url="az://c@d/k", source_version="vc", source_modified=copied_at
    )
    for forwarded in (at_c, at_d):
        assert replica_origin(forwarded.user_metadata) == ("s3://a/k", "va")
        assert replica_source_modified(forwarded.user_metadata) == written
    assert replica_source(at_d.user_metadata) == "az://c@d/k"
    assert replica_source_version(at_d.user_metadata) == "vc"
    assert at_d.user_metadata["owner"] == "x"
    assert replica_origin({"owner": "x"}) is None
