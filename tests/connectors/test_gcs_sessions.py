"""GCS ordered uploads on fake-gcs-server: parts in order into one resumable session, an
ordinary object at the end (an MD5, no components), checked through the raw JSON API."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from connectors import open_store
from connectors.base import (
    AlreadyExists,
    ChecksumKind,
    InvalidArgument,
    MiB,
    NotFound,
    ObjectAttributes,
    PartToken,
    PreconditionFailed,
)
from connectors.gcs import GCSStore
from replicator.devstack import StackState
from replicator.engine.hashing import crc32c, crc32c_b64
from tests.conftest import unique_name
from tests.connectors.test_gcs_specific import raw_names, raw_resource
from tests.independent import read_object


@pytest.fixture
async def gcs(devstack: StackState) -> AsyncIterator[GCSStore]:
    store = open_store(f"gs://{unique_name()}")
    assert isinstance(store, GCSStore)
    await store.create_container()
    try:
        yield store
    finally:
        await store.close()


async def send_in_order(
    gcs: GCSStore, key: str, upload_id: str, data: bytes, part: int
) -> list[PartToken]:
    tokens: list[PartToken] = []
    for number, offset in enumerate(range(0, len(data), part), start=1):
        tokens.append(
            await gcs.put_part_at(key, upload_id, number, offset, data[offset : offset + part])
        )
    return tokens


class TestOrderedUpload:
    async def test_an_ordinary_object_with_its_md5(self, gcs: GCSStore) -> None:
        """Parts in order make one object: not a composite, with GCS's MD5 of the whole, the
        attributes given at creation, and no staging objects left."""
        data = os.urandom(2 * MiB + 12345)
        attributes = ObjectAttributes(content_type="text/csv", user_metadata={"a": "b"})
        upload_id = await gcs.create_ordered_upload("k", attributes=attributes, create_only=True)

        tokens = await send_in_order(gcs, "k", upload_id, data, MiB)
        meta = await gcs.complete_multipart(
            "k",
            upload_id,
            tokens,
            checksums={ChecksumKind.CRC32C: crc32c_b64(crc32c(data))},
            create_only=True,
        )

        resource = await raw_resource(gcs.bucket, "k")
        assert "componentCount" not in resource
        assert resource["md5Hash"] == base64.b64encode(hashlib.md5(data).digest()).decode()
        assert resource["contentType"] == "text/csv"
        assert resource["metadata"] == {"a": "b"}
        assert meta.checksums[ChecksumKind.MD5] == resource["md5Hash"]
        assert meta.checksums[ChecksumKind.CRC32C] == crc32c_b64(crc32c(data))
        assert meta.size == len(data)
        assert read_object(gcs.url_for("k")) == data
        assert await raw_names(gcs.bucket, "") == ["k"]

    async def test_completion_checks_the_parts_follow_each_other(self, gcs: GCSStore) -> None:
        upload_id = await gcs.create_ordered_upload("k")
        tokens = await send_in_order(gcs, "k", upload_id, b"z" * (512 * 1024), 256 * 1024)
        with pytest.raises(InvalidArgument):
            await gcs.complete_multipart("k", upload_id, tokens[1:])
        with pytest.raises(NotFound):
            await gcs.head("k")

    async def test_completion_is_fenced(self, gcs: GCSStore) -> None:
        """Create-only fails over an object written since the session began, if-match over
        another generation: the object there stays."""
        upload_id = await gcs.create_ordered_upload("k", create_only=True)
        tokens = await send_in_order(gcs, "k", upload_id, b"a" * 1000, 1000)
        await gcs.put("k", b"newer")
        with pytest.raises(AlreadyExists):
            await gcs.complete_multipart("k", upload_id, tokens, create_only=True)
        current = await gcs.head("k")

        upload_id = await gcs.create_ordered_upload("k", if_match=current.etag)
        tokens = await send_in_order(gcs, "k", upload_id, b"b" * 1000, 1000)
        await gcs.put("k", b"newest")
        with pytest.raises(PreconditionFailed):
            await gcs.complete_multipart("k", upload_id, tokens, if_match=current.etag)
        assert read_object(gcs.url_for("k")) == b"newest"

    async def test_abort_and_unknown_sessions(self, gcs: GCSStore) -> None:
        """Cancelling a session is not an error, nor is cancelling it twice; nothing is left."""
        upload_id = await gcs.create_ordered_upload("k")
        await gcs.put_part_at("k", upload_id, 1, 0, b"a" * 1000)
        await gcs.abort_multipart("k", upload_id)
        await gcs.abort_multipart("k", upload_id)
        assert await raw_names(gcs.bucket, "") == []
