"""Stores whose multipart uploads are a class of their own (S3, Azure, file): the
``ObjectStore`` multipart calls handed to it, written once for all of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from connectors.base import (
    Buffer,
    ChecksumKind,
    MultipartUpload,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PartToken,
)


class MultipartSteps(Protocol):
    """A store's multipart uploads, as its ``ObjectStore`` methods describe them."""

    async def create(self, key: str, *, attributes: ObjectAttributes | None = None) -> str: ...

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken: ...

    async def complete(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartToken],
        *,
        extra_metadata: Mapping[str, str] | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> ObjectMeta: ...

    async def abort(self, key: str, upload_id: str) -> None: ...

    def list_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]: ...


class DelegatedMultipart(ObjectStore):
    """An ``ObjectStore`` that hands its multipart calls to ``self._multipart``."""

    _multipart: MultipartSteps

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        return await self._multipart.create(key, attributes=attributes)

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        return await self._multipart.put_part(
            key, upload_id, part_number, data, checksums=checksums
        )

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
        return await self._multipart.complete(
            key,
            upload_id,
            parts,
            extra_metadata=extra_metadata,
            checksums=checksums,
            create_only=create_only,
            if_match=if_match,
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._multipart.abort(key, upload_id)

    async def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        async for upload in self._multipart.list_uploads(prefix):
            yield upload
