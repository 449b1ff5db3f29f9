"""S3's small-object requests sent without the SDK (connectors.s3_direct), on moto: that a
store's GET, PUT and HEAD take that path, and that it answers and fails as the SDK path does."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import boto3
import google_crc32c
import pytest
from aiohttp import web
from multidict import CIMultiDict

from connectors import open_store
from connectors.aws_session import USER_AGENT
from connectors.base import (
    AlreadyExists,
    ChecksumKind,
    ContainerNotFound,
    IntegrityError,
    NotFound,
    ObjectAttributes,
    ObjectStore,
    PreconditionFailed,
    RequestClass,
    StoreRequest,
    Throttled,
    observing,
)
from connectors.credentials import AwsAccess
from connectors.s3 import S3Store
from connectors.s3.store import DIRECT_REQUESTS_VARIABLE
from replicator.devstack import StackState, environment
from tests.conformance.test_store_conformance import HOSTILE_KEYS
from tests.conftest import store_root_url, unique_name
from tests.forwarding import Answer, RecordingProxy, flip_a_read_byte


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


@pytest.fixture
async def proxy(devstack: StackState) -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy(os.environ["AWS_ENDPOINT_URL"]) as started:
        yield started


@pytest.fixture
async def s3(proxy: RecordingProxy) -> AsyncIterator[S3Store]:
    """A store in a fresh bucket reached through ``proxy``."""
    store = S3Store(unique_name(), "", AwsAccess(endpoint_url=proxy.url))
    await store.create_container()
    proxy.seen.clear()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sdk_only(devstack: StackState, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    with environment({DIRECT_REQUESTS_VARIABLE: "0"}):
        store = open_store(store_root_url("s3", tmp_path))
    await store.create_container()
    try:
        yield store
    finally:
        await store.close()


def sdk_requests(store: S3Store, seen: list[str]) -> Callable[[], None]:
    """Record the operations the store's SDK client sends in ``seen``; returns the undo."""

    def capture(event_name: str, **_: Any) -> None:
        seen.append(event_name.rsplit(".", 1)[-1])

    client = store._client
    client.meta.events.register("before-send.s3", capture)
    return lambda: client.meta.events.unregister("before-send.s3", capture)


class TestPath:
    async def test_get_put_and_head_go_direct_with_the_products_user_agent(
        self, s3: S3Store, proxy: RecordingProxy
    ) -> None:
        """The SDK client sends none of a small object's requests; the store sends one
        request each, naming the product as the SDK path does."""
        await s3._s3()
        through_sdk: list[str] = []
        undo = sdk_requests(s3, through_sdk)
        try:
            await s3.put("k", b"data")
            await s3.get("k")
            await s3.head("k")
            await s3.read("k")
        finally:
            undo()
        assert through_sdk == []
        assert [method for method, _ in proxy.seen] == ["PUT", "GET", "HEAD", "GET"]
        assert {agent for _, agent in proxy.seen} == {USER_AGENT}

    async def test_every_request_is_reported_with_its_class_and_bytes(self, s3: S3Store) -> None:
        """Cost accounting sees the direct requests as it saw the SDK's."""
        reported: list[StoreRequest] = []
        with observing(reported.append):
            await s3.put("k", b"x" * 4096)
            await s3.get("k")
            await s3.head("k")
        assert [
            (r.request_class, r.bytes_sent, r.bytes_received, r.requests) for r in reported
        ] == [
            (RequestClass.PUT, 4096, 0, 1),
            (RequestClass.GET, 0, 4096, 1),
            (RequestClass.HEAD, 0, 0, 1),
        ]
        assert {r.location for r in reported} == {s3.location}

    async def test_the_setting_sends_them_through_the_sdk(self, sdk_only: ObjectStore) -> None:
        """``REPLICATOR_S3_DIRECT_REQUESTS=0``: the SDK sends every request, as before."""
        assert isinstance(sdk_only, S3Store)
        await sdk_only._s3()
        through_sdk: list[str] = []
        undo = sdk_requests(sdk_only, through_sdk)
        try:
            await sdk_only.put("k", b"data")
            await sdk_only.get("k")
            await sdk_only.head("k")
        finally:
            undo()
        assert through_sdk == ["PutObject", "GetObject", "HeadObject"]


class TestSameAnswers:
    async def test_meta_matches_the_sdk_paths_for_odd_keys_and_metadata(
        self, s3: S3Store, proxy: RecordingProxy
    ) -> None:
        """Hostile keys and metadata values with spaces, ``+``, ``%`` and non-ASCII text
        round-trip, and both paths describe each object alike."""
        sdk = S3Store(s3.bucket, "", AwsAccess(endpoint_url=proxy.url))
        sdk.direct_requests = False
        attributes = ObjectAttributes(
            content_type="text/plain; charset=utf-8",
            cache_control="no-cache",
            content_disposition='attachment; filename="a b.txt"',
            user_metadata={"plain": "a b+c%20d", "with-dash": "é ü 漢", "x_under": "%2B+"},
        )
        try:
            for index, key in enumerate(HOSTILE_KEYS):
                data = f"object {index}".encode()
                written = await s3.put(key, data, attributes=attributes)
                meta, got = await s3.get(key)
                sdk_meta, sdk_got = await sdk.get(key)
                assert got == sdk_got == data, key
                assert meta == sdk_meta, key
                assert await s3.head(key) == await sdk.head(key), key
                assert meta.attributes == attributes, key
                assert meta.etag == written.etag
                assert (
                    meta.checksums == written.checksums == {ChecksumKind.CRC32C: crc32c_b64(data)}
                )
        finally:
            await sdk.close()

    async def test_versions_pin_gets_and_heads(self, s3: S3Store) -> None:
        client = await s3._s3()
        await client.put_bucket_versioning(
            Bucket=s3.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        first = await s3.put("k", b"one")
        await s3.put("k", b"two")
        assert first.version is not None
        meta, data = await s3.get("k", version=first.version)
        assert (data, meta.version) == (b"one", first.version)
        assert (await s3.head("k", version=first.version)).size == 3


class TestErrors:
    async def test_a_missing_key_is_not_found(self, s3: S3Store) -> None:
        for attempt in (s3.get("nope"), s3.head("nope"), s3.read("nope")):
            with pytest.raises(NotFound) as caught:
                await attempt
            assert type(caught.value) is NotFound

    async def test_a_missing_bucket_is_container_not_found(self, proxy: RecordingProxy) -> None:
        name = unique_name("missing")
        async with S3Store(name, "", AwsAccess(endpoint_url=proxy.url)) as store:
            for attempt in (store.get("k"), store.head("k"), store.put("k", b"data")):
                with pytest.raises(ContainerNotFound, match=name):
                    await attempt

    async def test_failed_conditions(self, s3: S3Store) -> None:
        """If-Match on a get or put of another etag, or of a missing key, fails its
        precondition; a create-only put of an existing key finds it exists."""
        written = await s3.put("k", b"data")
        stale = '"00000000000000000000000000000000"'
        with pytest.raises(PreconditionFailed):
            await s3.get("k", if_match=stale)
        with pytest.raises(PreconditionFailed):
            await s3.put("k", b"new", if_match=stale)
        with pytest.raises(PreconditionFailed):
            await s3.put("absent", b"new", if_match=stale)
        with pytest.raises(AlreadyExists):
            await s3.put("k", b"new", create_only=True)
        meta, data = await s3.get("k", if_match=written.etag)
        assert (meta.etag, data) == (written.etag, b"data")
        assert (await s3.put("k", b"new", if_match=written.etag)).etag != written.etag

    async def test_a_body_that_differs_from_its_crc32c_is_an_integrity_error(
        self, s3: S3Store, proxy: RecordingProxy
    ) -> None:
        await s3.put("k", b"data")

        def damage(request: web.Request, answer: Answer) -> Answer:
            status, headers, body = answer
            return (status, headers, body[:-1] + b"?") if request.method == "GET" else answer

        proxy.alter = damage
        with pytest.raises(IntegrityError):
            await s3.get("k")

    @pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
    async def test_a_body_that_differs_from_its_stored_checksum_is_an_integrity_error(
        self, s3: S3Store, proxy: RecordingProxy, algorithm: str
    ) -> None:
        """Whatever checksum the object was written with (boto3 sends CRC32 by default), a
        GET whose bytes do not match it is refused, as the SDK refuses it."""
        client = boto3.client(
            "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
        )
        client.put_object(
            Bucket=s3.bucket, Key="k", Body=b"data" * 1000, ChecksumAlgorithm=algorithm
        )

        proxy.alter = flip_a_read_byte
        with pytest.raises(IntegrityError):
            await s3.get("k")
        with pytest.raises(IntegrityError):
            await s3.read("k")

    async def test_slow_down_is_throttled_with_its_retry_after(
        self, s3: S3Store, proxy: RecordingProxy
    ) -> None:
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"

        def slow_down(_: web.Request, __: Answer) -> Answer:
            return 503, CIMultiDict({"Retry-After": "7"}), body

        await s3._s3()
        proxy.alter = slow_down
        with pytest.raises(Throttled) as caught:
            await s3.put("k", b"data")
        assert caught.value.retry_after == 7
