"""Azure-specific behaviour, checked on Azurite with an independent raw SDK client.

The raw client reads what the connector left in the container (block lists, uncommitted
blobs, stored MD5s) and sends deliberately damaged requests, so these tests check both the
connector's design and the emulator behaviour that design relies on.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import os
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from awscrt import checksums as crt_checksums
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContentSettings
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from connectors import open_store
from connectors.azure.store import DIRECT_REQUESTS_VARIABLE
from connectors.base import (
    ChecksumKind,
    ContainerNotFound,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    InvalidStoreURL,
    NotFound,
    ObjectAttributes,
    ObjectStore,
    PermissionDenied,
    Throttled,
    TransientError,
)
from replicator.devstack import StackState, environment, free_port
from tests.conftest import unique_name

UPLOADS = ".replicator-uploads/"
CREDENTIAL_VARIABLES = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
)


@pytest.fixture
async def az(devstack: StackState) -> AsyncIterator[ObjectStore]:
    store = open_store(f"az://{unique_name('az')}")
    await store.create_container()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def raw(az: ObjectStore) -> AsyncIterator[ContainerClient]:
    """The same container through a plain SDK client that shares no code with the store."""
    container = az.root_url.removeprefix("az://").rstrip("/")
    service = BlobServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    )
    async with service:
        yield service.get_container_client(container)


async def raw_names(raw: ContainerClient) -> list[str]:
    """Every blob in the container, including blobs that hold only uncommitted blocks."""
    return [b.name async for b in raw.list_blobs(include=["uncommittedblobs"])]


def refusal(exc: HttpResponseError) -> tuple[int | None, str | None]:
    """The status and the service's error code, as sent in x-ms-error-code."""
    headers = getattr(exc.response, "headers", {})
    return exc.status_code, headers.get("x-ms-error-code")


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def crc64_b64(data: bytes) -> str:
    return base64.b64encode(crc64(data).to_bytes(8, "little")).decode()


def crc64(data: bytes) -> int:
    return int(crt_checksums.crc64nvme(data))


class TestMultipartDesign:
    async def test_block_ids_are_deterministic(self, az: ObjectStore, raw: ContainerClient) -> None:
        """Block ids are '<upload id>-<part:05d>', all one length, committed in part order."""
        chunks = {n: os.urandom(1000 + n) for n in (1, 2, 3)}
        upload_id = await az.create_multipart("big")
        tokens = await asyncio.gather(
            *(az.put_part("big", upload_id, n, chunks[n]) for n in (3, 1, 2))
        )
        expected = [f"{upload_id}-{n:05d}" for n in (1, 2, 3)]
        assert sorted(t.token for t in tokens) == expected
        again = await az.put_part("big", upload_id, 2, chunks[2])
        assert again.token == expected[1]

        _, uncommitted = await raw.get_blob_client("big").get_block_list("uncommitted")
        assert sorted(b.id for b in uncommitted) == expected

        meta = await az.complete_multipart("big", upload_id, list(tokens))
        committed, uncommitted = await raw.get_blob_client("big").get_block_list("all")
        assert [b.id for b in committed] == expected
        assert [b.size for b in committed] == [len(chunks[n]) for n in (1, 2, 3)]
        assert len({len(b.id) for b in committed}) == 1
        assert uncommitted == []
        assert meta.size == sum(map(len, chunks.values()))
        downloaded = await (await raw.get_blob_client("big").download_blob()).readall()
        assert downloaded == chunks[1] + chunks[2] + chunks[3]
        assert await raw_names(raw) == ["big"]

    async def test_abort_leaves_no_marker_and_no_object(
        self, az: ObjectStore, raw: ContainerClient
    ) -> None:
        """Abort removes the marker blob and the staged blocks of a never-committed blob."""
        upload_id = await az.create_multipart("aborted")
        await az.put_part("aborted", upload_id, 1, os.urandom(5000))
        await az.put_part("aborted", upload_id, 2, os.urandom(10))
        assert sorted(await raw_names(raw)) == sorted([UPLOADS + upload_id, "aborted"])

        await az.abort_multipart("aborted", upload_id)
        assert await raw_names(raw) == []
        with pytest.raises(ResourceNotFoundError):
            await raw.get_blob_client("aborted").get_block_list("all")
        with pytest.raises(NotFound):
            await az.head("aborted")
        assert [u async for u in az.list_multipart_uploads()] == []
        await az.abort_multipart("aborted", upload_id)  # aborting twice is quiet

    async def test_abort_keeps_another_uploads_blocks(self, az: ObjectStore) -> None:
        """Two uploads to one key: aborting one leaves the other able to complete."""
        kept = await az.create_multipart("shared")
        dropped = await az.create_multipart("shared")
        token = await az.put_part("shared", kept, 1, b"kept bytes")
        await az.put_part("shared", dropped, 1, b"dropped bytes")
        await az.abort_multipart("shared", dropped)
        await az.complete_multipart("shared", kept, [token])
        assert await az.read("shared") == b"kept bytes"

    async def test_abort_never_deletes_a_committed_object(self, az: ObjectStore) -> None:
        """An upload over an existing object is aborted without touching that object."""
        await az.put("existing", b"committed")
        upload_id = await az.create_multipart("existing")
        await az.put_part("existing", upload_id, 1, b"staged")
        await az.abort_multipart("existing", upload_id)
        assert await az.read("existing") == b"committed"

    async def test_markers_are_hidden_and_reserved(
        self, az: ObjectStore, raw: ContainerClient
    ) -> None:
        """Upload markers never show in listings, and their prefix cannot be written."""
        upload_id = await az.create_multipart("pending")
        assert [m.key async for m in az.list()] == []
        with pytest.raises(InvalidKey, match="reserved"):
            await az.put(UPLOADS + "forged", b"x")
        await az.abort_multipart("pending", upload_id)

    async def test_uploads_listed_relative_to_a_prefixed_store(self, az: ObjectStore) -> None:
        """A store rooted at a prefix lists its uploads with keys relative to that prefix."""
        async with open_store(az.root_url + "tenant/") as tenant:
            upload_id = await tenant.create_multipart("obj")
            assert [(u.key, u.upload_id) async for u in tenant.list_multipart_uploads()] == [
                ("obj", upload_id)
            ]
            assert [(u.key, u.upload_id) async for u in az.list_multipart_uploads("tenant/")] == [
                ("tenant/obj", upload_id)
            ]
            await tenant.abort_multipart("obj", upload_id)

    async def test_complete_retried_after_success_returns_the_object(self, az: ObjectStore) -> None:
        """A complete whose answer was lost can be sent again."""
        upload_id = await az.create_multipart("once")
        token = await az.put_part("once", upload_id, 1, b"payload")
        first = await az.complete_multipart("once", upload_id, [token])
        second = await az.complete_multipart("once", upload_id, [token])
        assert second.size == first.size == len(b"payload")

    async def test_complete_refuses_a_token_of_another_upload(self, az: ObjectStore) -> None:
        first = await az.create_multipart("k")
        second = await az.create_multipart("k")
        foreign = await az.put_part("k", second, 1, b"x")
        with pytest.raises(InvalidArgument):
            await az.complete_multipart("k", first, [foreign])
        await az.abort_multipart("k", first)
        await az.abort_multipart("k", second)

    async def test_complete_of_an_unknown_upload_is_not_found(self, az: ObjectStore) -> None:
        with pytest.raises(NotFound):
            await az.complete_multipart("k", "0" * 32, [])


class TestChecksums:
    async def test_single_put_reports_full_object_md5(
        self, az: ObjectStore, raw: ContainerClient
    ) -> None:
        """A single put carries the CRC64 of the bytes; the service stores their MD5 as the
        blob's Content-MD5, which head reports."""
        data = os.urandom(3 * 1024 * 1024)
        written = await az.put("c", data)
        head = await az.head("c")
        assert written.checksums == {ChecksumKind.CRC64: crc64_b64(data)}
        assert head.checksums == {ChecksumKind.MD5: md5_b64(data)}
        props = await raw.get_blob_client("c").get_blob_properties()
        stored_md5 = props.content_settings.content_md5
        assert stored_md5 is not None
        assert bytes(stored_md5) == hashlib.md5(data).digest()

    async def test_part_token_carries_the_part_crc64(self, az: ObjectStore) -> None:
        data = os.urandom(3 * 1024 * 1024)
        upload_id = await az.create_multipart("p")
        token = await az.put_part("p", upload_id, 1, data)
        assert token.checksums == {ChecksumKind.CRC64: crc64_b64(data)}
        await az.abort_multipart("p", upload_id)

    async def test_a_write_whose_crc64_does_not_match_is_refused(self, az: ObjectStore) -> None:
        """The CRC64 a caller passes is the one sent: bytes that do not match it are refused
        by the service, so damage between the read and the write cannot land."""
        data = os.urandom(100_000)
        wrong = {ChecksumKind.CRC64: crc64_b64(b"other bytes")}
        with pytest.raises(IntegrityError):
            await az.put("w", data, checksums=wrong)
        upload_id = await az.create_multipart("w")
        with pytest.raises(IntegrityError):
            await az.put_part("w", upload_id, 1, bytearray(data), checksums=wrong)
        await az.abort_multipart("w", upload_id)
        assert [m.key async for m in az.list()] == []

    async def test_multipart_object_reports_no_checksum(self, az: ObjectStore) -> None:
        """Put Block List stores no Content-MD5: nothing is claimed for the whole object."""
        upload_id = await az.create_multipart("m")
        token = await az.put_part("m", upload_id, 1, b"data")
        meta = await az.complete_multipart("m", upload_id, [token])
        assert meta.checksums == {}

    async def test_azurite_rejects_a_damaged_md5(self, raw: ContainerClient) -> None:
        """The emulator refuses a block or blob whose MD5 does not match the body, and stores
        nothing: the guarantee the connector's writes rely on."""
        data = b"the bytes that were sent"
        wrong = md5_b64(b"other bytes")
        blob = raw.get_blob_client("damaged")
        with pytest.raises(HttpResponseError) as block:
            await blob.stage_block("b-1", data, headers={"Content-MD5": wrong})
        assert refusal(block.value) == (400, "Md5Mismatch")
        with pytest.raises(HttpResponseError) as transactional:
            await blob.upload_blob(data, headers={"Content-MD5": wrong})
        assert refusal(transactional.value) == (400, "Md5Mismatch")
        with pytest.raises(HttpResponseError) as stored:
            await blob.upload_blob(
                data,
                content_settings=ContentSettings(content_md5=bytearray(hashlib.md5(b"x").digest())),
            )
        assert refusal(stored.value) == (400, "Md5Mismatch")
        assert await raw_names(raw) == []

        await blob.stage_block("b-1", data, headers={"Content-MD5": md5_b64(data)})
        assert await raw_names(raw) == ["damaged"]

    async def test_azurite_validates_crc64_nvme_little_endian(self, raw: ContainerClient) -> None:
        """x-ms-content-crc64 is CRC-64/NVME sent little-endian: the premise for moving to
        CRC64 once the engine verifies parts by it."""
        data = b"the bytes that were sent"
        blob = raw.get_blob_client("crc")
        wrong = base64.b64encode(crc64(b"other bytes").to_bytes(8, "little")).decode()
        with pytest.raises(HttpResponseError) as damaged:
            await blob.stage_block("b-1", data, headers={"x-ms-content-crc64": wrong})
        assert refusal(damaged.value) == (400, "Crc64Mismatch")
        right = base64.b64encode(crc64(data).to_bytes(8, "little")).decode()
        await blob.stage_block("b-1", data, headers={"x-ms-content-crc64": right})

    async def test_gzip_encoded_object_reads_back_as_stored(self, az: ObjectStore) -> None:
        """Content-Encoding is metadata: reads return the stored bytes, never decompressed."""
        compressed = gzip.compress(b"x" * 10_000)
        await az.put("z.gz", compressed, attributes=ObjectAttributes(content_encoding="gzip"))
        assert await az.read("z.gz") == compressed
        assert await az.read("z.gz", 0, 10) == compressed[:10]


class TestAttributes:
    @pytest.mark.parametrize("name", ["bad-name", "1st", "dotted.name", "naïve", ""])
    async def test_invalid_metadata_name_is_refused(self, az: ObjectStore, name: str) -> None:
        with pytest.raises(InvalidArgument, match="C# identifiers"):
            await az.put("m", b"x", attributes=ObjectAttributes(user_metadata={name: "v"}))
        with pytest.raises(InvalidArgument, match="C# identifiers"):
            await az.create_multipart("m", attributes=ObjectAttributes(user_metadata={name: "v"}))
        assert [m.key async for m in az.list()] == []

    @pytest.mark.parametrize(
        "attributes",
        [
            ObjectAttributes(user_metadata={"owner": "a", "Owner": "b"}),
            ObjectAttributes(user_metadata={"owner": "café"}),
            ObjectAttributes(user_metadata={"owner": " padded"}),
            ObjectAttributes(content_disposition='attachment; filename="é.csv"'),
        ],
        ids=["case-duplicate", "non-ascii-value", "leading-blank", "non-ascii-header"],
    )
    async def test_attributes_that_cannot_round_trip_are_refused(
        self, az: ObjectStore, attributes: ObjectAttributes
    ) -> None:
        with pytest.raises(InvalidArgument):
            await az.put("m", b"x", attributes=attributes)

    async def test_copy_within_replaces_attributes_when_given(self, az: ObjectStore) -> None:
        data = os.urandom(20_000)
        await az.put(
            "src",
            data,
            attributes=ObjectAttributes(content_type="text/csv", user_metadata={"k": "v"}),
        )
        copied = await az.copy_within(
            "src", "dst", attributes=ObjectAttributes(content_type="application/json")
        )
        assert copied.attributes.content_type == "application/json"
        assert dict(copied.attributes.user_metadata) == {}
        assert copied.checksums[ChecksumKind.MD5] == md5_b64(data)
        assert await az.read("dst") == data


class TestKeys:
    @pytest.mark.parametrize(
        "key",
        [
            "back\\slash",
            "tab\tseparated",
            "bell\x07",
            "del\x7f",
            "non-character\ufffe",
            "trailing-dot.",
            "dir./x",
            "a/./b",
            "a/../b",
            "x/" * 254 + "y",
            UPLOADS + "x",
        ],
        ids=repr,
    )
    async def test_keys_azure_cannot_hold_are_refused(self, az: ObjectStore, key: str) -> None:
        """Keys Azure or its URL handling would alter are refused before any request."""
        with pytest.raises(InvalidKey, match="name"):
            await az.put(key, b"x")
        with pytest.raises(InvalidKey):
            await az.head(key)

    @pytest.mark.parametrize(
        "key",
        ["dir/ends-with-slash/", "a//b", "/leading", "%2e%2e/x", "x/.hidden", "a" * 1024],
        ids=lambda k: repr(k)[:30],
    )
    async def test_unusual_keys_that_round_trip(self, az: ObjectStore, key: str) -> None:
        await az.put(key, key.encode())
        assert await az.read(key) == key.encode()
        assert [m.key async for m in az.list()] == [key]

    async def test_start_after_on_a_prefixed_store(self, az: ObjectStore) -> None:
        await asyncio.gather(*(az.put(f"p/{i}", b"") for i in range(5)))
        await az.put("q", b"")
        async with open_store(az.root_url + "p/") as prefixed:
            keys = [m.key async for m in prefixed.list(start_after="1", page_size=2)]
        assert keys == ["2", "3", "4"]


@pytest.fixture
async def busy_endpoint() -> AsyncIterator[tuple[str, list[str]]]:
    """A real HTTP endpoint answering every request like an overloaded Blob service."""
    seen: list[str] = []

    async def busy(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.Response(
            status=503,
            headers={"x-ms-error-code": "ServerBusy", "Retry-After": "7"},
            content_type="application/xml",
            text="<?xml version='1.0'?><Error><Code>ServerBusy</Code></Error>",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/devstoreaccount1", seen
    finally:
        await runner.cleanup()


def connection_string_for(endpoint: str) -> str:
    account = os.environ["AZURE_STORAGE_CONNECTION_STRING"].split("BlobEndpoint=")[0]
    return f"{account}BlobEndpoint={endpoint};"


class TestFailures:
    async def test_server_busy_is_throttled_after_one_sdk_retry(
        self, devstack: StackState, busy_endpoint: tuple[str, list[str]]
    ) -> None:
        """503 ServerBusy maps to Throttled with Retry-After; the SDK retries once at most, so
        its retries never multiply the engine's. (The direct requests, tried once, are
        covered in test_azure_direct.)"""
        endpoint, seen = busy_endpoint
        sdk_only = {
            "AZURE_STORAGE_CONNECTION_STRING": connection_string_for(endpoint),
            DIRECT_REQUESTS_VARIABLE: "0",
        }
        with environment(sdk_only):
            store = open_store(f"az://{unique_name()}")
        async with store:
            with pytest.raises(Throttled) as caught:
                await store.head("k")
        assert caught.value.retry_after == 7.0
        assert caught.value.retriable
        assert seen == ["HEAD", "HEAD"]

    async def test_unreachable_endpoint_is_transient_and_names_it(
        self, devstack: StackState
    ) -> None:
        endpoint = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
        with environment({"AZURE_STORAGE_CONNECTION_STRING": connection_string_for(endpoint)}):
            store = open_store(f"az://{unique_name()}")
        async with store:
            with pytest.raises(TransientError) as caught:
                await store.head("k")
        assert endpoint in str(caught.value)
        assert "AccountKey" not in str(caught.value)

    async def test_bad_key_refusal_reveals_no_secret(self, az: ObjectStore) -> None:
        good = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        secret = "Zm9yZ2VkLWtleS1mb3ItdGVzdHM="
        start = good.index("AccountKey=") + len("AccountKey=")
        bad = good[:start] + secret + good[good.index(";", start) :]
        with environment({"AZURE_STORAGE_CONNECTION_STRING": bad}):
            store = open_store(az.root_url)
        async with store:
            with pytest.raises(PermissionDenied) as caught:
                await store.put("k", b"data")
        assert secret not in str(caught.value)
        assert "AZURE_STORAGE_CONNECTION_STRING" in str(caught.value)

    async def test_missing_credentials_name_the_variables(
        self, devstack: StackState, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in CREDENTIAL_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        async with open_store(f"az://{unique_name()}") as store:
            with pytest.raises(PermissionDenied) as caught:
                await store.head("k")
        for name in CREDENTIAL_VARIABLES:
            assert name in str(caught.value)

    async def test_missing_container_is_named(self, devstack: StackState) -> None:
        container = unique_name("missing")
        async with open_store(f"az://{container}") as store:
            with pytest.raises(ContainerNotFound, match=container):
                await store.put("k", b"x")

    @pytest.mark.parametrize("container", ["UPPER", "ab", "a--b", "under_score"])
    def test_invalid_container_name_is_refused_without_io(self, container: str) -> None:
        with pytest.raises(InvalidStoreURL):
            open_store(f"az://{container}")
