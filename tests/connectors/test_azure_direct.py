"""Azure's small-object requests sent without azure-core's pipeline (connectors.azure_direct),
on Azurite: that a store's Get Blob and Put Blob take that path, with Shared Key or SAS, and
that it answers and fails as the SDK path does."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from multidict import CIMultiDict

from connectors.azure import AzureStore
from connectors.azure.fields import crc64_b64
from connectors.azure.store import DIRECT_REQUESTS_VARIABLE
from connectors.azure_credentials import AzureCredentials, connection_string_fields
from connectors.base import (
    AlreadyExists,
    ChecksumKind,
    ContainerNotFound,
    IntegrityError,
    NotFound,
    ObjectAttributes,
    PreconditionFailed,
    RequestClass,
    StoreRequest,
    Throttled,
    observing,
)
from replicator.devstack import StackState, environment
from tests import forwarding
from tests.conformance.test_store_conformance import HOSTILE_KEYS
from tests.conftest import unique_name
from tests.forwarding import Answer, flip_a_read_byte

SDK_USER_AGENT = "azsdk-python-storage-blob"


class RecordingProxy(forwarding.RecordingProxy):
    """Tells the requests the storage SDK sent from the direct ones, by User-Agent."""

    def methods(self, *, sdk: bool) -> list[str]:
        return [method for method, agent in self.seen if agent.startswith(SDK_USER_AGENT) is sdk]


def _fields() -> dict[str, str]:
    return connection_string_fields(os.environ["AZURE_STORAGE_CONNECTION_STRING"])


@pytest.fixture
async def proxy(devstack: StackState) -> AsyncIterator[RecordingProxy]:
    upstream = _fields()["BlobEndpoint"].rstrip("/").rpartition("/")[0]
    async with RecordingProxy(upstream) as started:
        yield started


def through(proxy: RecordingProxy, **given: str) -> AzureCredentials:
    """The test bed's account reached through ``proxy``: its key unless ``given`` says."""
    fields = _fields()
    endpoint = f"{proxy.url}/{fields['AccountName']}"
    if "sas" in given:
        return AzureCredentials(
            fields["AccountName"], "sas", sas=given["sas"], endpoints={"blob": endpoint}
        )
    return AzureCredentials(
        fields["AccountName"], "key", key=fields["AccountKey"], endpoints={"blob": endpoint}
    )


@pytest.fixture
async def az(proxy: RecordingProxy) -> AsyncIterator[AzureStore]:
    """A store in a fresh container reached through ``proxy`` with the account key."""
    store = AzureStore(unique_name("az"), "", through(proxy))
    await store.create_container()
    proxy.seen.clear()
    try:
        yield store
    finally:
        await store.close()


class TestPath:
    async def test_get_put_and_head_go_direct(self, az: AzureStore, proxy: RecordingProxy) -> None:
        """The SDK sends none of a small blob's Get, Put and Get Properties."""
        await az.put("k", b"data")
        await az.get("k")
        await az.head("k")
        assert proxy.methods(sdk=False) == ["PUT", "GET", "HEAD"]
        assert proxy.methods(sdk=True) == []

    async def test_a_sas_token_authorises_them_too(
        self, devstack: StackState, proxy: RecordingProxy
    ) -> None:
        fields = _fields()
        name = unique_name("sas")
        async with AzureStore(name, "", through(proxy)) as keyed:
            await keyed.create_container()
        sas = generate_container_sas(
            fields["AccountName"],
            name,
            account_key=fields["AccountKey"],
            permission=ContainerSasPermissions(read=True, write=True, create=True),
            expiry=datetime.now(UTC) + timedelta(hours=1),
        )
        proxy.seen.clear()
        async with AzureStore(name, "", through(proxy, sas=sas)) as store:
            written = await store.put("k", b"data")
            meta, data = await store.get("k")
        assert (data, meta.etag) == (b"data", written.etag)
        assert proxy.methods(sdk=False) == ["PUT", "GET"]

    async def test_every_request_is_reported_with_its_class_and_bytes(self, az: AzureStore) -> None:
        reported: list[StoreRequest] = []
        with observing(reported.append):
            await az.put("k", b"x" * 4096)
            await az.get("k")
        assert [
            (r.request_class, r.bytes_sent, r.bytes_received, r.requests) for r in reported
        ] == [(RequestClass.PUT, 4096, 0, 1), (RequestClass.GET, 0, 4096, 1)]

    async def test_the_setting_sends_them_through_the_sdk(self, proxy: RecordingProxy) -> None:
        with environment({DIRECT_REQUESTS_VARIABLE: "0"}):
            store = AzureStore(unique_name("az"), "", through(proxy))
        async with store:
            await store.create_container()
            proxy.seen.clear()
            await store.put("k", b"data")
            await store.get("k")
        assert proxy.methods(sdk=False) == []
        assert proxy.methods(sdk=True)[0] == "PUT"


class TestSameAnswers:
    async def test_meta_matches_the_sdk_paths_for_odd_keys_and_attributes(
        self, az: AzureStore, proxy: RecordingProxy
    ) -> None:
        """Hostile names Azure holds and attributes round-trip; the direct and the SDK
        path describe each blob alike, MD5 included."""
        with environment({DIRECT_REQUESTS_VARIABLE: "0"}):
            sdk = AzureStore(az._container_name, "", through(proxy))
        attributes = ObjectAttributes(
            content_type="text/plain; charset=utf-8",
            cache_control="no-cache",
            content_encoding="identity",
            content_disposition='attachment; filename="a b.txt"',
            user_metadata={"plain": "a b+c%20d", "Mixed_Case": "x", "_under": "%2B+"},
        )
        held = [key for key in HOSTILE_KEYS if not _refused(az, key)]
        assert len(held) > len(HOSTILE_KEYS) // 2
        try:
            for index, key in enumerate(held):
                data = f"object {index}".encode()
                written = await az.put(key, data, attributes=attributes)
                meta, got = await az.get(key)
                sdk_meta, sdk_got = await sdk.get(key)
                assert got == sdk_got == data, key
                assert meta == sdk_meta, key
                assert await az.head(key) == await sdk.head(key), key
                assert meta.attributes == attributes, key
                assert (meta.etag, meta.size) == (written.etag, len(data))
                assert written.checksums == {ChecksumKind.CRC64: crc64_b64(data)}
        finally:
            await sdk.close()


def _refused(store: AzureStore, key: str) -> bool:
    try:
        store._name(key)
    except Exception:
        return True
    return False


class TestErrors:
    async def test_a_missing_blob_is_not_found(self, az: AzureStore) -> None:
        for attempt in (az.get("nope"), az.head("nope")):
            with pytest.raises(NotFound) as caught:
                await attempt
            assert type(caught.value) is NotFound

    async def test_a_missing_container_is_container_not_found(self, proxy: RecordingProxy) -> None:
        name = unique_name("missing")
        async with AzureStore(name, "", through(proxy)) as store:
            for attempt in (store.get("k"), store.head("k"), store.put("k", b"data")):
                with pytest.raises(ContainerNotFound, match=name):
                    await attempt

    async def test_failed_conditions(self, az: AzureStore) -> None:
        written = await az.put("k", b"data")
        stale = '"0x0000000000000000"'
        with pytest.raises(PreconditionFailed):
            await az.get("k", if_match=stale)
        with pytest.raises(PreconditionFailed):
            await az.put("k", b"new", if_match=stale)
        with pytest.raises(AlreadyExists):
            await az.put("k", b"new", create_only=True)
        meta, data = await az.get("k", if_match=written.etag)
        assert (meta.etag, data) == (written.etag, b"data")

    async def test_bytes_that_differ_from_their_crc64_are_refused(self, az: AzureStore) -> None:
        with pytest.raises(IntegrityError):
            await az.put("k", b"data", checksums={ChecksumKind.CRC64: crc64_b64(b"other")})
        with pytest.raises(NotFound):
            await az.get("k")

    async def test_an_echoed_crc64_other_than_the_one_sent_is_an_integrity_error(
        self, az: AzureStore, proxy: RecordingProxy
    ) -> None:
        def misreport(_: web.Request, answer: Answer) -> Answer:
            status, headers, body = answer
            headers["x-ms-content-crc64"] = base64.b64encode(b"\0" * 8).decode()
            return status, headers, body

        proxy.alter = misreport
        with pytest.raises(IntegrityError):
            await az.put("k", b"data")

    async def test_a_blob_read_back_other_than_its_stored_md5_is_an_integrity_error(
        self, az: AzureStore, proxy: RecordingProxy
    ) -> None:
        await az.put("k", b"data" * 1000)

        proxy.alter = flip_a_read_byte
        with pytest.raises(IntegrityError):
            await az.get("k")

    async def test_server_busy_is_throttled_with_its_retry_after(
        self, az: AzureStore, proxy: RecordingProxy
    ) -> None:
        def busy(_: web.Request, __: Answer) -> Answer:
            headers = CIMultiDict({"x-ms-error-code": "ServerBusy", "Retry-After": "7"})
            return 503, headers, b"<?xml version='1.0'?><Error><Code>ServerBusy</Code></Error>"

        proxy.alter = busy
        with pytest.raises(Throttled) as caught:
            await az.put("k", b"data")
        assert caught.value.retry_after == 7
