"""GCS specifics on fake-gcs-server: compose trees and their clean-up, checksums, keys,
metadata fidelity, generations and error mapping.

Staged multipart objects are looked at through the raw JSON API with a plain aiohttp client,
never through the connector, whose listing hides them.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import os
import re
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import google_crc32c
import pytest
import yarl
from aiohttp import web

from connectors import open_store
from connectors.base import (
    AlreadyExists,
    ChecksumKind,
    ContainerNotFound,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    NotFound,
    ObjectAttributes,
    PartToken,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    TransientError,
    parse_retry_after,
)
from connectors.gcs import STAGING_PREFIX, GCSStore, map_status
from replicator.devstack import StackState, environment
from tests.conformance.test_store_conformance import HOSTILE_KEYS
from tests.conftest import unique_name
from tests.independent import read_object


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


async def raw_names(bucket: str, prefix: str) -> list[str]:
    """Object names under ``prefix``, listed by a client that shares nothing with the
    connector."""
    host = os.environ["STORAGE_EMULATOR_HOST"]
    names: list[str] = []
    params = {"prefix": prefix, "maxResults": "1000"}
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"{host}/storage/v1/b/{bucket}/o", params=params) as response:
                assert response.status == 200, await response.text()
                page: dict[str, Any] = await response.json()
            names += [item["name"] for item in page.get("items", [])]
            if not page.get("nextPageToken"):
                return names
            params["pageToken"] = page["nextPageToken"]


async def raw_resource(bucket: str, name: str) -> dict[str, Any]:
    host = os.environ["STORAGE_EMULATOR_HOST"]
    url = f"{host}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        resource: dict[str, Any] = await response.json()
        return resource


def flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x01
    return bytes(damaged)


class FaultyProxy:
    """An HTTP proxy in front of the emulator that answers chosen requests with a 503, so a
    transient failure lands exactly where a test wants it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fail_composes: set[int] = set()
        self.composes = 0
        self.flip_uploads = False
        self.flip_downloads = False
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/compose"):
            self.composes += 1
        if request.path.endswith("/compose") and self.composes in self.fail_composes:
            return web.json_response(
                {"error": {"code": 503, "message": "injected backend error"}},
                status=503,
                headers={"Retry-After": "3"},
            )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        sent = await request.read()
        if self.flip_uploads and request.path.startswith("/upload/"):
            # Past the JSON resource, before the closing boundary: inside the media.
            sent = flip(sent, len(sent) - 50)
        async with self._session.request(
            request.method,
            yarl.URL(self.upstream + request.raw_path, encoded=True),
            headers=headers,
            data=sent,
        ) as upstream:
            body = await upstream.read()
            if self.flip_downloads and request.query.get("alt") == "media" and body:
                body = flip(body, len(body) // 2)
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=upstream.status, body=body, headers=passed)


@pytest.fixture
async def proxy(devstack: StackState) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy(os.environ["STORAGE_EMULATOR_HOST"])
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture
async def gcs(devstack: StackState) -> AsyncIterator[GCSStore]:
    store = open_store(f"gs://{unique_name()}")
    assert isinstance(store, GCSStore)
    await store.create_container()
    try:
        yield store
    finally:
        await store.close()


class TestCompose:
    async def test_seventy_parts_compose_through_two_levels_and_leave_nothing(
        self, gcs: GCSStore
    ) -> None:
        """70 parts need a composition level below the final compose (32 sources at most
        per request); the result is byte-exact and every staged object is gone."""
        chunks = [os.urandom(1000 + n) for n in range(70)]
        attributes = ObjectAttributes(
            content_type="application/x-parquet",
            cache_control="no-cache",
            user_metadata={"runId": "7", "Owner": "Data Team"},
        )
        upload_id = await gcs.create_multipart("big/object", attributes=attributes)
        tokens = await asyncio.gather(
            *(gcs.put_part("big/object", upload_id, n, c) for n, c in enumerate(chunks, 1))
        )
        assert len(await raw_names(gcs.bucket, f"{STAGING_PREFIX}{upload_id}/")) == 70
        meta = await gcs.complete_multipart("big/object", upload_id, list(reversed(tokens)))
        data = b"".join(chunks)
        assert meta.size == len(data)
        assert read_object(gcs.url_for("big/object")) == data
        assert meta.checksums[ChecksumKind.CRC32C] == crc32c_b64(data)
        head = await gcs.head("big/object")
        assert head.attributes.content_type == "application/x-parquet"
        assert head.attributes.cache_control == "no-cache"
        assert dict(head.attributes.user_metadata) == {"runId": "7", "Owner": "Data Team"}
        assert await raw_names(gcs.bucket, STAGING_PREFIX) == []
        assert [u async for u in gcs.list_multipart_uploads()] == []

    async def test_three_compose_levels(self, gcs: GCSStore) -> None:
        """1,100 parts: 35 composites of the parts, 2 of those, then the destination."""
        chunks = [bytes([n % 251]) * (1 + n % 7) for n in range(1100)]
        upload_id = await gcs.create_multipart("deep")
        tokens = await asyncio.gather(
            *(gcs.put_part("deep", upload_id, n, c) for n, c in enumerate(chunks, 1))
        )
        await gcs.complete_multipart("deep", upload_id, tokens)
        assert read_object(gcs.url_for("deep")) == b"".join(chunks)
        assert await raw_names(gcs.bucket, STAGING_PREFIX) == []

    async def test_abort_deletes_every_staged_object(self, gcs: GCSStore) -> None:
        upload_id = await gcs.create_multipart("aborted")
        await asyncio.gather(
            *(gcs.put_part("aborted", upload_id, n, os.urandom(100)) for n in range(1, 6))
        )
        staged = await raw_names(gcs.bucket, STAGING_PREFIX)
        assert len(staged) == 6  # five parts and the manifest
        await gcs.abort_multipart("aborted", upload_id)
        assert await raw_names(gcs.bucket, STAGING_PREFIX) == []
        with pytest.raises(NotFound):
            await gcs.head("aborted")
        await gcs.abort_multipart("aborted", upload_id)  # unknown now: not an error

    async def test_a_part_written_after_its_upload_closed_is_removed(self, gcs: GCSStore) -> None:
        """A straggler (a striped copy's part task that checked the journal before the abort,
        a part task delivered twice) writes its part after the upload was aborted or
        completed: the part is removed again and the writer told the upload is gone, as S3
        refuses it, so nothing is left under the staging prefix that no manifest lists."""
        aborted = await gcs.create_multipart("aborted")
        await gcs.put_part("aborted", aborted, 1, b"first")
        await gcs.abort_multipart("aborted", aborted)
        with pytest.raises(NotFound, match="no multipart upload"):
            await gcs.put_part("aborted", aborted, 2, b"straggler")
        completed = await gcs.create_multipart("done")
        first = await gcs.put_part("done", completed, 1, b"first")
        await gcs.complete_multipart("done", completed, [first])
        with pytest.raises(NotFound, match="no multipart upload"):
            await gcs.put_part("done", completed, 1, b"delivered twice")
        assert await raw_names(gcs.bucket, STAGING_PREFIX) == []
        assert await gcs.read("done") == b"first"

    async def test_an_abort_that_stops_half_way_leaves_its_upload_listed(
        self, gcs: GCSStore
    ) -> None:
        """An upload closed for its sweep is still listed until its manifest goes, so the
        janitor finishes an abort that failed half-way; aborting it again clears it."""
        upload_id = await gcs.create_multipart("k")
        part = await gcs.put_part("k", upload_id, 1, b"part")
        manifest = await gcs._manifest("k", upload_id)
        await gcs._close(upload_id, manifest, gcs.url_for("k"))
        assert [u.upload_id async for u in gcs.list_multipart_uploads()] == [upload_id]
        with pytest.raises(NotFound):
            await gcs.complete_multipart("k", upload_id, [part])
        await gcs.abort_multipart("k", upload_id)
        assert await raw_names(gcs.bucket, STAGING_PREFIX) == []

    async def test_complete_with_a_part_never_uploaded_fails_and_cleans_up(
        self, gcs: GCSStore
    ) -> None:
        """A token naming a part that was never stored fails the completion before any
        compose, and nothing staged is left behind."""
        upload_id = await gcs.create_multipart("k")
        first = await gcs.put_part("k", upload_id, 1, b"first")
        missing = PartToken(2, f"{STAGING_PREFIX}{upload_id}/part-00002#1", 6)
        with pytest.raises(InvalidArgument, match="part 2"):
            await gcs.complete_multipart("k", upload_id, [first, missing])
        assert await raw_names(gcs.bucket, STAGING_PREFIX) == []
        with pytest.raises(NotFound):
            await gcs.head("k")
        with pytest.raises(NotFound):
            await gcs.complete_multipart("k", upload_id, [first])

    async def test_transient_failure_keeps_the_parts_for_a_retry(self, proxy: FaultyProxy) -> None:
        """A 503 on the final compose is Throttled with its Retry-After; the parts and the
        manifest stay (the intermediate composites go), so completing again succeeds, and
        then nothing staged is left."""
        with environment({"STORAGE_EMULATOR_HOST": proxy.url}):
            store = open_store(f"gs://{unique_name()}")
        async with store:
            assert isinstance(store, GCSStore)
            await store.create_container()
            chunks = [os.urandom(100 + n) for n in range(40)]
            upload_id = await store.create_multipart("k")
            tokens = [await store.put_part("k", upload_id, n, c) for n, c in enumerate(chunks, 1)]
            # 40 parts: two intermediate composes, then the final one, which fails.
            proxy.fail_composes = {3}
            with pytest.raises(Throttled) as caught:
                await store.complete_multipart("k", upload_id, tokens)
            assert caught.value.retry_after == 3.0
            staged = await raw_names(store.bucket, STAGING_PREFIX)
            assert sorted(staged) == sorted(
                [STAGING_PREFIX + upload_id] + [t.token.partition("#")[0] for t in tokens]
            )
            meta = await store.complete_multipart("k", upload_id, tokens)
            assert meta.size == sum(map(len, chunks))
            assert read_object(store.url_for("k")) == b"".join(chunks)
            assert await raw_names(store.bucket, STAGING_PREFIX) == []

    async def test_a_replaced_part_is_refused(self, gcs: GCSStore) -> None:
        """A token pins the part object's generation: bytes uploaded again under the same
        part number are not taken for the ones the token vouches for."""
        upload_id = await gcs.create_multipart("k")
        stale = await gcs.put_part("k", upload_id, 1, b"old bytes")
        await gcs.put_part("k", upload_id, 1, b"new bytes")
        with pytest.raises(InvalidArgument, match="part 1"):
            await gcs.complete_multipart("k", upload_id, [stale])
        assert await raw_names(gcs.bucket, STAGING_PREFIX) == []

    async def test_upload_of_another_key_is_not_found(self, gcs: GCSStore) -> None:
        upload_id = await gcs.create_multipart("one")
        token = await gcs.put_part("one", upload_id, 1, b"x")
        with pytest.raises(NotFound):
            await gcs.complete_multipart("two", upload_id, [token])
        with pytest.raises(NotFound):
            await gcs.put_part("one", "not-an-upload-id", 1, b"x")
        await gcs.abort_multipart("two", upload_id)  # not this key's: left alone
        assert [(u.key, u.upload_id) async for u in gcs.list_multipart_uploads()] == [
            ("one", upload_id)
        ]
        await gcs.abort_multipart("one", upload_id)
        assert await raw_names(gcs.bucket, STAGING_PREFIX) == []

    async def test_listing_hides_staging_and_uploads_are_scoped_by_prefix(
        self, gcs: GCSStore
    ) -> None:
        """Staged objects never show in list(); uploads are listed by the store rooted at
        their key's prefix, even though staging lives at the bucket root."""
        await gcs.put("a", b"")
        await gcs.put("z", b"")
        upload_id = await gcs.create_multipart("a/b")
        await asyncio.gather(*(gcs.put_part("a/b", upload_id, n, b"p") for n in range(1, 8)))
        assert [m.key async for m in gcs.list(page_size=2)] == ["a", "z"]
        assert [m.key async for m in gcs.list(STAGING_PREFIX)] == []
        async with open_store(f"gs://{gcs.bucket}/a/") as scoped:
            assert [(u.key, u.upload_id) async for u in scoped.list_multipart_uploads()] == [
                ("b", upload_id)
            ]
        async with open_store(f"gs://{gcs.bucket}/other/") as other:
            assert [u async for u in other.list_multipart_uploads()] == []
        await gcs.abort_multipart("a/b", upload_id)

    async def test_upload_initiated_time_is_reported(self, gcs: GCSStore) -> None:
        before = datetime.now(UTC) - timedelta(minutes=1)
        upload_id = await gcs.create_multipart("k")
        [upload] = [u async for u in gcs.list_multipart_uploads()]
        assert upload.upload_id == upload_id
        assert upload.initiated is not None
        assert upload.initiated > before
        await gcs.abort_multipart("k", upload_id)


class TestChecksums:
    async def test_crc32c_and_md5_of_a_put(self, gcs: GCSStore) -> None:
        data = os.urandom(3 * 1024 * 1024)  # over aiohttp's 1 MiB "large body" mark
        written = await gcs.put("c", data)
        head = await gcs.head("c")
        for meta in (written, head):
            assert meta.checksums[ChecksumKind.CRC32C] == crc32c_b64(data)
            assert (
                meta.checksums[ChecksumKind.MD5]
                == base64.b64encode(hashlib.md5(data).digest()).decode()
            )

    async def test_part_tokens_carry_the_part_crc32c(self, gcs: GCSStore) -> None:
        upload_id = await gcs.create_multipart("k")
        data = os.urandom(5000)
        token = await gcs.put_part("k", upload_id, 1, data)
        assert token.checksums[ChecksumKind.CRC32C] == crc32c_b64(data)
        assert token.size == len(data)
        await gcs.abort_multipart("k", upload_id)

    async def test_upload_sends_the_crc32c_of_the_bytes(self, gcs: GCSStore) -> None:
        """The resource sent with the media names the bytes' CRC32C, which GCS validates;
        the emulator stores it as given, so a raw look shows what was sent."""
        data = b"checksummed"
        await gcs.put("k", data)
        resource = await raw_resource(gcs.bucket, "k")
        assert resource["crc32c"] == crc32c_b64(data)

    async def test_damaged_bytes_are_integrity_errors(self, proxy: FaultyProxy) -> None:
        """Bytes damaged on the way up are caught (real GCS refuses them on the sent CRC32C;
        the emulator stores them, and the CRC32C it reports gives them away); bytes damaged
        on the way down fail a whole-object read against the object's X-Goog-Hash."""
        with environment({"STORAGE_EMULATOR_HOST": proxy.url}):
            store = open_store(f"gs://{unique_name()}")
        async with store:
            await store.create_container()
            data = os.urandom(1000)
            proxy.flip_uploads = True
            with pytest.raises(IntegrityError):
                await store.put("up", data)
            proxy.flip_uploads = False
            await store.put("down", data)
            proxy.flip_downloads = True
            with pytest.raises(IntegrityError):
                await store.read("down")

    async def test_gzip_encoded_object_reads_back_as_stored(self, gcs: GCSStore) -> None:
        """No decompressive transcoding: the stored (compressed) bytes come back, whole and
        ranged, so sizes and checksums hold."""
        stored = gzip.compress(b"hello " * 1000)
        attributes = ObjectAttributes(content_type="text/plain", content_encoding="gzip")
        meta = await gcs.put("z.txt", stored, attributes=attributes)
        assert meta.size == len(stored)
        assert await gcs.read("z.txt") == stored
        assert await gcs.read("z.txt", 3, 20) == stored[3:20]


class TestGenerations:
    async def test_etag_and_version_are_the_generation(self, gcs: GCSStore) -> None:
        meta = await gcs.put("k", b"1")
        resource = await raw_resource(gcs.bucket, "k")
        assert meta.etag == meta.version == resource["generation"]

    async def test_pinned_reads_of_a_replaced_generation(self, gcs: GCSStore) -> None:
        old = await gcs.put("k", b"old")
        new = await gcs.put("k", b"new")
        assert old.version is not None
        assert old.etag is not None
        with pytest.raises(PreconditionFailed):
            await gcs.read("k", if_match=old.etag)
        with pytest.raises(NotFound):
            await gcs.read("k", version=old.version)
        with pytest.raises(NotFound):
            await gcs.head("k", version=old.version)
        assert await gcs.read("k", version=new.version) == b"new"
        assert (await gcs.head("k", version=new.version)).etag == new.etag
        with pytest.raises(PreconditionFailed):
            await gcs.read("k", if_match='"not-a-generation"')

    async def test_conditional_delete_of_a_missing_key(self, gcs: GCSStore) -> None:
        with pytest.raises(NotFound):
            await gcs.delete("missing", if_match="1")

    async def test_copy_within_keeps_or_replaces_attributes(self, gcs: GCSStore) -> None:
        source = await gcs.put(
            "src",
            b"bytes",
            attributes=ObjectAttributes(
                content_type="text/csv",
                cache_control="max-age=5",
                user_metadata={"camelCase": "1"},
            ),
        )
        kept = await gcs.copy_within("src", "kept", if_match=source.etag)
        assert kept.attributes.content_type == "text/csv"
        assert kept.attributes.cache_control == "max-age=5"
        assert dict(kept.attributes.user_metadata) == {"camelCase": "1"}
        replaced = await gcs.copy_within(
            "src",
            "replaced",
            attributes=ObjectAttributes(
                content_type="text/plain",
                content_disposition="inline",
                user_metadata={"mixedCASE-key": "v"},
            ),
        )
        head = await gcs.head("replaced")
        for meta in (replaced, head):
            assert meta.attributes.content_type == "text/plain"
            assert meta.attributes.content_disposition == "inline"
            assert dict(meta.attributes.user_metadata) == {"mixedCASE-key": "v"}
        assert await gcs.read("replaced") == b"bytes"
        with pytest.raises(NotFound):
            await gcs.copy_within("absent", "x")


class TestMetadata:
    async def test_every_attribute_and_metadata_key_round_trips_exactly(
        self, gcs: GCSStore
    ) -> None:
        """camelCase resource fields and custom metadata keys of any case survive (the
        library on its own would lower-case them)."""
        attributes = ObjectAttributes(
            content_type="application/vnd.apache.parquet",
            cache_control="public, max-age=3600",
            content_encoding="identity",
            content_disposition='attachment; filename="ü.parquet"',
            user_metadata={
                "camelCaseKey": "Value",
                "UPPER": "X",
                "with-dash_and.dot": "y",
                "unicode-ключ": "значение",
            },
        )
        await gcs.put("m", b"data", attributes=attributes)
        assert (await gcs.head("m")).attributes == attributes
        [listed] = [meta async for meta in gcs.list()]
        assert listed.attributes == attributes

    async def test_without_a_content_type_the_default_is_stored(self, gcs: GCSStore) -> None:
        """No type is guessed from the name: ``x.json`` without a type is octet-stream."""
        await gcs.put("x.json", b"{}")
        assert (await gcs.head("x.json")).attributes.content_type == "application/octet-stream"


class TestKeys:
    async def test_every_hostile_key_round_trips(self, gcs: GCSStore) -> None:
        """GCS holds all of the conformance suite's hostile keys: none is refused, each is
        stored byte-exact (read back by an independent client)."""
        for key in HOSTILE_KEYS:
            await gcs.put(key, key.encode())
        assert sorted([m.key async for m in gcs.list()]) == sorted(HOSTILE_KEYS)
        for key in HOSTILE_KEYS:
            assert read_object(gcs.url_for(key)) == key.encode()
            await gcs.delete(key)
        assert [m async for m in gcs.list()] == []

    @pytest.mark.parametrize(
        ("key", "rule"),
        [
            ("line\nfeed", "line feed"),
            ("carriage\rreturn", "carriage return"),
            (".", "'.' or '..'"),
            ("..", "'.' or '..'"),
            (".well-known/acme-challenge/token", "acme-challenge"),
            (STAGING_PREFIX + "x", "reserves for multipart staging"),
            ("k" * 1025, "GCS object name rule"),
            ("", "empty key"),
        ],
    )
    async def test_keys_gcs_cannot_hold_are_refused_naming_the_rule(
        self, gcs: GCSStore, key: str, rule: str
    ) -> None:
        with pytest.raises(InvalidKey, match=re.escape(rule)):
            await gcs.put(key, b"x")
        with pytest.raises(InvalidKey):
            await gcs.head(key)
        with pytest.raises(InvalidKey):
            await gcs.create_multipart(key)

    async def test_key_rules_apply_to_the_prefixed_name(self, gcs: GCSStore) -> None:
        async with open_store(f"gs://{gcs.bucket}/.well-known/") as store:
            with pytest.raises(InvalidKey, match="acme-challenge"):
                await store.put("acme-challenge/t", b"x")
            await store.put("other", b"x")
        assert read_object(f"gs://{gcs.bucket}/.well-known/other") == b"x"


class TestErrors:
    async def test_unreachable_endpoint_is_transient_and_named(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        endpoint = f"http://127.0.0.1:{port}"
        with environment({"STORAGE_EMULATOR_HOST": endpoint}):
            store = open_store(f"gs://{unique_name()}")
        async with store:
            started = time.monotonic()
            with pytest.raises(TransientError) as caught:
                await store.head("k")
            with pytest.raises(TransientError):
                await store.put("k", b"x")
            with pytest.raises(TransientError):
                [m async for m in store.list()]
        assert endpoint in str(caught.value)
        assert time.monotonic() - started < 10

    async def test_unreadable_credentials_file_is_permission_denied(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Outside the emulator a named credentials file that is not there is refused
        before any request is sent."""
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
        async with open_store(f"gs://{unique_name()}") as store:
            with pytest.raises(PermissionDenied, match="credentials"):
                await store.head("k")

    async def test_missing_bucket_is_container_not_found(self, devstack: StackState) -> None:
        name = unique_name("missing")
        async with open_store(f"gs://{name}") as store:
            operations: list[Callable[[], Awaitable[object]]] = [
                lambda: store.head("k"),
                lambda: store.read("k"),
                lambda: store.put("k", b"x"),
                lambda: store.delete("k"),
                lambda: store.create_multipart("k"),
            ]
            for operation in operations:
                with pytest.raises(ContainerNotFound, match=name):
                    await operation()
            with pytest.raises(ContainerNotFound, match=name):
                [m async for m in store.list()]

    async def test_create_container_twice_is_fine(self, gcs: GCSStore) -> None:
        await gcs.create_container()

    async def test_create_only_on_existing_is_already_exists(self, gcs: GCSStore) -> None:
        await gcs.put("k", b"1")
        with pytest.raises(AlreadyExists):
            await gcs.put("k", b"2", create_only=True)

    def test_status_mapping(self) -> None:
        def mapped(status: int, headers: dict[str, str] | None = None, body: str = "") -> Any:
            return map_status(
                status, headers or {}, body, url="gs://b/k", endpoint="http://e", write=True
            )

        throttled = mapped(429, {"Retry-After": "7"})
        assert isinstance(throttled, Throttled)
        assert throttled.retry_after == 7.0
        unavailable = mapped(503)
        assert isinstance(unavailable, Throttled)
        assert unavailable.retry_after is None
        assert type(mapped(500)) is TransientError
        assert isinstance(mapped(403), PermissionDenied)
        assert type(mapped(412)) is PreconditionFailed
        assert isinstance(
            map_status(412, {}, "", url="u", endpoint="e", create_only=True), AlreadyExists
        )
        mismatch = (
            '{"error": {"code": 400, "message": "Provided CRC32C \\"AAAAAA==\\" doesn\'t '
            'match calculated CRC32C \\"2HvlZg==\\"."}}'
        )
        assert isinstance(mapped(400, body=mismatch), IntegrityError)
        assert type(mapped(400, body='{"error": {"message": "Invalid argument."}}')) is (
            InvalidArgument
        )
        now = datetime(2025, 1, 1, tzinfo=UTC)
        later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
        assert parse_retry_after(later, now) == 30.0
        assert parse_retry_after("soon", now) is None


@pytest.mark.slow
async def test_parallel_parts_share_one_session(gcs: GCSStore) -> None:
    """Many concurrent part uploads through one store complete and compose correctly."""
    chunks = [os.urandom(256 * 1024) for _ in range(40)]
    upload_id = await gcs.create_multipart("parallel")
    tokens = await asyncio.gather(
        *(gcs.put_part("parallel", upload_id, n, c) for n, c in enumerate(chunks, 1))
    )
    await gcs.complete_multipart("parallel", upload_id, tokens)
    assert await gcs.read("parallel") == b"".join(chunks)
    assert await raw_names(gcs.bucket, STAGING_PREFIX) == []
