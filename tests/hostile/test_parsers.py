"""Property-based fuzzing of every parser that reads outside input.

The notification parsers get valid notifications of every kind with any of their values
replaced by a hostile one (wrong types, huge and negative numbers, far dates and offsets, lone
surrogates, NULs, empty and very long strings, deep nesting): each either refuses with a
``ParseError`` (its reason goes to the DLQ) or returns events that survive the trip through
Kafka (``to_json`` then ``from_json``) unchanged, with an event time in UTC. The same for the
worker's own record parser, store URLs, sizes and durations, and the daemon's configuration.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors import parse_store_url
from connectors.base import StoreError
from replicator.daemon.config import check_config
from replicator.engine.units import parse_duration, parse_part_size, parse_size
from replicator.errors import ReplicatorError
from replicator.pipeline.events import (
    ChangeEvent,
    ParseError,
    azure_validation_code,
    parse_any,
    parse_azure,
    parse_gcs,
    parse_s3,
)

SAMPLES = Path(__file__).parent.parent / "events" / "samples"
PARSERS: dict[str, Callable[[bytes | str], list[ChangeEvent]]] = {
    "s3": parse_s3,
    "gcs": parse_gcs,
    "azure": parse_azure,
}
SAMPLE_PARSER = {
    "s3_sqs_put.json": "s3",
    "s3_sqs_delete.json": "s3",
    "s3_sns_envelope.json": "s3",
    "s3_eventbridge_created.json": "s3",
    "s3_eventbridge_deleted.json": "s3",
    "s3_multipart_complete.json": "s3",
    "gcs_finalize_push.json": "gcs",
    "gcs_finalize_pull.json": "gcs",
    "gcs_delete.json": "gcs",
    "gcs_delete_overwritten.json": "gcs",
    "azure_eventgrid_created.json": "azure",
    "azure_cloudevents_deleted.json": "azure",
}
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\ud800",
        "a\udc80b",
        "%ED%A0%80",
        "%",
        "+",
        "../../etc/passwd",
        "a/b",
        "x" * 5000,
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "2026-02-30T00:00:00Z",
        "2026-11-29T03:00:00.1234567890123Z",
        "-1",
        "1" * 400,
        "1e400",
        "NaN",
        "Infinity",
        "00000000000000000000000000000000000000000001",
        "Microsoft.Storage.BlobCreated",
        "OBJECT_FINALIZE",
        "ObjectRemoved:Delete",
        "/blobServices/default/containers/c/blobs/",
        "/blobServices/default/containers//blobs/k",
        "e30=",
        "!!notbase64",
        "ü",
        "\u202e",
        "\ufeff",
    ]
)
HOSTILE_VALUES = st.one_of(
    HOSTILE_STRINGS,
    st.text(max_size=40),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in ``document``."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def _value_at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


@st.composite
def hostile_strings_like(draw: st.DrawFn, original: str) -> str:
    """``original`` with a hostile string put in front, inside or behind it, or instead."""
    hostile = draw(HOSTILE_STRINGS)
    where = draw(st.integers(0, len(original)))
    return draw(
        st.sampled_from(
            [hostile, original + hostile, hostile + original, original[:where] + hostile]
        )
    )


@st.composite
def hostile_notifications(draw: st.DrawFn) -> tuple[str, Any]:
    """A valid notification with one to three values replaced by hostile ones; a string
    value is mostly replaced by a hostile variant of itself (where parsers are weakest)."""
    name = draw(st.sampled_from(sorted(SAMPLE_PARSER)))
    document = json.loads((SAMPLES / name).read_text())
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)
        strings = [path for path in paths if isinstance(_value_at(document, path), str)]
        if strings and draw(st.integers(0, 3)) > 0:
            path = draw(st.sampled_from(strings))
            value: Any = draw(hostile_strings_like(_value_at(document, path)))
        else:
            path = draw(st.sampled_from(paths))
            value = draw(HOSTILE_VALUES)
        document = _replaced(document, path, value)
    return SAMPLE_PARSER[name], document


def _survives_kafka(events: list[ChangeEvent]) -> None:
    for event in events:
        assert event.event_time.utcoffset() == timedelta(0), event
        assert event.event_time.tzinfo is not None
        assert ChangeEvent.from_json(event.to_json()) == event
        scheme, _, rest = event.source_url.partition("://")
        assert scheme in ("s3", "gs", "az"), event
        assert rest.partition("/")[2], f"no key in {event.source_url!r}"
        assert event.size is None or event.size >= 0


def _sample_with(name: str, path: tuple[Any, ...], value: Any) -> tuple[str, Any]:
    document = json.loads((SAMPLES / name).read_text())
    return SAMPLE_PARSER[name], _replaced(document, path, value)


# Found by the fuzzing below, kept so that every run tries them.
KNOWN = [
    _sample_with("s3_sqs_put.json", ("Records", 0, "s3", "object", "key"), "k\ud800"),
    _sample_with("s3_eventbridge_created.json", ("detail", "bucket", "name"), "\ud800"),
    _sample_with("gcs_finalize_push.json", ("message", "attributes", "objectId"), "\udc80"),
    _sample_with(
        "azure_eventgrid_created.json",
        (0, "subject"),
        "/blobServices/default/containers/c/blobs/k\ud800",
    ),
    _sample_with("s3_sqs_put.json", ("Records", 0, "eventTime"), "9999-12-31T23:59:59-14:00"),
    _sample_with("s3_sqs_put.json", ("Records", 0, "eventTime"), "2026-11-29T05:00:00+02:00"),
]


class TestNotifications:
    @FUZZ
    @given(hostile_notifications(), st.booleans())
    @example(KNOWN[0], True)
    @example(KNOWN[1], False)
    @example(KNOWN[2], True)
    @example(KNOWN[3], False)
    @example(KNOWN[4], True)
    @example(KNOWN[5], True)
    def test_hostile_values_are_refused_or_survive_the_trip_through_kafka(
        self, notification: tuple[str, Any], as_text: bool
    ) -> None:
        parser_name, document = notification
        payload: bytes | str = json.dumps(document)
        if not as_text:
            payload = payload.encode("utf-8", errors="surrogatepass")
        for parser in (PARSERS[parser_name], parse_any):
            try:
                events = parser(payload)
            except ParseError as exc:
                reason = exc.reason
                assert reason
                continue
            _survives_kafka(events)

    @FUZZ
    @given(st.binary(max_size=3000))
    def test_arbitrary_bytes_are_refused_or_parsed(self, payload: bytes) -> None:
        for parser in (*PARSERS.values(), azure_validation_code):
            with contextlib.suppress(ParseError):
                parser(payload)

    @pytest.mark.parametrize("depth", [10, 1000, 100_000])
    def test_nesting_is_refused_with_a_reason(self, depth: int) -> None:
        payload = '{"Records": ' + "[" * depth + "]" * depth + "}"
        for parser in (*PARSERS.values(), parse_any):
            with contextlib.suppress(ParseError):
                _survives_kafka(parser(payload))


class TestKafkaRecords:
    """The worker's parser of the records it consumes (``ChangeEvent.from_json``)."""

    @FUZZ
    @given(
        st.fixed_dictionaries(
            {},
            optional={
                "kind": st.one_of(st.sampled_from(["put", "delete"]), HOSTILE_VALUES),
                "source_url": st.one_of(st.just("s3://b/k"), HOSTILE_VALUES),
                "version": HOSTILE_VALUES,
                "sequencer": HOSTILE_VALUES,
                "size": HOSTILE_VALUES,
                "etag": HOSTILE_VALUES,
                "event_time": st.one_of(st.just("2026-11-29T03:00:00+00:00"), HOSTILE_VALUES),
                "origin": st.one_of(
                    st.sampled_from(["s3", "gcs", "azure", "scan"]), HOSTILE_VALUES
                ),
            },
        )
    )
    def test_any_record_is_an_event_or_a_parse_error(self, record: dict[str, Any]) -> None:
        payload = json.dumps(record).encode("utf-8", errors="surrogatepass")
        try:
            event = ChangeEvent.from_json(payload)
        except ParseError as exc:
            reason = exc.reason
            assert reason
            return
        assert event.event_time.tzinfo is not None
        assert ChangeEvent.from_json(event.to_json()) == event

    @FUZZ
    @given(st.binary(max_size=2000))
    def test_any_bytes_are_an_event_or_a_parse_error(self, payload: bytes) -> None:
        with contextlib.suppress(ParseError):
            ChangeEvent.from_json(payload)


class TestSmallParsers:
    @FUZZ
    @given(st.one_of(HOSTILE_STRINGS, st.text(max_size=60)))
    def test_store_urls(self, text: str) -> None:
        try:
            parsed = parse_store_url(text)
        except (StoreError, ValueError):
            return
        assert parsed.scheme

    @FUZZ
    @given(
        st.one_of(
            HOSTILE_STRINGS,
            st.text(max_size=30),
            st.from_regex(r"\d{1,30}(\.\d+)?\s*[KMGTP]?i?B?", fullmatch=True),
        )
    )
    def test_sizes_and_durations(self, text: str) -> None:
        for parser in (parse_size, parse_part_size, parse_duration):
            try:
                value = parser(text)
            except (ValueError, ReplicatorError):
                continue
            if isinstance(value, int):
                assert value >= 0
            elif isinstance(value, timedelta):
                assert value >= timedelta(0)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        document=st.dictionaries(
            st.sampled_from(["kafka", "catalog", "http", "copy", "routes", "sqs", "deletes", "x"]),
            st.one_of(
                HOSTILE_VALUES,
                st.dictionaries(
                    st.sampled_from(
                        [
                            "bootstrap",
                            "url",
                            "port",
                            "workers",
                            "memory",
                            "part_size",
                            "sweep_interval",
                            "partitions",
                            "queue_url",
                            "group",
                        ]
                    ),
                    HOSTILE_VALUES,
                    max_size=4,
                ),
            ),
            max_size=4,
        )
    )
    def test_configuration_problems_are_reported_never_raised(
        self, document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        path = tmp_path_factory.mktemp("config") / "replicator.toml"
        path.write_text(_toml(document), encoding="utf-8", errors="surrogatepass")
        problems = check_config(path, environ={})
        assert all(isinstance(problem, str) and problem for problem in problems)


def _toml(document: dict[str, Any]) -> str:
    """A TOML rendering of ``document`` (top-level tables, JSON-compatible values)."""
    lines = []
    for name, value in document.items():
        if isinstance(value, dict):
            lines.append(f"[{name}]")
            lines += [f"{key} = {_toml_value(item)}" for key, item in value.items()]
        else:
            lines.insert(0, f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def test_utc_is_the_only_offset_events_carry() -> None:
    """A documented sample with an offset is normalised to UTC (and still the same time)."""
    document = json.loads((SAMPLES / "s3_sqs_put.json").read_text())
    document["Records"][0]["eventTime"] = "2026-11-29T05:00:00.123+02:00"
    [event] = parse_s3(json.dumps(document))
    assert event.event_time.tzinfo is UTC or event.event_time.utcoffset() == timedelta(0)
    assert event.event_time.hour == 3
