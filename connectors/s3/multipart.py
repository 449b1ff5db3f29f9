"""Multipart uploads of an S3Store: created with the object's attributes and a
FULL_OBJECT CRC32C, parts carrying their CRC32C, completed under the destination's
conditions, aborted, and listed to find those a crashed process left."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from connectors.base import (
    Buffer,
    ChecksumKind,
    InvalidKey,
    MultipartUpload,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    PartToken,
)
from connectors.s3.errors import error_code
from connectors.s3.fields import (
    attribute_params,
    decode_key,
    full_object_crc32c,
    request_body,
    version_of,
    write_crc32c,
)

if TYPE_CHECKING:
    from connectors.s3.store import S3Store

# Characters XML 1.0 cannot carry even as character references.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class S3Multipart:
    """The multipart uploads of one store."""

    def __init__(self, store: S3Store) -> None:
        self._store = store

    async def create(self, key: str, *, attributes: ObjectAttributes | None = None) -> str:
        url = self._store.url_for(key)
        full = self._store._full(key)
        bad = _XML_ILLEGAL.search(full)
        if bad:
            raise InvalidKey(
                f"S3 multipart uploads need keys XML 1.0 can carry (S3 echoes the key in XML "
                f"responses); this key holds U+{ord(bad.group()):04X}",
                url=url,
            )
        client = await self._store._s3()
        with self._store._errors(url):
            response = await client.create_multipart_upload(
                Bucket=self._store.bucket,
                Key=full,
                ChecksumAlgorithm="CRC32C",
                # The object's own CRC32C, combined by S3 from the parts', rather than a
                # checksum of the part checksums: comparable with the source's, and the
                # evidence that stands for the fingerprint S3 metadata cannot hold.
                ChecksumType="FULL_OBJECT",
                **attribute_params(attributes or ObjectAttributes()),
            )
        return str(response["UploadId"])

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        url = self._store.url_for(key)
        full = self._store._full(key)
        self._store.check_part(key, part_number, len(data))
        client = await self._store._s3()
        checksum = write_crc32c(data, checksums)
        with self._store._errors(url):
            response = await client.upload_part(
                Bucket=self._store.bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=part_number,
                Body=request_body(data),
                ChecksumAlgorithm="CRC32C",
                ChecksumCRC32C=checksum,
            )
        stored = response.get("ChecksumCRC32C") or checksum
        return PartToken(
            part_number, str(response["ETag"]), len(data), {ChecksumKind.CRC32C: str(stored)}
        )

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
        if extra_metadata:
            raise NotSupported(
                "S3 fixes user metadata when a multipart upload is created",
                url=self._store.url_for(key),
            )
        url = self._store.url_for(key)
        full = self._store._full(key)
        ordered = sorted(parts, key=lambda p: p.part_number)
        completed = []
        for part in ordered:
            entry = {"PartNumber": part.part_number, "ETag": part.token}
            crc = part.checksums.get(ChecksumKind.CRC32C)
            if crc is not None:
                entry["ChecksumCRC32C"] = crc
            completed.append(entry)
        client = await self._store._s3()
        whole: dict[str, str] = {}
        crc = (checksums or {}).get(ChecksumKind.CRC32C)
        if crc is not None:
            # S3 refuses to complete when the parts do not add up to this CRC32C.
            whole = {"ChecksumCRC32C": crc, "ChecksumType": "FULL_OBJECT"}
        conditions = await self._store._destination_conditions(
            key, create_only, if_match, copy=False
        )
        with self._store._errors(
            url, create_only=create_only, missing_key_is_mismatch=if_match is not None
        ):
            response = await client.complete_multipart_upload(
                Bucket=self._store.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": completed},
                **whole,
                **conditions,
            )
        etag = response.get("ETag")
        return ObjectMeta(
            url=url,
            key=key,
            size=sum(p.size for p in ordered),
            etag=etag,
            version=version_of(response),
            last_modified=None,
            checksums=full_object_crc32c(response, etag),
        )

    async def abort(self, key: str, upload_id: str) -> None:
        url = self._store.url_for(key)
        full = self._store._full(key)
        client = await self._store._s3()
        with self._store._errors(url):
            try:
                await client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=full, UploadId=upload_id
                )
            except ClientError as exc:
                if error_code(exc) != "NoSuchUpload":
                    raise

    async def list_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        client = await self._store._s3()
        params: dict[str, Any] = {
            "Bucket": self._store.bucket,
            "Prefix": self._store.prefix + prefix,
            "EncodingType": "url",
        }
        cut = len(self._store.prefix)
        while True:
            with self._store._errors(self._store.url_for(prefix)):
                page = await client.list_multipart_uploads(**params)
            for upload in page.get("Uploads") or ():
                yield MultipartUpload(
                    key=decode_key(upload["Key"])[cut:],
                    upload_id=str(upload["UploadId"]),
                    initiated=upload.get("Initiated"),
                )
            next_key = page.get("NextKeyMarker")
            if not page.get("IsTruncated") or not next_key:
                return
            params["KeyMarker"] = decode_key(next_key)
            params["UploadIdMarker"] = page.get("NextUploadIdMarker") or ""
