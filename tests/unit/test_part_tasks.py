"""The parts topic's records: a task survives the trip whatever its keys hold, and anything
else is a ParseError with a reason (dead-lettered, never a crash)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.engine.striping import PartTask
from replicator.pipeline.events import ParseError
from replicator.pipeline.parts import decode_task, encode_task

TASK = PartTask(
    source_root="s3://lake/raw/",
    source_key="2026/11/shard-0001.parquet",
    dest_root="gs://lake-eu/raw/",
    dest_key="2026/11/shard-0001.parquet",
    upload_id="upload-1",
    source_version="v1",
    etag='"abc"',
    version=None,
    size=3 * 2**30,
    part_size=64 * 2**20,
    number=3,
    offset=2 * 64 * 2**20,
    length=64 * 2**20,
)


@given(st.text(min_size=1), st.text(min_size=1))
def test_a_task_comes_back_as_it_went(source_key: str, dest_key: str) -> None:
    task = replace(TASK, source_key=source_key, dest_key=dest_key)
    assert decode_task(encode_task(task)) == task


def _with(**changes: object) -> bytes:
    return json.dumps({**asdict(TASK), **changes}).encode()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"number": 1}).encode(), "fields"),
        (_with(upload_id=""), "upload_id is not a non-empty string"),
        (_with(etag=5), "etag is not a string or null"),
        (_with(size=-1), "size is not a whole number"),
        (_with(length=True), "length is not a whole number"),
        (_with(number=0), "is not a part of"),
        (_with(offset=3 * 2**30), "is not a part of"),
        (b"[" * 100_000, "exceeds"),
    ],
)
def test_anything_else_is_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        decode_task(payload)
