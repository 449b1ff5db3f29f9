"""One behaviour contract, run identically against every store on the real emulators.

Each test receives ``store`` rooted in a fresh, empty container of one of s3, gs, az, file, mem.
Sizes come from ``store.limits`` so the same test exercises S3's 5 MiB minimum part and the
memory store's 1 byte.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from connectors import open_store
from connectors.base import (
    AlreadyExists,
    ContainerNotFound,
    InvalidArgument,
    InvalidKey,
    NotFound,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PartToken,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
)
from replicator.devstack import environment
from tests.conftest import unique_name


async def collect_keys(store: ObjectStore, prefix: str = "", **kwargs: object) -> list[str]:
    return [meta.key async for meta in store.list(prefix, **kwargs)]  # type: ignore[arg-type]


async def collect_uploads(store: ObjectStore, prefix: str = "") -> list[tuple[str, str]]:
    return [(u.key, u.upload_id) async for u in store.list_multipart_uploads(prefix)]


def part_size(store: ObjectStore) -> int:
    return max(store.limits.min_part_size, 64 * 1024)


class TestBasics:
    async def test_put_head_read_delete(self, store: ObjectStore) -> None:
        """A written object reads back byte-exact with matching size, then deletes."""
        data = os.urandom(100_000)
        written = await store.put("dir/object.bin", data)
        assert written.size == len(data)
        head = await store.head("dir/object.bin")
        assert head.size == len(data)
        assert head.etag == written.etag
        assert head.key == "dir/object.bin"
        assert head.url == store.url_for("dir/object.bin")
        assert await store.read("dir/object.bin") == data
        await store.delete("dir/object.bin")
        with pytest.raises(NotFound):
            await store.head("dir/object.bin")

    async def test_overwrite_changes_etag(self, store: ObjectStore) -> None:
        """Every write produces a new etag, so If-Match can tell versions apart."""
        first = await store.put("k", b"one")
        second = await store.put("k", b"two")
        assert first.etag != second.etag
        assert await store.read("k") == b"two"

    async def test_zero_byte_object(self, store: ObjectStore) -> None:
        """Empty objects are objects: size 0, readable, listed."""
        await store.put("empty", b"")
        assert (await store.head("empty")).size == 0
        assert await store.read("empty") == b""
        assert await store.read("empty", 0, 10) == b""
        assert await collect_keys(store) == ["empty"]

    async def test_native_checksum_reported(self, store: ObjectStore) -> None:
        """Each store reports at least one of its native checksums for what it stored."""
        meta = await store.put("c", b"checksummed bytes")
        head = await store.head("c")
        reported = set(meta.checksums) | set(head.checksums)
        assert reported & store.limits.native_checksums

    async def test_delete_missing_key_is_quiet(self, store: ObjectStore) -> None:
        """Deleting what is not there succeeds: deletes are idempotent."""
        await store.delete("never-written")

    async def test_attributes_round_trip(self, store: ObjectStore) -> None:
        """Content-type, cache-control, content-encoding, content-disposition and user
        metadata come back as written."""
        attributes = ObjectAttributes(
            content_type="application/x-parquet",
            cache_control="max-age=60",
            content_encoding="identity",
            content_disposition='attachment; filename="part-0.parquet"',
            user_metadata={"owner": "data_team", "run_id": "42"},
        )
        await store.put("attrs", b"PAR1", attributes=attributes)
        got = (await store.head("attrs")).attributes
        assert got.content_type == attributes.content_type
        assert got.cache_control == attributes.cache_control
        assert got.content_encoding == attributes.content_encoding
        assert got.content_disposition == attributes.content_disposition
        assert dict(got.user_metadata) == attributes.user_metadata


class TestRanges:
    async def test_ranged_reads(self, store: ObjectStore) -> None:
        """First byte, last byte, a middle slice and a range running past the end."""
        data = os.urandom(10_000)
        await store.put("r", data)
        assert await store.read("r", 0, 1) == data[:1]
        assert await store.read("r", 9_999, 10_000) == data[-1:]
        assert await store.read("r", 1234, 5678) == data[1234:5678]
        assert await store.read("r", 9_000) == data[9_000:]
        assert await store.read("r", 9_990, 20_000) == data[9_990:]

    async def test_reads_into_a_buffer(self, store: ObjectStore) -> None:
        """A range read into the caller's buffer: the bytes and their count, fewer where the
        object ends sooner (the rest of the buffer untouched), pinned like a read."""
        data = os.urandom(10_000)
        put = await store.put("r", data)
        buffer = bytearray(b"\xaa" * 4_000)
        assert await store.read_into("r", 1234, buffer, if_match=put.etag) == 4_000
        assert buffer == data[1234:5234]
        tail = bytearray(b"\xaa" * 100)
        assert await store.read_into("r", 9_950, tail) == 50
        assert tail == data[9_950:] + b"\xaa" * 50
        await store.put("r", b"overwritten")
        with pytest.raises(PreconditionFailed):
            await store.read_into("r", 0, bytearray(4), if_match=put.etag)

    async def test_range_starting_past_the_end(self, store: ObjectStore) -> None:
        """A range that starts at or after the end of the object is refused, not empty."""
        await store.put("r", b"0123456789")
        with pytest.raises(InvalidArgument):
            await store.read("r", 10, 20)
        with pytest.raises(InvalidArgument):
            await store.read("r", 50)


class TestConditions:
    async def test_if_match_read_after_overwrite(self, store: ObjectStore) -> None:
        """A read pinned to an etag fails once the object was overwritten."""
        old = await store.put("k", b"version one")
        assert await store.read("k", if_match=old.etag) == b"version one"
        await store.put("k", b"version two")
        with pytest.raises(PreconditionFailed):
            await store.read("k", 0, 4, if_match=old.etag)

    async def test_version_pinned_read_never_returns_newer_bytes(self, store: ObjectStore) -> None:
        """Reading a pinned version after an overwrite gives the old bytes or fails; never
        the new bytes."""
        old = await store.put("k", b"old bytes")
        if old.version is None:
            # No version to pin: a store without versions, or an unversioned S3 bucket.
            assert store.scheme in ("s3", "az", "file") or not store.limits.versioned_reads
            return
        assert await store.read("k", version=old.version) == b"old bytes"
        await store.put("k", b"new bytes")
        try:
            pinned = await store.read("k", version=old.version)
        except (NotFound, PreconditionFailed):
            return
        assert pinned == b"old bytes"

    async def test_create_only(self, store: ObjectStore) -> None:
        """create_only writes a new key and refuses an existing one, leaving it intact."""
        await store.put("k", b"first", create_only=True)
        with pytest.raises(AlreadyExists):
            await store.put("k", b"second", create_only=True)
        assert await store.read("k") == b"first"

    async def test_create_only_race_has_one_winner(self, store: ObjectStore) -> None:
        """Five concurrent create-only writers: exactly one succeeds."""

        async def attempt(n: int) -> bool:
            try:
                await store.put("race", f"writer {n}".encode(), create_only=True)
            except AlreadyExists:
                return False
            return True

        results = await asyncio.gather(*(attempt(n) for n in range(5)))
        assert sum(results) == 1
        winner = results.index(True)
        assert await store.read("race") == f"writer {winner}".encode()

    async def test_put_if_match(self, store: ObjectStore) -> None:
        """A conditional overwrite succeeds on the current etag and fails on a stale one."""
        first = await store.put("k", b"1")
        second = await store.put("k", b"2", if_match=first.etag)
        with pytest.raises(PreconditionFailed):
            await store.put("k", b"3", if_match=first.etag)
        assert (await store.head("k")).etag == second.etag
        assert await store.read("k") == b"2"

    async def test_delete_if_match(self, store: ObjectStore) -> None:
        """A conditional delete refuses a stale etag and succeeds on the current one."""
        first = await store.put("k", b"1")
        second = await store.put("k", b"2")
        with pytest.raises(PreconditionFailed):
            await store.delete("k", if_match=first.etag)
        assert await store.read("k") == b"2"
        assert second.etag is not None
        await store.delete("k", if_match=second.etag)
        with pytest.raises(NotFound):
            await store.head("k")


class TestListing:
    async def test_listing_across_pages(self, store: ObjectStore) -> None:
        """Listing pages through every object in key order, filtered by prefix."""
        keys = [f"data/{i:03d}" for i in range(23)] + ["other/x", "data-not-in-dir"]
        await asyncio.gather(*(store.put(k, k.encode()) for k in keys))
        assert await collect_keys(store, "data/", page_size=5) == sorted(keys[:23])
        assert await collect_keys(store, page_size=4) == sorted(keys)
        listed = [m async for m in store.list("data/", page_size=7)]
        assert all(m.size == len(m.key.encode()) for m in listed)

    async def test_start_after(self, store: ObjectStore) -> None:
        """start_after resumes a listing strictly after the given key."""
        keys = [f"k{i:02d}" for i in range(12)]
        await asyncio.gather(*(store.put(k, b"") for k in keys))
        assert await collect_keys(store, start_after="k04", page_size=3) == keys[5:]
        assert await collect_keys(store, start_after="k11") == []

    async def test_listing_is_streamed(self, store: ObjectStore) -> None:
        """The first object arrives before the listing is exhausted (a page at a time)."""
        await asyncio.gather(*(store.put(f"s{i:02d}", b"") for i in range(6)))
        listing = store.list(page_size=2)
        first = await anext(listing)
        assert first.key == "s00"
        await listing.aclose()  # type: ignore[attr-defined]


class TestMultipart:
    async def test_parts_completed_out_of_order(self, store: ObjectStore) -> None:
        """Parts uploaded concurrently in reverse and listed shuffled assemble in number order."""
        size = part_size(store)
        chunks = [os.urandom(size), os.urandom(size), os.urandom(1000)]
        attributes = ObjectAttributes(
            content_type="application/octet-stream", user_metadata={"source": "conformance"}
        )
        upload_id = await store.create_multipart("big/object", attributes=attributes)
        tokens = await asyncio.gather(
            *(
                store.put_part("big/object", upload_id, n, chunks[n - 1])
                for n in reversed(range(1, 4))
            )
        )
        shuffled = list(tokens)
        random.Random(7).shuffle(shuffled)
        meta = await store.complete_multipart("big/object", upload_id, shuffled)
        assert meta.size == sum(map(len, chunks))
        assert await store.read("big/object") == b"".join(chunks)
        head = await store.head("big/object")
        assert head.attributes.content_type == "application/octet-stream"
        assert dict(head.attributes.user_metadata) == {"source": "conformance"}
        assert await collect_keys(store) == ["big/object"]
        assert await collect_uploads(store) == []

    async def test_parts_placed_at_their_offsets(self, store: ObjectStore) -> None:
        """Parts sent with their offsets, concurrently and in reverse, assemble in number
        order with the attributes and checksum of the whole object."""
        size = part_size(store)
        chunks = [os.urandom(size), os.urandom(size), os.urandom(1000)]
        attributes = ObjectAttributes(user_metadata={"source": "conformance"})
        upload_id = await store.create_multipart("placed", attributes=attributes)
        tokens = await asyncio.gather(
            *(
                store.put_part_at("placed", upload_id, n, (n - 1) * size, chunks[n - 1])
                for n in reversed(range(1, 4))
            )
        )
        meta = await store.complete_multipart("placed", upload_id, tokens)
        assert meta.size == sum(map(len, chunks))
        assert await store.read("placed") == b"".join(chunks)
        head = await store.head("placed")
        assert dict(head.attributes.user_metadata) == {"source": "conformance"}
        assert await collect_keys(store) == ["placed"]
        assert await collect_uploads(store) == []

    @pytest.mark.parametrize("placed", [False, True], ids=["put_part", "put_part_at"])
    async def test_abort_leaves_nothing(self, store: ObjectStore, placed: bool) -> None:
        """An aborted upload leaves no object, no listed upload and no staged parts."""
        size = part_size(store)
        upload_id = await store.create_multipart("aborted")
        if placed:
            await store.put_part_at("aborted", upload_id, 1, 0, os.urandom(size))
            await store.put_part_at("aborted", upload_id, 2, size, os.urandom(10))
        else:
            await store.put_part("aborted", upload_id, 1, os.urandom(size))
            await store.put_part("aborted", upload_id, 2, os.urandom(10))
        assert await collect_uploads(store) == [("aborted", upload_id)]
        await store.abort_multipart("aborted", upload_id)
        with pytest.raises(NotFound):
            await store.head("aborted")
        assert await collect_keys(store) == []
        assert await collect_uploads(store) == []

    async def test_in_progress_uploads_listed_by_prefix(self, store: ObjectStore) -> None:
        """Uploads neither completed nor aborted are listed, so orphans can be cleaned."""
        first = await store.create_multipart("a/one")
        second = await store.create_multipart("b/two")
        assert sorted(await collect_uploads(store)) == sorted([("a/one", first), ("b/two", second)])
        assert await collect_uploads(store, "b/") == [("b/two", second)]
        await store.abort_multipart("a/one", first)
        await store.abort_multipart("b/two", second)
        assert await collect_uploads(store) == []

    async def test_single_part_upload(self, store: ObjectStore) -> None:
        """A one-part upload, smaller than the minimum part size, is allowed as the last part."""
        upload_id = await store.create_multipart("one")
        token = await store.put_part("one", upload_id, 1, b"small")
        await store.complete_multipart("one", upload_id, [token])
        assert await store.read("one") == b"small"


class TestFencedCompletion:
    """A completion conditioned on what the writer saw at the key: a writer that lost its
    claim cannot land its upload over another writer's object (issue: one key, one writer)."""

    async def _upload(self, store: ObjectStore, key: str) -> tuple[str, list[PartToken]]:
        upload_id = await store.create_multipart(key)
        token = await store.put_part(key, upload_id, 1, b"late writer")
        return upload_id, [token]

    async def test_create_only_completion_refuses_an_existing_key(self, store: ObjectStore) -> None:
        upload_id, parts = await self._upload(store, "k")
        await store.put("k", b"there first")
        with pytest.raises(AlreadyExists):
            await store.complete_multipart("k", upload_id, parts, create_only=True)
        assert await store.read("k") == b"there first"
        await store.abort_multipart("k", upload_id)
        assert await collect_uploads(store) == []
        assert await store.read("k") == b"there first"

    async def test_create_only_completion_of_a_new_key(self, store: ObjectStore) -> None:
        upload_id, parts = await self._upload(store, "k")
        await store.complete_multipart("k", upload_id, parts, create_only=True)
        assert await store.read("k") == b"late writer"

    async def test_if_match_completion_refuses_a_changed_key(self, store: ObjectStore) -> None:
        seen = await store.put("k", b"seen by the writer")
        upload_id, parts = await self._upload(store, "k")
        await store.put("k", b"written since")
        assert seen.etag is not None
        with pytest.raises(PreconditionFailed):
            await store.complete_multipart("k", upload_id, parts, if_match=seen.etag)
        assert await store.read("k") == b"written since"
        await store.abort_multipart("k", upload_id)
        assert await collect_uploads(store) == []

    async def test_if_match_completion_on_the_current_etag(self, store: ObjectStore) -> None:
        seen = await store.put("k", b"seen by the writer")
        upload_id, parts = await self._upload(store, "k")
        assert seen.etag is not None
        await store.complete_multipart("k", upload_id, parts, if_match=seen.etag)
        assert await store.read("k") == b"late writer"


class TestGet:
    """``get``: the whole object with what ``head`` reports about it, pinned like ``read``."""

    @pytest.mark.parametrize("size", [0, 1, 70_000])
    async def test_get_returns_the_bytes_and_heads_metadata(
        self, store: ObjectStore, size: int
    ) -> None:
        data = os.urandom(size)
        attributes = ObjectAttributes(content_type="text/csv", user_metadata={"k": "v"})
        put = await store.put("obj", data, attributes=attributes)
        meta, got = await store.get("obj", if_match=put.etag)
        assert bytes(got) == data
        head = await store.head("obj")
        assert (meta.key, meta.size, meta.etag, meta.version) == (
            head.key,
            head.size,
            head.etag,
            head.version,
        )
        assert meta.attributes == head.attributes
        assert meta.checksums == head.checksums
        assert meta.last_modified == head.last_modified

    async def test_get_pinned_to_an_etag_gone_is_refused(self, store: ObjectStore) -> None:
        old = await store.put("obj", b"first")
        await store.put("obj", b"second, longer")
        with pytest.raises(PreconditionFailed):
            await store.get("obj", if_match=old.etag)

    async def test_get_of_a_missing_key_is_not_found(self, store: ObjectStore) -> None:
        with pytest.raises(NotFound):
            await store.get("absent")


class TestServerSideCopy:
    async def test_copy_within(self, store: ObjectStore) -> None:
        """Server-side copy duplicates bytes and attributes, and honours If-Match."""
        if not store.limits.server_side_copy:
            with pytest.raises(StoreError):
                await store.copy_within("a", "b")
            return
        data = os.urandom(50_000)
        source = await store.put(
            "src",
            data,
            attributes=ObjectAttributes(content_type="text/csv", user_metadata={"k": "v"}),
        )
        copied = await store.copy_within("src", "dst", if_match=source.etag)
        assert copied.size == len(data)
        assert await store.read("dst") == data
        head = await store.head("dst")
        assert head.attributes.content_type == "text/csv"
        assert dict(head.attributes.user_metadata) == {"k": "v"}
        await store.put("src", b"changed")
        with pytest.raises(PreconditionFailed):
            await store.copy_within("src", "dst2", if_match=source.etag)


class TestFencedServerSideCopy:
    """A server-side copy conditioned on what the writer saw at the destination key, as a
    put or a completion is: a writer that lost its claim cannot copy over another's object."""

    async def _source(self, store: ObjectStore) -> ObjectMeta:
        return await store.put("src", b"late writer's version")

    async def test_create_only_copy_refuses_an_existing_key(self, store: ObjectStore) -> None:
        if not store.limits.server_side_copy:
            with pytest.raises(NotSupported):
                await store.copy_within("src", "k", create_only=True)
            return
        source = await self._source(store)
        await store.put("k", b"there first")
        with pytest.raises(AlreadyExists):
            await store.copy_within("src", "k", if_match=source.etag, create_only=True)
        assert await store.read("k") == b"there first"

    async def test_create_only_copy_of_a_new_key(self, store: ObjectStore) -> None:
        if not store.limits.server_side_copy:
            return
        source = await self._source(store)
        await store.copy_within("src", "k", if_match=source.etag, create_only=True)
        assert await store.read("k") == b"late writer's version"

    async def test_if_match_copy_refuses_a_changed_key(self, store: ObjectStore) -> None:
        if not store.limits.server_side_copy:
            return
        source = await self._source(store)
        seen = await store.put("k", b"seen by the writer")
        await store.put("k", b"written since")
        assert seen.etag is not None
        with pytest.raises(PreconditionFailed):
            await store.copy_within("src", "k", if_match=source.etag, dest_if_match=seen.etag)
        assert await store.read("k") == b"written since"

    async def test_if_match_copy_on_the_current_etag(self, store: ObjectStore) -> None:
        if not store.limits.server_side_copy:
            return
        source = await self._source(store)
        seen = await store.put("k", b"seen by the writer")
        assert seen.etag is not None
        await store.copy_within("src", "k", if_match=source.etag, dest_if_match=seen.etag)
        assert await store.read("k") == b"late writer's version"


HOSTILE_KEYS = [
    "unicode/naïve café ñ 日本語",
    "emoji/🚀📦✨",
    "spaces/a key with spaces",
    "plus/a+b+c",
    "percent/a%2Fb%20c",
    "question/what?x=1",
    "hash/anchor#frag",
    " leading-space",
    "trailing-space ",
    "dir/ends-with-slash/",
    "a" * 1024,
    ("long/" + "b" * 200 + "/") * 4 + "c" * (1024 - 4 * 206 - 5),
    "a//double-slash",
    "dots/./and/../segments",
    "quote'and\"double",
    "backslash\\name",
    "tab\tand control",
    "ampersand&equals=semicolon;",
    "brackets[]{}<>|^`",
    "zero-width\u200bjoiner",
    "combining-e\u0301-vs-\u00e9",
]


class TestKeys:
    @pytest.mark.parametrize("key", HOSTILE_KEYS, ids=lambda k: repr(k)[:40])
    async def test_hostile_key_round_trips_or_is_refused(
        self, store: ObjectStore, key: str
    ) -> None:
        """Every key is stored and listed byte-exact, or refused with InvalidKey naming the
        store's rule; never silently altered."""
        data = key.encode("utf-8")
        try:
            await store.put(key, data)
        except InvalidKey as exc:
            refusal = str(exc)
        else:
            refusal = ""
        if refusal:
            assert "key" in refusal.lower() or "name" in refusal.lower(), refusal
            return
        assert await store.read(key) == data
        assert (await store.head(key)).key == key
        listed = await collect_keys(store)
        assert listed == [key]
        await store.delete(key)
        assert await collect_keys(store) == []

    async def test_keys_differing_only_in_normalisation_stay_distinct(
        self, store: ObjectStore
    ) -> None:
        """Composed and decomposed forms of the same text are two keys, never merged."""
        composed, decomposed = "caf\u00e9", "cafe\u0301"
        await store.put(composed, b"composed")
        await store.put(decomposed, b"decomposed")
        assert await store.read(composed) == b"composed"
        assert await store.read(decomposed) == b"decomposed"
        assert sorted(await collect_keys(store)) == sorted([composed, decomposed])


class TestMissing:
    async def test_missing_key(self, store: ObjectStore) -> None:
        """Head and read of a missing key raise NotFound."""
        with pytest.raises(NotFound):
            await store.head("nope")
        with pytest.raises(NotFound):
            await store.read("nope")

    async def test_missing_container(self, store: ObjectStore) -> None:
        """Every operation on a bucket/container/directory that does not exist is
        ContainerNotFound, which no caller can take for a missing key (NotFound)."""
        missing_root = (
            store.root_url.rstrip("/") + "-missing"
            if store.scheme == "file"
            else f"{store.scheme}://{unique_name('missing')}"
        )
        async with open_store(missing_root) as missing:
            with pytest.raises(ContainerNotFound):
                await missing.head("k")
            with pytest.raises(ContainerNotFound):
                await missing.read("k")
            with pytest.raises(ContainerNotFound):
                await missing.put("k", b"data")
            with pytest.raises(ContainerNotFound):
                await collect_keys(missing)


# Which emulators check credentials: Azurite verifies Shared Key signatures. moto accepts any
# key unless IAM enforcement is set up (docs: "moto does not validate credentials by default"),
# fake-gcs-server accepts unauthenticated requests by design (it has no auth), and file/mem have
# no credentials at all (tests run as root, which bypasses file permissions).
BAD_CREDENTIALS = {
    "az": {
        "AZURE_STORAGE_CONNECTION_STRING": lambda env: env[
            "AZURE_STORAGE_CONNECTION_STRING"
        ].replace("AccountKey=Eby8", "AccountKey=AAAA"),
    },
}


class TestCredentials:
    async def test_bad_credentials_are_permission_denied(self, store: ObjectStore) -> None:
        """A store opened with a wrong key raises PermissionDenied, not a generic failure."""
        overrides = BAD_CREDENTIALS.get(store.scheme)
        if overrides is None:
            pytest.skip(f"the {store.scheme} test bed does not check credentials (see above)")
        bad_env = {name: make(dict(os.environ)) for name, make in overrides.items()}
        with environment(bad_env):
            bad_store = open_store(store.root_url)
        async with bad_store:
            with pytest.raises(PermissionDenied):
                await bad_store.head("k")
            with pytest.raises(PermissionDenied):
                await bad_store.put("k", b"data")
