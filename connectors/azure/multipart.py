"""Multipart uploads of an AzureStore: blocks staged on the destination blob under
deterministic ids, a marker blob per upload naming its key and attributes (Azure has no
upload object to list), the block list committed in part-number order."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock

from connectors.azure.errors import error_code
from connectors.azure.fields import check_echoed_crc64, content_settings, crc64_b64, write_crc64
from connectors.azure.names import UPLOADS_PREFIX, check_attributes
from connectors.base import (
    AlreadyExists,
    Buffer,
    ChecksumKind,
    IntegrityError,
    InvalidArgument,
    MultipartUpload,
    NotFound,
    ObjectAttributes,
    ObjectMeta,
    PartToken,
    PreconditionFailed,
    StoreError,
)

if TYPE_CHECKING:
    from connectors.azure.store import AzureStore

_UPLOAD_KEY_META = "replicator_upload_key"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_PART_DIGITS = 5  # max_parts is 50,000: five digits keep every block id the same length


def _attributes_to_json(name: str, attributes: ObjectAttributes) -> bytes:
    return json.dumps(
        {
            "key": name,
            "content_type": attributes.content_type,
            "cache_control": attributes.cache_control,
            "content_encoding": attributes.content_encoding,
            "content_disposition": attributes.content_disposition,
            "user_metadata": dict(attributes.user_metadata),
        }
    ).encode()


def _attributes_from_json(raw: bytes) -> tuple[str, ObjectAttributes]:
    doc = json.loads(raw)
    return doc["key"], ObjectAttributes(
        content_type=doc["content_type"],
        cache_control=doc["cache_control"],
        content_encoding=doc["content_encoding"],
        content_disposition=doc["content_disposition"],
        user_metadata=doc["user_metadata"],
    )


def _encode_marker_key(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_marker_key(value: str) -> str:
    return base64.urlsafe_b64decode(value.encode()).decode()


def block_id(upload_id: str, part_number: int) -> str:
    """The block id of one part, before the SDK base64-encodes it for the wire."""
    return f"{upload_id}-{part_number:0{_PART_DIGITS}d}"


class AzureMultipart:
    """The multipart uploads of one store."""

    def __init__(self, store: AzureStore) -> None:
        self._store = store

    def _check_upload_id(self, upload_id: str, url: str) -> None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NotFound(f"no multipart upload {upload_id!r}", url=url)

    async def create(self, key: str, *, attributes: ObjectAttributes | None = None) -> str:
        name = self._store._name(key)
        url = self._store.url_for(key)
        attributes = attributes or ObjectAttributes()
        check_attributes(attributes, url)
        upload_id = uuid.uuid4().hex
        body = _attributes_to_json(name, attributes)
        marker = await self._store._blob(UPLOADS_PREFIX + upload_id)
        marker_attributes = ObjectAttributes(
            content_type="application/json",
            user_metadata={_UPLOAD_KEY_META: _encode_marker_key(name)},
        )
        crc64 = crc64_b64(body)
        with self._store._errors(url):
            response = await self._store._upload(
                marker, body, marker_attributes, crc64, overwrite=False
            )
        check_echoed_crc64(response, crc64, url)
        return upload_id

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        # No marker lookup here: a part is one request on the hot path; complete checks it.
        name = self._store._name(key)
        url = self._store.url_for(key)
        self._check_upload_id(upload_id, url)
        self._store.check_part(key, part_number, len(data))
        crc64 = await write_crc64(data, checksums)
        block = block_id(upload_id, part_number)
        client = await self._store._blob(name)
        with self._store._errors(url):
            # stage_block passes any bytes-like body through to the transport uncopied.
            response = await client.stage_block(
                block, cast(bytes, data), length=len(data), headers={"x-ms-content-crc64": crc64}
            )
        check_echoed_crc64(response, crc64, url)
        return PartToken(part_number, block, len(data), {ChecksumKind.CRC64: crc64})

    async def _read_marker(self, upload_id: str, url: str) -> tuple[str, ObjectAttributes] | None:
        marker = await self._store._blob(UPLOADS_PREFIX + upload_id)
        with self._store._errors(url):
            try:
                raw = await (await marker.download_blob()).readall()
            except HttpResponseError as exc:
                if error_code(exc) == "BlobNotFound":
                    return None
                raise
        return _attributes_from_json(raw)

    async def _delete_marker(self, upload_id: str, url: str) -> None:
        marker = await self._store._blob(UPLOADS_PREFIX + upload_id)
        with self._store._errors(url, quiet_missing_blob=True):
            await marker.delete_blob()

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
    ) -> ObjectMeta:
        name = self._store._name(key)
        url = self._store.url_for(key)
        self._check_upload_id(upload_id, url)
        if create_only and if_match is not None:
            raise InvalidArgument("create_only and if_match exclude each other", url=url)
        conditions: dict[str, Any] = {}
        if create_only:
            conditions.update(match_condition=MatchConditions.IfMissing)
        if if_match is not None:
            conditions.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        ordered = sorted(parts, key=lambda p: p.part_number)
        numbers = [p.part_number for p in ordered]
        if len(set(numbers)) != len(numbers):
            raise InvalidArgument("a part number is given twice", url=url)
        for part in ordered:
            if part.token != block_id(upload_id, part.part_number):
                raise InvalidArgument(
                    f"part {part.part_number} was not uploaded by upload {upload_id}", url=url
                )
        ids = [p.token for p in ordered]
        client = await self._store._blob(name)
        marker = await self._read_marker(upload_id, url)
        if marker is None:
            # A retried complete whose first attempt committed and removed the marker.
            with self._store._errors(url):
                try:
                    committed, _ = await client.get_block_list("committed")
                except HttpResponseError as exc:
                    if error_code(exc) != "BlobNotFound":
                        raise
                    committed = []
            if not ids or [b.id for b in committed] != ids:
                raise NotFound(f"no multipart upload {upload_id}", url=url)
        else:
            marker_name, attributes = marker
            if extra_metadata:
                attributes = replace(
                    attributes, user_metadata={**attributes.user_metadata, **extra_metadata}
                )
            if marker_name != name:
                raise NotFound(f"multipart upload {upload_id} is for another key", url=url)
            try:
                with self._store._errors(url):
                    await client.commit_block_list(
                        [BlobBlock(block_id=i) for i in ids],
                        content_settings=content_settings(attributes),
                        metadata=dict(attributes.user_metadata),
                        **conditions,
                    )
            except PreconditionFailed as exc:
                if create_only:
                    raise AlreadyExists(str(exc), url=url) from None
                raise
        meta = await self._store.head(key)
        expected = sum(p.size for p in ordered)
        if meta.size != expected:
            # Never leave a wrong object visible; the marker stays so the upload can be aborted.
            with contextlib.suppress(StoreError):
                await self._store.delete(key, if_match=meta.etag)
            raise IntegrityError(
                f"committed blob holds {meta.size} bytes, the parts hold {expected}", url=url
            )
        await self._delete_marker(upload_id, url)
        return meta

    async def abort(self, key: str, upload_id: str) -> None:
        name = self._store._name(key)
        url = self._store.url_for(key)
        if not _UPLOAD_ID.fullmatch(upload_id):
            return
        marker = await self._store._blob(UPLOADS_PREFIX + upload_id)
        with self._store._errors(url):
            try:
                props = await marker.get_blob_properties()
            except HttpResponseError as exc:
                if error_code(exc) != "BlobNotFound":
                    raise
                props = None
        if props is not None and props.metadata.get(_UPLOAD_KEY_META) != _encode_marker_key(name):
            return  # the upload belongs to another key
        await self._drop_staged_blocks(name, upload_id, url)
        if props is not None:
            with self._store._errors(url, quiet_missing_blob=True):
                await marker.delete_blob(
                    etag=props.etag, match_condition=MatchConditions.IfNotModified
                )

    async def _drop_staged_blocks(self, name: str, upload_id: str, url: str) -> None:
        """Delete the uncommitted blocks of this upload now rather than in 7 days, when that
        is safe: only a blob that was never committed, and only if every block staged on it
        is this upload's (another upload to the same key keeps its blocks)."""
        client = await self._store._blob(name)
        with self._store._errors(url):
            try:
                _, uncommitted = await client.get_block_list("uncommitted")
            except HttpResponseError as exc:
                if error_code(exc) != "BlobNotFound":
                    raise
                return
        if not uncommitted or any(not b.id.startswith(upload_id) for b in uncommitted):
            return
        with self._store._errors(url):
            try:
                await client.get_blob_properties()
                return  # a committed blob: its name must not be deleted
            except HttpResponseError as exc:
                if error_code(exc) != "BlobNotFound":
                    raise
        # If-None-Match: * keeps a blob committed in the meantime (Azure honours it).
        with contextlib.suppress(NotFound, PreconditionFailed), self._store._errors(url):
            await client.delete_blob(match_condition=MatchConditions.IfMissing)

    async def list_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        full_prefix = self._store._prefix + prefix
        async for markers in self._store._blob_pages(UPLOADS_PREFIX, self._store.root_url + prefix):
            for marker in markers:
                upload_id = marker.name[len(UPLOADS_PREFIX) :]
                encoded = (marker.metadata or {}).get(_UPLOAD_KEY_META)
                if not _UPLOAD_ID.fullmatch(upload_id) or encoded is None:
                    continue
                name = _decode_marker_key(encoded)
                if name.startswith(full_prefix):
                    yield MultipartUpload(
                        name[len(self._store._prefix) :],
                        upload_id,
                        marker.creation_time or marker.last_modified,
                    )
