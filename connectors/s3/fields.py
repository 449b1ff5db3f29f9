"""What S3 requests carry and answers hold: CRC32C checksums, bodies handed to botocore
without copying, object attributes as request parameters and from answers, versions and
URL-encoded keys."""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from awscrt import checksums as crt_checksums

from connectors.base import Buffer, ChecksumKind, ObjectAttributes
from connectors.payload import BufferReader

# A multipart object's ETag: the MD5 of the part MD5s followed by "-<part count>".
_MULTIPART_ETAG = re.compile(r'-\d+"?$')


def crc32c_b64(data: Buffer) -> str:
    return base64.b64encode(crt_checksums.crc32c(data).to_bytes(4, "big")).decode()


def write_crc32c(data: Buffer, checksums: Mapping[ChecksumKind, str] | None) -> str:
    """The CRC32C to send with a write: the caller's, else computed from the bytes."""
    given = (checksums or {}).get(ChecksumKind.CRC32C)
    return given if given is not None else crc32c_b64(data)


def request_body(data: Buffer) -> bytes | BufferReader:
    """A body botocore takes without copying it: bytes as they are (botocore wraps them in a
    BytesIO that shares them), any other buffer as a file over its memory."""
    return data if isinstance(data, bytes) else BufferReader(data)


def version_of(response: Mapping[str, Any]) -> str | None:
    version = response.get("VersionId")
    return None if version in (None, "", "null") else str(version)


def full_object_crc32c(response: Mapping[str, Any], etag: str | None) -> dict[ChecksumKind, str]:
    """The CRC32C of the object's bytes when the response carries one, else nothing.

    A COMPOSITE multipart checksum is a checksum of part checksums: S3 marks it with a
    ``-N`` suffix and ``ChecksumType: COMPOSITE``; emulators that send neither are caught by
    the multipart shape of the ETag.
    """
    value = response.get("ChecksumCRC32C")
    if not value or "-" in value:
        return {}
    kind = response.get("ChecksumType")
    if kind == "COMPOSITE" or (kind is None and etag and _MULTIPART_ETAG.search(etag)):
        return {}
    return {ChecksumKind.CRC32C: str(value)}


def attributes_of(response: Mapping[str, Any]) -> ObjectAttributes:
    return ObjectAttributes(
        content_type=response.get("ContentType"),
        cache_control=response.get("CacheControl"),
        content_encoding=response.get("ContentEncoding"),
        content_disposition=response.get("ContentDisposition"),
        user_metadata=dict(response.get("Metadata") or {}),
    )


def attribute_params(attributes: ObjectAttributes) -> dict[str, Any]:
    params: dict[str, Any] = {"Metadata": dict(attributes.user_metadata)}
    for name, value in (
        ("ContentType", attributes.content_type),
        ("CacheControl", attributes.cache_control),
        ("ContentEncoding", attributes.content_encoding),
        ("ContentDisposition", attributes.content_disposition),
    ):
        if value is not None:
            params[name] = value
    return params


def decode_key(encoded: str) -> str:
    # With EncodingType=url S3 form-encodes keys (a space may come back as '+', a '+' as %2B).
    return urllib.parse.unquote_plus(encoded, errors="strict")
