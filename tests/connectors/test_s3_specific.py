"""S3 specifics on moto: CRC32C on every write, error mapping, keys, versions, prefixes."""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import google_crc32c
import pytest
from botocore.exceptions import ClientError

from connectors import open_store
from connectors.aws_session import USER_AGENT
from connectors.base import (
    AlreadyExists,
    ChecksumKind,
    ContainerNotFound,
    InvalidKey,
    MiB,
    NotFound,
    NotSupported,
    ObjectAttributes,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    TransientError,
    parse_retry_after,
)
from connectors.s3 import S3Store
from connectors.s3.errors import map_error
from replicator.devstack import StackState, environment
from tests.conformance.test_store_conformance import HOSTILE_KEYS
from tests.conftest import store_root_url, unique_name
from tests.independent import read_object


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


@pytest.fixture
async def s3(devstack: StackState, tmp_path: Path) -> AsyncIterator[S3Store]:
    store = open_store(store_root_url("s3", tmp_path))
    assert isinstance(store, S3Store)
    await store.create_container()
    try:
        yield store
    finally:
        await store.close()


class TestChecksums:
    async def test_single_put_reports_crc32c_of_the_bytes(self, s3: S3Store) -> None:
        """The CRC32C S3 holds for a single put is the CRC32C of exactly the bytes sent."""
        data = os.urandom(300_000)
        written = await s3.put("crc", data)
        head = await s3.head("crc")
        assert head.checksums[ChecksumKind.CRC32C] == crc32c_b64(data)
        assert written.checksums[ChecksumKind.CRC32C] == crc32c_b64(data)

    async def test_parts_carry_crc32c_and_the_object_its_full_crc32c(self, s3: S3Store) -> None:
        """Each part token holds its part's CRC32C; the completed object reports the CRC32C
        of its whole bytes (a FULL_OBJECT checksum S3 combines from the parts'), never a
        composite checksum of checksums."""
        parts = [os.urandom(s3.limits.min_part_size), os.urandom(12_345)]
        upload_id = await s3.create_multipart("mp", attributes=None)
        tokens = [await s3.put_part("mp", upload_id, n, p) for n, p in enumerate(parts, 1)]
        for token, data in zip(tokens, parts, strict=True):
            assert token.checksums[ChecksumKind.CRC32C] == crc32c_b64(data)
            assert token.size == len(data)
            assert token.token.startswith('"')  # the part's ETag, which complete needs
        whole = b"".join(parts)
        meta = await s3.complete_multipart(
            "mp",
            upload_id,
            list(reversed(tokens)),
            checksums={ChecksumKind.CRC32C: crc32c_b64(whole)},
        )
        assert meta.size == len(whole)
        head = await s3.head("mp")
        assert head.checksums[ChecksumKind.CRC32C] == crc32c_b64(whole)
        assert read_object(s3.url_for("mp")) == whole


class TestErrorMapping:
    """The mapping helper on ClientError values as botocore builds them from responses."""

    @staticmethod
    def client_error(
        code: str, status: int, headers: dict[str, str] | None = None, op: str = "PutObject"
    ) -> ClientError:
        return ClientError(
            {
                "Error": {"Code": code, "Message": f"{code} message"},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
            },
            op,
        )

    def mapped(self, exc: BaseException, **kwargs: bool) -> Exception:
        return map_error(
            exc,
            url="s3://bucket/key",
            bucket="bucket",
            endpoint="http://127.0.0.1:1",
            **kwargs,
        )

    def test_slow_down_with_retry_after_is_throttled(self) -> None:
        error = self.mapped(self.client_error("SlowDown", 503, {"retry-after": "7"}))
        assert isinstance(error, Throttled)
        assert error.retriable
        assert error.retry_after == 7.0

    def test_throttled_without_retry_after(self) -> None:
        error = self.mapped(self.client_error("SlowDown", 503))
        assert isinstance(error, Throttled)
        assert error.retry_after is None

    def test_bodiless_head_503_is_throttled(self) -> None:
        error = self.mapped(self.client_error("503", 503, {"retry-after": "2"}, op="HeadObject"))
        assert isinstance(error, Throttled)
        assert error.retry_after == 2.0

    def test_retry_after_as_http_date(self) -> None:
        now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
        later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
        assert parse_retry_after(later, now) == 30.0
        assert parse_retry_after("soon", now) is None

    def test_no_such_key_is_not_found(self) -> None:
        error = self.mapped(self.client_error("NoSuchKey", 404, op="GetObject"))
        assert type(error) is NotFound

    def test_missing_bucket_is_container_not_found_naming_the_bucket(self) -> None:
        error = self.mapped(self.client_error("NoSuchBucket", 404))
        assert type(error) is ContainerNotFound
        assert "'bucket'" in str(error)

    def test_access_denied_is_permission_denied(self) -> None:
        error = self.mapped(self.client_error("AccessDenied", 403))
        assert isinstance(error, PermissionDenied)
        assert not error.retriable

    def test_precondition_failed(self) -> None:
        assert type(self.mapped(self.client_error("PreconditionFailed", 412))) is (
            PreconditionFailed
        )
        assert isinstance(
            self.mapped(self.client_error("PreconditionFailed", 412), create_only=True),
            AlreadyExists,
        )

    def test_server_errors_are_transient(self) -> None:
        error = self.mapped(self.client_error("InternalError", 500))
        assert type(error) is TransientError
        assert error.retriable

    def test_not_implemented_is_not_supported(self) -> None:
        assert isinstance(self.mapped(self.client_error("NotImplemented", 501)), NotSupported)


class TestEndpoint:
    async def test_unreachable_endpoint_is_transient_and_named(self) -> None:
        """A closed port fails fast as TransientError naming the endpoint."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        endpoint = f"http://127.0.0.1:{port}"
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        with environment(env):
            store = open_store(f"s3://{unique_name()}")
            async with store:
                started = time.monotonic()
                with pytest.raises(TransientError) as caught:
                    await store.head("k")
                elapsed = time.monotonic() - started
        assert endpoint in str(caught.value)
        assert elapsed < 10

    async def test_missing_bucket_names_the_bucket(self, devstack: StackState) -> None:
        name = unique_name("missing")
        async with open_store(f"s3://{name}") as store:
            with pytest.raises(ContainerNotFound, match=name):
                await store.put("k", b"data")
            with pytest.raises(ContainerNotFound, match=name):
                await store.head("k")

    async def test_a_missing_key_in_an_existing_bucket_is_not_found(self, s3: S3Store) -> None:
        """A HEAD's 404 cannot tell a missing key from a missing bucket; the store asks."""
        with pytest.raises(NotFound) as caught:
            await s3.head("nope")
        assert type(caught.value) is NotFound


class TestUserAgent:
    async def test_every_request_names_the_product_in_one_fixed_user_agent(
        self, s3: S3Store
    ) -> None:
        """Requests the SDK sends carry one fixed User-Agent naming the product (what server
        access logs show), not botocore's default, which it rebuilds component by component on
        every request. (The direct requests send the same: tests/connectors/test_s3_direct.)"""
        seen: list[str] = []
        s3.direct_requests = False
        await s3.close()

        def capture(request: Any, **_: Any) -> None:
            seen.append(request.headers["User-Agent"].decode())

        client = await s3._s3()
        client.meta.events.register("before-send.s3", capture)
        try:
            await s3.put("k", b"data")
            await s3.get("k")
            await s3.head("k")
        finally:
            client.meta.events.unregister("before-send.s3", capture)
        assert len(seen) == 3
        assert len(set(seen)) == 1, seen
        assert seen[0].startswith(USER_AGENT + " "), seen[0]
        assert "ua/2.1" not in seen[0], "botocore's default User-Agent"


class TestKeys:
    async def test_every_hostile_key_round_trips(self, s3: S3Store) -> None:
        """S3 holds any UTF-8 key: none of the conformance suite's hostile keys is refused."""
        for key in HOSTILE_KEYS:
            await s3.put(key, key.encode())
        listed = sorted([meta.key async for meta in s3.list()])
        assert listed == sorted(HOSTILE_KEYS)
        for key in HOSTILE_KEYS:
            assert await s3.read(key) == key.encode()

    async def test_xml_illegal_key_single_put_but_no_multipart(self, s3: S3Store) -> None:
        """A key with a character XML 1.0 cannot carry is listed byte-exact (URL-encoded
        listing) but refused for multipart uploads, whose XML responses echo the key."""
        key = "ctl\x01char"
        await s3.put(key, b"x")
        assert [meta.key async for meta in s3.list()] == [key]
        with pytest.raises(InvalidKey, match="XML"):
            await s3.create_multipart(key)

    async def test_key_over_1024_bytes_refused(self, s3: S3Store) -> None:
        with pytest.raises(InvalidKey, match="1024"):
            await s3.put("é" * 513, b"x")


class TestPrefixAndVersions:
    async def test_prefixed_root_keeps_keys_relative(self, s3: S3Store) -> None:
        """A store rooted at bucket/prefix lists, reads and names keys relative to it."""
        async with open_store(f"s3://{s3.bucket}/tenant a/") as rooted:
            assert rooted.root_url == f"s3://{s3.bucket}/tenant a/"
            meta = await rooted.put("x y", b"inside")
            assert meta.url == f"s3://{s3.bucket}/tenant a/x y"
            await s3.put("outside", b"outside")
            assert [m.key async for m in rooted.list()] == ["x y"]
            upload_id = await rooted.create_multipart("pending")
            uploads = [u async for u in rooted.list_multipart_uploads()]
            assert [(u.key, u.upload_id) for u in uploads] == [("pending", upload_id)]
            assert isinstance(uploads[0].initiated, datetime)
            await rooted.abort_multipart("pending", upload_id)
        assert await s3.read("tenant a/x y") == b"inside"

    async def test_versions_pin_reads(self, s3: S3Store) -> None:
        """In a versioned bucket old versions stay readable by id."""
        boto3.client(
            "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
        ).put_bucket_versioning(Bucket=s3.bucket, VersioningConfiguration={"Status": "Enabled"})
        old = await s3.put("v", b"old")
        new = await s3.put("v", b"new")
        assert old.version is not None
        assert old.version != new.version
        assert await s3.read("v", version=old.version) == b"old"
        assert (await s3.head("v", version=old.version)).etag == old.etag

    async def test_unversioned_bucket_reports_no_version(self, devstack: StackState) -> None:
        """An unversioned bucket's "null" version is reported as None."""
        name = unique_name()
        boto3.client(
            "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
        ).create_bucket(Bucket=name)
        async with open_store(f"s3://{name}") as store:
            meta = await store.put("k", b"data")
            assert meta.version is None
            assert (await store.head("k")).version is None
            upload_id = await store.create_multipart("m")
            token = await store.put_part("m", upload_id, 1, b"tiny")
            assert (await store.complete_multipart("m", upload_id, [token])).version is None

    async def test_abort_unknown_upload_is_quiet(self, s3: S3Store) -> None:
        await s3.abort_multipart("k", "no-such-upload")


class TestCopy:
    async def test_copy_with_new_attributes_keeps_bytes_and_crc32c(self, s3: S3Store) -> None:
        """A copy given attributes replaces them; the bytes and their CRC32C carry over."""
        data = os.urandom(40_000)
        source = await s3.put("from space", data, attributes=ObjectAttributes("text/plain"))
        copied = await s3.copy_within(
            "from space",
            "to+plus",
            if_match=source.etag,
            attributes=ObjectAttributes("application/json", user_metadata={"replica": "1"}),
        )
        assert copied.size == len(data)
        assert copied.checksums.get(ChecksumKind.CRC32C, crc32c_b64(data)) == crc32c_b64(data)
        head = await s3.head("to+plus")
        assert head.attributes.content_type == "application/json"
        assert dict(head.attributes.user_metadata) == {"replica": "1"}
        assert head.checksums[ChecksumKind.CRC32C] == crc32c_b64(data)
        assert await s3.read("to+plus") == data

    async def test_copy_beyond_copy_object_goes_part_by_part(self, s3: S3Store) -> None:
        """Objects over CopyObject's limit (5 GiB; lowered here) are copied with UploadPartCopy,
        range by range, with the new attributes and no upload left behind."""
        s3.copy_in_parts_above = 6 * MiB
        s3.copy_part_size = 5 * MiB
        data = os.urandom(12 * MiB + 7)
        source = await s3.put("huge", data, attributes=ObjectAttributes("text/csv"))
        copied = await s3.copy_within(
            "huge",
            "huge-copy",
            if_match=source.etag,
            attributes=ObjectAttributes("text/csv", user_metadata={"replica": "1"}),
        )
        assert copied.size == len(data)
        assert await s3.read("huge-copy") == data
        head = await s3.head("huge-copy")
        assert dict(head.attributes.user_metadata) == {"replica": "1"}
        assert [u async for u in s3.list_multipart_uploads()] == []

    async def test_copy_in_parts_of_a_changed_source_fails_and_leaves_nothing(
        self, s3: S3Store
    ) -> None:
        s3.copy_in_parts_above = 6 * MiB
        s3.copy_part_size = 5 * MiB
        old = await s3.put("moving", os.urandom(12 * MiB))
        await s3.put("moving", os.urandom(12 * MiB))
        with pytest.raises(PreconditionFailed):
            await s3.copy_within("moving", "moving-copy", if_match=old.etag)
        with pytest.raises(NotFound):
            await s3.head("moving-copy")
        assert [u async for u in s3.list_multipart_uploads()] == []

    async def test_a_fenced_copy_in_parts_refused_leaves_the_key_and_no_upload(
        self, s3: S3Store
    ) -> None:
        """A copy in parts completes under the destination's condition: refused, the key keeps
        what another writer put there and the upload is aborted."""
        s3.copy_in_parts_above = 6 * MiB
        s3.copy_part_size = 5 * MiB
        source = await s3.put("huge", os.urandom(12 * MiB))
        await s3.put("taken", b"there first")
        with pytest.raises(AlreadyExists):
            await s3.copy_within("huge", "taken", if_match=source.etag, create_only=True)
        assert await s3.read("taken") == b"there first"
        assert [u async for u in s3.list_multipart_uploads()] == []


class TestStreamedReads:
    async def test_a_range_streams_in_chunks_and_is_pinned(self, s3: S3Store) -> None:
        data = os.urandom(3 * 1024 * 1024 + 5)
        meta = await s3.put("streamed", data)
        chunks = [
            chunk
            async for chunk in s3.read_stream("streamed", 7, len(data) - 1, if_match=meta.etag)
        ]
        assert len(chunks) > 1
        assert b"".join(chunks) == data[7:-1]
        await s3.put("streamed", b"changed")
        with pytest.raises(PreconditionFailed):
            async for _ in s3.read_stream("streamed", 0, 10, if_match=meta.etag):
                pass
