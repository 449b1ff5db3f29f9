"""Every cloud's notification format, from samples written after the providers' docs."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.pipeline.events import (
    ChangeEvent,
    ParseError,
    azure_validation_code,
    default_account_url,
    gcs_sequencer,
    parse_any,
    parse_azure,
    parse_gcs,
    parse_s3,
    s3_sequencer,
)

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


class TestS3:
    def test_sqs_put_decodes_plus_and_percent(self) -> None:
        [event] = parse_s3(sample("s3_sqs_put.json"))
        assert event.kind == "put"
        assert event.source_url == "s3://lake/clickstream/My Summer! photo €.jpg"
        assert event.size == 1024
        assert event.version == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
        assert event.event_time == datetime(2026, 11, 29, 3, 0, 0, 123000, tzinfo=UTC)
        assert event.origin == "s3"

    def test_literal_plus_arrives_encoded(self) -> None:
        [event] = parse_s3(sample("s3_sqs_delete.json"))
        assert event.kind == "delete"
        assert event.source_url == "s3://lake/clickstream/a+b.txt"
        assert event.size is None

    def test_test_event_is_a_no_op(self) -> None:
        assert parse_s3(sample("s3_test_event.json")) == []

    def test_sns_envelope(self) -> None:
        [event] = parse_s3(sample("s3_sns_envelope.json"))
        assert event.source_url == "s3://lake/sns/key with spaces"

    def test_eventbridge_created_key_is_not_decoded(self) -> None:
        [event] = parse_s3(sample("s3_eventbridge_created.json"))
        assert event.kind == "put"
        assert event.source_url == "s3://lake/raw/health-check/2026-11-29T03:00:00.532432.zip"
        assert event.version == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"

    def test_eventbridge_deleted(self) -> None:
        [event] = parse_s3(sample("s3_eventbridge_deleted.json"))
        assert event.kind == "delete"

    def test_eventbridge_other_types_are_ignored(self) -> None:
        assert parse_s3(sample("s3_eventbridge_storage_class.json")) == []

    def test_sequencers_compare_after_right_padding(self) -> None:
        """AWS: compare per key after right-padding the shorter hex string with zeros."""
        assert s3_sequencer("0055AED6DCD90281E5") < s3_sequencer("0055AED6DCD90281E6")
        assert s3_sequencer("0055AED6DCD90281E5") < s3_sequencer("0055AED6DCD90281E500001")
        assert s3_sequencer("0055aed6") == s3_sequencer("0055AED6")
        assert s3_sequencer(None) == ""

    def test_wrong_event_version(self) -> None:
        body = json.loads(sample("s3_sqs_put.json"))
        body["Records"][0]["eventVersion"] = "1.0"
        with pytest.raises(ParseError, match=r"2\.x"):
            parse_s3(json.dumps(body))

    def test_undecodable_key(self) -> None:
        body = json.loads(sample("s3_sqs_put.json"))
        body["Records"][0]["s3"]["object"]["key"] = "bad%FF%FEkey"
        with pytest.raises(ParseError, match="UTF-8"):
            parse_s3(json.dumps(body))

    def test_wrong_types(self) -> None:
        body = json.loads(sample("s3_sqs_put.json"))
        body["Records"][0]["s3"]["object"]["size"] = "big"
        with pytest.raises(ParseError, match="size"):
            parse_s3(json.dumps(body))


class TestGCS:
    @pytest.mark.parametrize("name", ["gcs_finalize_pull.json", "gcs_finalize_push.json"])
    def test_finalize(self, name: str) -> None:
        [event] = parse_gcs(sample(name))
        assert event.kind == "put"
        assert event.source_url == "gs://ml/datasets/tokens ü.bin"
        assert event.version == "1732849200123456"
        assert event.size == 4096
        assert event.origin == "gcs"

    @pytest.mark.parametrize(
        "name", ["gcs_delete_overwritten.json", "gcs_archive_overwritten.json"]
    )
    def test_delete_shadowing_an_overwrite_never_deletes(self, name: str) -> None:
        assert parse_gcs(sample(name)) == []

    def test_real_delete(self) -> None:
        [event] = parse_gcs(sample("gcs_delete.json"))
        assert event.kind == "delete"

    def test_metadata_update_is_ignored(self) -> None:
        assert parse_gcs(sample("gcs_metadata_update.json")) == []

    def test_deletion_orders_after_creation_of_the_same_generation(self) -> None:
        assert gcs_sequencer("9", False) < gcs_sequencer("9", True) < gcs_sequencer("10", False)

    def test_bad_base64_data(self) -> None:
        body = json.loads(sample("gcs_finalize_pull.json"))
        body["data"] = "not base64 !!"
        with pytest.raises(ParseError, match="base64"):
            parse_gcs(json.dumps(body))

    def test_missing_attribute(self) -> None:
        body = json.loads(sample("gcs_finalize_pull.json"))
        del body["attributes"]["objectId"]
        with pytest.raises(ParseError, match="objectId"):
            parse_gcs(json.dumps(body))


class TestAzure:
    def test_event_grid_schema(self) -> None:
        [event] = parse_azure(sample("azure_eventgrid_created.json"))
        assert event.kind == "put"
        assert event.source_url == "az://lake@acct/clickstream/day 1/part-0.parquet"
        assert event.size == 524288
        assert event.etag == "0x8D4BCC2E4835CD0"
        assert event.event_time.microsecond == 958410

    def test_cloud_events_schema(self) -> None:
        [event] = parse_azure(sample("azure_cloudevents_deleted.json"))
        assert event.kind == "delete"
        assert event.source_url == "az://lake@acct/clickstream/day 1/part-0.parquet"

    def test_two_accounts_never_share_a_url(self) -> None:
        """The account comes from the topic (Event Grid), the source (CloudEvents) or else
        the blob URL's host; only the default account's URLs lose it."""
        body = json.loads(sample("azure_eventgrid_created.json"))
        urls = set()
        for account in ("acct", "other"):
            body[0]["topic"] = body[0]["topic"].replace("/acct", f"/{account}")
            body[0]["topic"] = body[0]["topic"].rsplit("/", 1)[0] + f"/{account}"
            [event] = parse_azure(json.dumps(body))
            urls.add(event.source_url)
        assert urls == {
            "az://lake@acct/clickstream/day 1/part-0.parquet",
            "az://lake@other/clickstream/day 1/part-0.parquet",
        }
        del body[0]["topic"]
        body[0]["data"]["url"] = "https://third.blob.core.windows.net/lake/x"
        [event] = parse_azure(json.dumps(body))
        assert event.source_url == "az://lake@third/clickstream/day 1/part-0.parquet"
        assert default_account_url(event.source_url, "third") == (
            "az://lake/clickstream/day 1/part-0.parquet"
        )
        assert default_account_url(event.source_url, "acct") == event.source_url
        assert default_account_url("s3://lake@third/k", "third") == "s3://lake@third/k"

    def test_sequencers_are_ordered(self) -> None:
        [created] = parse_azure(sample("azure_eventgrid_created.json"))
        [deleted] = parse_azure(sample("azure_cloudevents_deleted.json"))
        assert len(created.sequencer) == 32
        assert created.sequencer != deleted.sequencer

    def test_validation_handshake(self) -> None:
        payload = sample("azure_validation.json")
        assert azure_validation_code(payload) == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
        assert parse_azure(payload) == []
        assert azure_validation_code(sample("azure_eventgrid_created.json")) is None

    def test_subject_not_a_blob(self) -> None:
        body = json.loads(sample("azure_eventgrid_created.json"))
        body[0]["subject"] = "/blobServices/default/containers/lake"
        with pytest.raises(ParseError, match="blob"):
            parse_azure(json.dumps(body))


class TestAnyFormat:
    @pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*.json")))
    def test_every_sample_is_recognised(self, name: str) -> None:
        """Each sample parses through the format sniffer without error."""
        events = parse_any(sample(name))
        for event in events:
            assert ChangeEvent.from_json(event.to_json()) == event


POISON = [
    b"",
    b"not json",
    b"\xff\xfe\x00garbage",
    b"[]",
    b"null",
    b"42",
    b'"a string"',
    b'{"Records": "nope"}',
    b'{"Records": [null]}',
    b'{"Records": [{"eventVersion": "2.1"}]}',
    b'{"message": {"attributes": {"eventType": 1}}}',
    b'{"eventType": "Microsoft.Storage.BlobCreated", "subject": 5}',
    b'{"unrelated": true}',
    b'{"Type": "Notification", "Message": 7}',
    b"x" * (1024 * 1024),
    json.dumps(
        {
            "message": {
                "attributes": {
                    "eventType": "OBJECT_FINALIZE",
                    "bucketId": "b",
                    "objectId": "k",
                    "objectGeneration": "x1",
                }
            }
        }
    ).encode(),
    base64.b64encode(b"{}"),
]


@pytest.mark.parametrize("payload", POISON, ids=lambda p: repr(p[:30]))
def test_poison_raises_parse_error_only(payload: bytes) -> None:
    """Malformed input is a ParseError with a reason (for the DLQ), never another exception.
    An empty list is allowed only for inputs that are valid but carry no change."""
    try:
        events = parse_any(payload)
    except ParseError as exc:
        reason = exc.reason
    else:
        assert events == []
        return
    assert reason


@pytest.mark.parametrize(
    ("sample_name", "path", "value"),
    [
        ("s3_sqs_put.json", ("Records", 0, "s3", "object", "key"), "k\ud800"),
        ("s3_eventbridge_created.json", ("detail", "bucket", "name"), "\ud800"),
        ("gcs_finalize_push.json", ("message", "attributes", "objectId"), "\udc80"),
        ("s3_sqs_put.json", ("Records", 0, "eventTime"), "9999-12-31T23:59:59-14:00"),
    ],
)
def test_what_cannot_travel_is_refused(
    sample_name: str, path: tuple[object, ...], value: str
) -> None:
    """A lone surrogate (JSON's \\ud800 escape) in any field, or a time that leaves the
    calendar in UTC, is a ParseError: an event carrying it could not be published to Kafka or
    recorded in the catalog, and would fail every time it is tried."""
    document: Any = json.loads(sample(sample_name))
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(ParseError):
        parse_any(json.dumps(document))


def test_event_times_are_in_utc() -> None:
    document = json.loads(sample("s3_sqs_put.json"))
    document["Records"][0]["eventTime"] = "2026-11-29T05:00:00.123+02:00"
    [event] = parse_s3(json.dumps(document))
    assert event.event_time.utcoffset() == timedelta(0)
    assert event.event_time.hour == 3


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(payload: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_any(payload)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "Records",
                        "eventVersion",
                        "s3",
                        "object",
                        "key",
                        "bucket",
                        "name",
                        "message",
                        "attributes",
                        "eventType",
                        "subject",
                        "data",
                        "Type",
                        "Message",
                        "specversion",
                        "type",
                        "detail",
                        "detail-type",
                        "source",
                    ]
                ),
                children,
                max_size=5,
            )
        ),
        max_leaves=30,
    )
)
def test_arbitrary_json_shapes_never_crash(document: object) -> None:
    with contextlib.suppress(ParseError):
        parse_any(json.dumps(document))
