"""User metadata crosses clouds mapped by documented rules, never silently dropped."""

from __future__ import annotations

import pytest

from connectors.base import ObjectAttributes
from replicator.engine.metadata import (
    ENCODED_KEY,
    MetadataError,
    map_user_metadata,
    replica_attributes,
    replica_source,
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
