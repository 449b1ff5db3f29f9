"""Server-side copies of an S3Store within its bucket: CopyObject up to 5 GiB, parallel
UploadPartCopy parts of a multipart upload beyond, every one pinned to the source's etag."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connectors.base import ChecksumKind, ObjectAttributes, ObjectMeta, PartToken
from connectors.s3.fields import attribute_params, attributes_of, full_object_crc32c, version_of

if TYPE_CHECKING:
    from connectors.s3.store import S3Store


class S3ServerSideCopy:
    """The server-side copies into one store."""

    def __init__(self, store: S3Store) -> None:
        self._store = store

    async def copy(
        self,
        origin: S3Store,
        source_key: str,
        dest_key: str,
        if_match: str | None,
        attributes: ObjectAttributes | None,
        create_only: bool = False,
        dest_if_match: str | None = None,
    ) -> ObjectMeta:
        """CopyObject (or UploadPartCopy) from ``source_key`` of ``origin``, a store on this
        bucket rooted at its own prefix, conditioned on the destination key as a put is."""
        source_url = origin.url_for(source_key)
        dest_url = self._store.url_for(dest_key)
        source_full = origin._full(source_key)
        dest_full = self._store._full(dest_key)
        client = await self._store._s3()
        # The HEAD gives the size (which CopyObject does not return, and which decides
        # whether CopyObject can copy at all) and checks If-Match even on servers that ignore
        # CopySourceIfMatch (moto does); the copy is then pinned to the etag seen here.
        head_params: dict[str, Any] = {"Bucket": self._store.bucket, "Key": source_full}
        if if_match is not None:
            head_params["IfMatch"] = if_match
        with self._store._errors(source_url):
            source = await client.head_object(**head_params)
        size = int(source["ContentLength"])
        if size > self._store.copy_in_parts_above:
            return await self._in_parts(
                origin, source_key, dest_key, source, attributes, create_only, dest_if_match
            )
        params: dict[str, Any] = {
            "Bucket": self._store.bucket,
            "Key": dest_full,
            "CopySource": {"Bucket": self._store.bucket, "Key": source_full},
            "CopySourceIfMatch": source["ETag"],
            **await self._store._destination_conditions(
                dest_key, create_only, dest_if_match, copy=True
            ),
        }
        if attributes is None:
            params["MetadataDirective"] = "COPY"
            kept = attributes_of(source)
        else:
            params["MetadataDirective"] = "REPLACE"
            params.update(attribute_params(attributes))
            kept = attributes
        with self._store._errors(
            dest_url, create_only=create_only, missing_key_is_mismatch=dest_if_match is not None
        ):
            response = await client.copy_object(**params)
        result = response.get("CopyObjectResult") or {}
        etag = result.get("ETag")
        return ObjectMeta(
            url=dest_url,
            key=dest_key,
            size=size,
            etag=etag,
            version=version_of(response),
            last_modified=result.get("LastModified"),
            attributes=kept,
            checksums=full_object_crc32c(result, etag),
        )

    async def _in_parts(
        self,
        origin: S3Store,
        source_key: str,
        dest_key: str,
        source: Mapping[str, Any],
        attributes: ObjectAttributes | None,
        create_only: bool,
        dest_if_match: str | None,
    ) -> ObjectMeta:
        """A server-side copy too large for CopyObject: a multipart upload whose parts are
        copied from ranges of the source (UploadPartCopy), every range pinned to its etag,
        completed under the destination's conditions."""
        size = int(source["ContentLength"])
        part_size = max(self._store.copy_part_size, -(-size // self._store.limits.max_parts))
        kept = attributes if attributes is not None else attributes_of(source)
        upload_id = await self._store.create_multipart(dest_key, attributes=kept)
        ranges = [
            (number, start, min(start + part_size, size))
            for number, start in enumerate(range(0, size, part_size), start=1)
        ]
        gate = asyncio.Semaphore(self._store.copy_part_concurrency)

        async def copy_part(number: int, start: int, end: int) -> PartToken:
            async with gate:
                return await self._part(
                    dest_key, upload_id, number, origin, source_key, start, end, str(source["ETag"])
                )

        try:
            # A failed part cancels the others: nothing keeps copying into an aborted upload.
            async with asyncio.TaskGroup() as group:
                copying = [group.create_task(copy_part(*r)) for r in ranges]
            await self._store.complete_multipart(
                dest_key,
                upload_id,
                [t.result() for t in copying],
                create_only=create_only,
                if_match=dest_if_match,
            )
        except BaseException as exc:
            await asyncio.shield(self._store.abort_multipart(dest_key, upload_id))
            first: BaseException = exc
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return await self._store.head(dest_key)

    async def _part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        origin: S3Store,
        source_key: str,
        start: int,
        end: int,
        source_etag: str,
    ) -> PartToken:
        client = await self._store._s3()
        with self._store._errors(origin.url_for(source_key)):
            response = await client.upload_part_copy(
                Bucket=self._store.bucket,
                Key=self._store._full(key),
                UploadId=upload_id,
                PartNumber=part_number,
                CopySource={"Bucket": self._store.bucket, "Key": origin._full(source_key)},
                CopySourceRange=f"bytes={start}-{end - 1}",
                CopySourceIfMatch=source_etag,
            )
        result = response.get("CopyPartResult") or {}
        crc = result.get("ChecksumCRC32C")
        return PartToken(
            part_number,
            str(result["ETag"]),
            end - start,
            {ChecksumKind.CRC32C: str(crc)} if crc else {},
        )
