"""Copies to GCS as one resumable upload session: the parts of a multipart copy go in order,
and the replica is an ordinary object (an MD5, no components), checked through the raw JSON
API; an upload left to resume is still composed, and a crash mid-session costs a new one.

fake-gcs-server reports an MD5 and no ``componentCount`` for composed objects too, so which
way an object was made shows in the requests sent to GCS (a compose is a COPY request)."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import pytest

from connectors.base import (
    ChecksumKind,
    MiB,
    ObjectStore,
    RequestClass,
    StoreRequest,
    observing,
)
from connectors.gcs import GCSStore
from replicator.engine import hashing
from replicator.engine.retry import RetryPolicy
from replicator.engine.transfer import Copier
from tests.conftest import StoreFactory
from tests.connectors.test_gcs_specific import raw_names, raw_resource
from tests.engine.faults import FaultyStore
from tests.engine.test_copy import SimulatedCrash, _NoForgetJournal
from tests.independent import read_object

PART = 4 * MiB


def bucket_of(store: ObjectStore) -> str:
    assert isinstance(store, GCSStore)
    return store.bucket


FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


@pytest.mark.parametrize("source_scheme", ["s3", "file"], ids=["streamed", "part-reads"])
async def test_parts_in_order_make_an_ordinary_object(
    store_factory: StoreFactory, source_scheme: str
) -> None:
    """Read as one stream (S3) or part by part (files), with parts in flight in parallel
    elsewhere: the parts still reach the session in order, and GCS holds one plain object."""
    source = await store_factory(source_scheme)
    gcs = await store_factory("gs")
    dest = FaultyStore(gcs)
    data = os.urandom(5 * PART + 777)
    await source.put("k", data)

    requests: list[StoreRequest] = []
    with observing(requests.append):
        result = await Copier(part_size=PART, concurrency=4, retry=FAST_RETRY).copy(
            source, "k", dest, "k"
        )

    assert result.ordered_upload
    to_gcs = Counter(r.request_class for r in requests if r.location == "gs")
    # The session's creation, six parts and its completion; no part object, no compose.
    assert to_gcs[RequestClass.PUT] == 8
    assert to_gcs[RequestClass.COPY] == to_gcs[RequestClass.DELETE] == 0
    assert dest.parts_uploaded == [1, 2, 3, 4, 5, 6]
    resource = await raw_resource(bucket_of(gcs), "k")
    assert "componentCount" not in resource
    assert resource["md5Hash"] == hashing.checksum_b64(ChecksumKind.MD5, data)
    assert resource["crc32c"] == hashing.crc32c_b64(hashing.crc32c(data))
    assert read_object(gcs.url_for("k")) == data
    assert result.fingerprint == hashing.fingerprint(data)
    assert await raw_names(bucket_of(gcs), "") == ["k"]


async def test_a_composed_upload_left_to_resume_is_resumed(store_factory: StoreFactory) -> None:
    """A journaled upload of parts (a copy that composed, killed mid-way) is resumed from its
    parts, composed, rather than started again as a session."""
    source = FaultyStore(await store_factory("file"))
    gcs = await store_factory("gs")
    composing = FaultyStore(gcs)
    composing.limits = dataclasses.replace(gcs.limits, ordered_uploads=False)
    data = os.urandom(6 * PART)
    await source.put("k", data)
    engine = Copier(part_size=PART, concurrency=1, retry=FAST_RETRY)

    async def crash_after_three(read_number: int) -> None:
        if read_number == 4:
            raise SimulatedCrash

    source.before_read = crash_after_three
    composing.ignore_aborts = True
    keeper = engine.journal
    engine.journal = _NoForgetJournal(keeper)  # type: ignore[assignment]
    with pytest.raises(SimulatedCrash):
        await engine.copy(source, "k", composing, "k")
    source.before_read = None
    engine.journal = keeper
    dest = FaultyStore(gcs)

    requests: list[StoreRequest] = []
    with observing(requests.append):
        result = await engine.copy(source, "k", dest, "k")

    assert not result.ordered_upload
    assert result.parts_resumed == 3
    assert dest.parts_uploaded == [4, 5, 6]
    assert read_object(gcs.url_for("k")) == data
    assert RequestClass.COPY in {r.request_class for r in requests if r.location == "gs"}


async def test_a_crash_mid_session_starts_a_new_one(store_factory: StoreFactory) -> None:
    """Nothing of a session is journaled (its id is a credential): the copy after a crash
    sends every part again into a new session and lands the right bytes."""
    source = FaultyStore(await store_factory("file"))
    gcs = await store_factory("gs")
    dest = FaultyStore(gcs)
    data = os.urandom(4 * PART)
    await source.put("k", data)
    engine = Copier(part_size=PART, concurrency=1, retry=FAST_RETRY)

    async def crash_after_two(read_number: int) -> None:
        if read_number == 3:
            raise SimulatedCrash

    source.before_read = crash_after_two
    dest.ignore_aborts = True
    with pytest.raises(SimulatedCrash):
        await engine.copy(source, "k", dest, "k")
    assert await engine.journal.find(gcs.url_for("k")) is None
    source.before_read = None
    dest.parts_uploaded.clear()

    result = await engine.copy(source, "k", dest, "k")

    assert result.ordered_upload
    assert (result.parts_resumed, dest.parts_uploaded) == (0, [1, 2, 3, 4])
    assert read_object(gcs.url_for("k")) == data
