"""Store wrappers that inject faults at the connector boundary, around a real store."""

from __future__ import annotations

import collections
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Self

from connectors.base import (
    Buffer,
    ChecksumKind,
    MultipartUpload,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PartToken,
    StoreURL,
    Throttled,
)


class FaultyStore(ObjectStore):
    """Delegates to ``inner``; hooks let a test flip bytes, throttle, or act mid-copy."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner.root_url)
        self.inner = inner
        self.scheme = inner.scheme  # type: ignore[misc]
        self.limits = inner.limits
        self.flip_next_parts = 0
        self.flip_next_puts = 0
        self.damage_next_writes = 0
        self.flip_reads = 0
        self.throttle_next = 0
        self.ignore_aborts = False
        self.before_read: Callable[[int], Awaitable[None]] | None = None
        #: Awaited before a put or a multipart completion is sent (a writer held back).
        self.before_final_write: Callable[[], Awaitable[None]] | None = None
        #: Awaited with the part number before a part is sent at an offset (``put_part_at``).
        self.before_part: Callable[[int], Awaitable[None]] | None = None
        self.reads = 0
        self.parts_uploaded: list[int] = []
        #: Requests made through this wrapper, by operation.
        self.calls: collections.Counter[str] = collections.Counter()

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        raise NotImplementedError("wrap an opened store instead")

    def _maybe_throttle(self) -> None:
        if self.throttle_next > 0:
            self.throttle_next -= 1
            raise Throttled("injected 503 SlowDown", url=self.root_url, retry_after=0.01)

    async def _maybe_damage(self, key: str, written: ObjectMeta) -> ObjectMeta:
        """The object that landed is not the one sent: same size and attributes (so the
        replica marks too), other bytes, as a store that lost or mixed up data would hold."""
        if self.damage_next_writes <= 0:
            return written
        self.damage_next_writes -= 1
        landed = await self.inner.head(key)
        await self.inner.put(key, os.urandom(landed.size), attributes=landed.attributes)
        return written

    @staticmethod
    def _flip(data: Buffer) -> bytes:
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x01
        return bytes(damaged)

    async def create_container(self) -> None:
        await self.inner.create_container()

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        self._maybe_throttle()
        self.calls["head"] += 1
        return await self.inner.head(key, version=version)

    async def get(
        self, key: str, *, if_match: str | None = None, version: str | None = None
    ) -> tuple[ObjectMeta, bytes]:
        self._maybe_throttle()
        self.calls["get"] += 1
        return await self.inner.get(key, if_match=if_match, version=version)

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> bytes:
        self._maybe_throttle()
        self.reads += 1
        self.calls["read"] += 1
        if self.before_read is not None:
            await self.before_read(self.reads)
        data = await self.inner.read(key, start, end, if_match=if_match, version=version)
        if self.flip_reads > 0 and data:
            self.flip_reads -= 1
            return self._flip(data)
        return data

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
        self._maybe_throttle()
        self.calls["put"] += 1
        if self.before_final_write is not None:
            await self.before_final_write()
        if self.flip_next_puts > 0 and data:
            self.flip_next_puts -= 1
            data = self._flip(data)
        written = await self.inner.put(
            key,
            data,
            attributes=attributes,
            create_only=create_only,
            if_match=if_match,
            checksums=checksums,
        )
        return await self._maybe_damage(key, written)

    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[ObjectMeta]:
        return self.inner.list(prefix, start_after=start_after, page_size=page_size)

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        await self.inner.delete(key, if_match=if_match)

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        self._maybe_throttle()
        return await self.inner.create_multipart(key, attributes=attributes)

    async def create_ordered_upload(
        self,
        key: str,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> str:
        self._maybe_throttle()
        return await self.inner.create_ordered_upload(
            key, attributes=attributes, create_only=create_only, if_match=if_match
        )

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        self._maybe_throttle()
        if self.flip_next_parts > 0:
            self.flip_next_parts -= 1
            data = self._flip(data)
        token = await self.inner.put_part(key, upload_id, part_number, data, checksums=checksums)
        self.parts_uploaded.append(part_number)
        return token

    async def put_part_at(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        offset: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        self._maybe_throttle()
        if self.before_part is not None:
            await self.before_part(part_number)
        if self.flip_next_parts > 0:
            self.flip_next_parts -= 1
            data = self._flip(data)
        token = await self.inner.put_part_at(
            key, upload_id, part_number, offset, data, checksums=checksums
        )
        self.parts_uploaded.append(part_number)
        return token

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
        self._maybe_throttle()
        if self.before_final_write is not None:
            await self.before_final_write()
        completed = await self.inner.complete_multipart(
            key,
            upload_id,
            parts,
            extra_metadata=extra_metadata,
            checksums=checksums,
            create_only=create_only,
            if_match=if_match,
        )
        return await self._maybe_damage(key, completed)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        if not self.ignore_aborts:
            await self.inner.abort_multipart(key, upload_id)

    def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        return self.inner.list_multipart_uploads(prefix)

    def copies_from(self, source: ObjectStore) -> bool:
        return self.inner.copies_from(_unwrapped(source))

    async def copy_from(
        self,
        source: ObjectStore,
        source_key: str,
        dest_key: str,
        *,
        if_match: str | None = None,
        attributes: ObjectAttributes | None = None,
        inspect: Callable[[memoryview, int], None] | None = None,
        extra_metadata: Callable[[], Mapping[str, str]] | None = None,
        create_only: bool = False,
        dest_if_match: str | None = None,
    ) -> ObjectMeta:
        self._maybe_throttle()
        if self.before_final_write is not None:
            await self.before_final_write()
        return await self.inner.copy_from(
            _unwrapped(source),
            source_key,
            dest_key,
            if_match=if_match,
            attributes=attributes,
            inspect=inspect,
            extra_metadata=extra_metadata,
            create_only=create_only,
            dest_if_match=dest_if_match,
        )

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
        self._maybe_throttle()
        return await self.inner.copy_within(
            source_key,
            dest_key,
            if_match=if_match,
            attributes=attributes,
            create_only=create_only,
            dest_if_match=dest_if_match,
        )

    async def close(self) -> None:
        await self.inner.close()


def _unwrapped(store: ObjectStore) -> ObjectStore:
    return store.inner if isinstance(store, FaultyStore) else store
