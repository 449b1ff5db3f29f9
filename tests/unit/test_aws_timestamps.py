"""The S3 and SQS connectors parse AWS timestamps with ``fast_timestamp`` instead of
botocore's dateutil-based parser: the same instants for every form AWS answers with."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

from botocore.utils import parse_timestamp
from hypothesis import given
from hypothesis import strategies as st

from connectors.aws_session import aws_session, fast_timestamp

INSTANTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(INSTANTS)
def test_an_http_date_parses_as_botocore_parses_it(when: datetime) -> None:
    text = email.utils.format_datetime(when.replace(microsecond=0), usegmt=True)
    assert fast_timestamp(text) == parse_timestamp(text) == when.replace(microsecond=0)


@given(INSTANTS, st.sampled_from(["seconds", "milliseconds", "microseconds"]))
def test_an_iso_instant_in_utc_parses_as_botocore_parses_it(when: datetime, spec: str) -> None:
    text = when.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
    assert fast_timestamp(text) == parse_timestamp(text)
    assert fast_timestamp(text) - when < timedelta(milliseconds=1)


def test_other_forms_are_left_to_botocore() -> None:
    for text in ["1700000000", "2026-11-30T12:01:02+01:00", "2026-11-30 12:01:02"]:
        assert fast_timestamp(text) == parse_timestamp(text)


def test_sessions_parse_responses_with_it() -> None:
    factory = aws_session(None).get_component("response_parser_factory")
    assert factory.create_parser("rest-xml")._timestamp_parser is fast_timestamp
