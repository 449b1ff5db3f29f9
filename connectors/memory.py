"""An in-process store with the semantics of a versioned cloud bucket.

It passes the same conformance suite as the real connectors, so tests of the engine, the
daemon and the demo can run on it. Stores of the same name share contents within a process.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import ClassVar, Self

from awscrt import checksums as crt_checksums

from connectors.base import (
    AlreadyExists,
    Buffer,
    ChecksumKind,
    ContainerNotFound,
    IntegrityError,
    InvalidArgument,
    Limits,
    MiB,
    MultipartUpload,
    NotFound,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PartToken,
    PreconditionFailed,
    StoreURL,
    TiB,
    check_key,
    clip_range,
)


def crc32c_b64(data: Buffer) -> str:
    return base64.b64encode(crt_checksums.crc32c(data).to_bytes(4, "big")).decode()


def _checked_crc32c(data: Buffer, checksums: Mapping[ChecksumKind, str] | None, url: str) -> str:
    """The CRC32C of ``data``, refusing a write whose sent CRC32C differs, as a cloud store
    refuses damaged bytes."""
    actual = crc32c_b64(data)
    sent = (checksums or {}).get(ChecksumKind.CRC32C)
    if sent is not None and sent != actual:
        raise IntegrityError(f"bytes have CRC32C {actual}, the write says {sent}", url=url)
    return actual


@dataclass
class _Object:
    data: bytes
    meta: ObjectMeta


@dataclass
class _Upload:
    key: str
    attributes: ObjectAttributes
    initiated: datetime
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Bucket:
    objects: dict[str, _Object] = field(default_factory=dict)
    versions: dict[tuple[str, str], _Object] = field(default_factory=dict)
    uploads: dict[str, _Upload] = field(default_factory=dict)


class MemoryStore(ObjectStore):
    scheme: ClassVar[str] = "mem"
    limits = Limits(
        min_part_size=1,
        max_part_size=5 * 1024 * MiB,
        max_parts=10_000,
        max_object_size=5 * TiB,
        max_single_put=5 * 1024 * MiB,
        max_key_bytes=1024,
        native_checksums=frozenset({ChecksumKind.CRC32C}),
        multipart=True,
        server_side_copy=True,
        versioned_reads=True,
        metadata_at_complete=True,
        server_side_copy_via="an in-process copy",
        server_side_copy_scope="one bucket and prefix",
    )

    _buckets: ClassVar[dict[str, _Bucket]] = {}
    _sequence: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self, name: str, prefix: str = "") -> None:
        super().__init__(f"mem://{name}/{prefix}")
        self._name = name
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url.container, url.path)

    @classmethod
    def reset(cls, name: str) -> None:
        """Forget the contents of the store ``name``."""
        cls._buckets.pop(name, None)

    async def create_container(self) -> None:
        await asyncio.sleep(0)
        self._buckets.setdefault(self._name, _Bucket())

    @property
    def _bucket(self) -> _Bucket:
        bucket = self._buckets.get(self._name)
        if bucket is None:
            raise ContainerNotFound(f"store mem://{self._name} does not exist", url=self.root_url)
        return bucket

    def _full(self, key: str) -> str:
        check_key(self._prefix + key, self.limits, self.url_for(key))
        return self._prefix + key

    def _current(self, key: str, version: str | None = None) -> _Object:
        full = self._full(key)
        if version is not None:
            found = self._bucket.versions.get((full, version))
            if found is None:
                raise NotFound(f"version {version} not found", url=self.url_for(key))
            return found
        obj = self._bucket.objects.get(full)
        if obj is None:
            raise NotFound("object not found", url=self.url_for(key))
        return obj

    def _store(self, key: str, data: bytes, attributes: ObjectAttributes) -> ObjectMeta:
        full = self._full(key)
        version = str(next(self._sequence))
        meta = ObjectMeta(
            url=self.url_for(key),
            key=key,
            size=len(data),
            etag=f'"{uuid.uuid4().hex}"',
            version=version,
            last_modified=datetime.now(UTC),
            attributes=replace(attributes, user_metadata=dict(attributes.user_metadata)),
            checksums={ChecksumKind.CRC32C: crc32c_b64(data)},
        )
        obj = _Object(data, meta)
        self._bucket.objects[full] = obj
        self._bucket.versions[(full, version)] = obj
        return meta

    def _check_conditions(self, key: str, create_only: bool, if_match: str | None) -> None:
        existing = self._bucket.objects.get(self._full(key))
        if create_only and existing is not None:
            raise AlreadyExists("object already exists", url=self.url_for(key))
        if if_match is not None and (existing is None or existing.meta.etag != if_match):
            raise PreconditionFailed(f"etag is not {if_match}", url=self.url_for(key))

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        await asyncio.sleep(0)
        return self._current(key, version).meta

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> bytes:
        await asyncio.sleep(0)
        obj = self._current(key, version)
        if if_match is not None and obj.meta.etag != if_match:
            raise PreconditionFailed(f"etag is no longer {if_match}", url=self.url_for(key))
        lo, hi = clip_range(obj.meta.size, start, end, self.url_for(key))
        return obj.data[lo:hi]

    async def put(
        self,
        key: str,
        data: Buffer,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> ObjectMeta:
        await asyncio.sleep(0)
        _checked_crc32c(data, checksums, self.url_for(key))
        self._check_conditions(key, create_only, if_match)
        return self._store(key, bytes(data), attributes or ObjectAttributes())

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[ObjectMeta]:
        full_prefix = self._prefix + prefix
        after = None if start_after is None else self._prefix + start_after
        while True:
            await asyncio.sleep(0)
            page = sorted(
                k
                for k in self._bucket.objects
                if k.startswith(full_prefix) and (after is None or k > after)
            )[:page_size]
            for full_key in page:
                obj = self._bucket.objects.get(full_key)
                if obj is not None:
                    yield obj.meta
            if len(page) < page_size:
                return
            after = page[-1]

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        await asyncio.sleep(0)
        full = self._full(key)
        existing = self._bucket.objects.get(full)
        if if_match is not None:
            if existing is None:
                raise NotFound("object not found", url=self.url_for(key))
            if existing.meta.etag != if_match:
                raise PreconditionFailed(f"etag is not {if_match}", url=self.url_for(key))
        self._bucket.objects.pop(full, None)

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        await asyncio.sleep(0)
        upload_id = uuid.uuid4().hex
        self._bucket.uploads[upload_id] = _Upload(
            self._full(key), attributes or ObjectAttributes(), datetime.now(UTC)
        )
        return upload_id

    def _upload(self, key: str, upload_id: str) -> _Upload:
        upload = self._bucket.uploads.get(upload_id)
        if upload is None or upload.key != self._full(key):
            raise NotFound(f"no multipart upload {upload_id}", url=self.url_for(key))
        return upload

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        await asyncio.sleep(0)
        self.check_part(key, part_number, len(data))
        checksum = _checked_crc32c(data, checksums, self.url_for(key))
        self._upload(key, upload_id).parts[part_number] = bytes(data)
        return PartToken(part_number, checksum, len(data), {ChecksumKind.CRC32C: checksum})

    async def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartToken],
        *,
        extra_metadata: Mapping[str, str] | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> ObjectMeta:
        await asyncio.sleep(0)
        upload = self._upload(key, upload_id)
        self._check_conditions(key, create_only, if_match)
        ordered = sorted(parts, key=lambda p: p.part_number)
        chunks = []
        for part in ordered:
            stored = upload.parts.get(part.part_number)
            if stored is None or crc32c_b64(stored) != part.token:
                raise InvalidArgument(
                    f"part {part.part_number} was not uploaded as given", url=self.url_for(key)
                )
            chunks.append(stored)
        attributes = upload.attributes
        if extra_metadata:
            attributes = replace(
                attributes, user_metadata={**attributes.user_metadata, **extra_metadata}
            )
        meta = self._store(key, b"".join(chunks), attributes)
        del self._bucket.uploads[upload_id]
        return meta

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await asyncio.sleep(0)
        upload = self._bucket.uploads.get(upload_id)
        if upload is not None and upload.key == self._full(key):
            del self._bucket.uploads[upload_id]

    async def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        full_prefix = self._prefix + prefix
        for upload_id, upload in sorted(self._bucket.uploads.items(), key=lambda u: u[1].key):
            if upload.key.startswith(full_prefix):
                yield MultipartUpload(upload.key[len(self._prefix) :], upload_id, upload.initiated)

    async def copy_within(
        self,
        source_key: str,
        dest_key: str,
        *,
        if_match: str | None = None,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        dest_if_match: str | None = None,
    ) -> ObjectMeta:
        await asyncio.sleep(0)
        source = self._current(source_key)
        if if_match is not None and source.meta.etag != if_match:
            raise PreconditionFailed(f"etag is no longer {if_match}", url=self.url_for(source_key))
        self._check_conditions(dest_key, create_only, dest_if_match)
        return self._store(dest_key, source.data, attributes or source.meta.attributes)
