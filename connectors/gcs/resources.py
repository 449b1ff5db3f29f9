"""Mapping between GCS JSON API object resources and connectors.base values (pure)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from awscrt import checksums as crt_checksums

from connectors.base import Buffer, IntegrityError, ObjectAttributes

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Uploads are bounded as a whole: a minute plus the time to send at 1 MiB/s.
UPLOAD_FLOOR_S = 60.0
UPLOAD_MIN_RATE = 1024 * 1024

# Resource fields of ObjectAttributes: (attribute, JSON API field, the form gcloud-aio-storage
# turns into the JSON field; it lower-cases camelCase names it is given).
ATTRIBUTE_FIELDS = (
    ("content_type", "contentType", "Content-Type"),
    ("cache_control", "cacheControl", "Cache-Control"),
    ("content_encoding", "contentEncoding", "Content-Encoding"),
    ("content_disposition", "contentDisposition", "Content-Disposition"),
)


def crc32c_b64(data: Buffer) -> str:
    return base64.b64encode(crt_checksums.crc32c(data).to_bytes(4, "big")).decode()


def timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def attributes(resource: Mapping[str, Any]) -> ObjectAttributes:
    metadata = resource.get("metadata") or {}
    return ObjectAttributes(
        content_type=resource.get("contentType"),
        cache_control=resource.get("cacheControl"),
        content_encoding=resource.get("contentEncoding"),
        content_disposition=resource.get("contentDisposition"),
        user_metadata={str(k): v for k, v in metadata.items() if isinstance(v, str)},
    )


def resource_fields(attributes: ObjectAttributes) -> dict[str, Any]:
    """The object resource fields (JSON API names) that carry ``attributes``."""
    fields: dict[str, Any] = {"contentType": attributes.content_type or DEFAULT_CONTENT_TYPE}
    for attribute, field, _ in ATTRIBUTE_FIELDS[1:]:
        value = getattr(attributes, attribute)
        if value is not None:
            fields[field] = value
    if attributes.user_metadata:
        fields["metadata"] = dict(attributes.user_metadata)
    return fields


def library_fields(attributes: ObjectAttributes) -> dict[str, Any]:
    """The same fields in the spelling gcloud-aio-storage turns into the JSON API's."""
    fields: dict[str, Any] = {}
    for attribute, _, spelling in ATTRIBUTE_FIELDS:
        value = getattr(attributes, attribute)
        if value is not None:
            fields[spelling] = value
    # Custom metadata keys pass through the library untouched.
    fields["metadata"] = dict(attributes.user_metadata)
    return fields


def attributes_json(attributes: ObjectAttributes) -> dict[str, Any]:
    return {
        "content_type": attributes.content_type,
        "cache_control": attributes.cache_control,
        "content_encoding": attributes.content_encoding,
        "content_disposition": attributes.content_disposition,
        "user_metadata": dict(attributes.user_metadata),
    }


def attributes_from_json(raw: Mapping[str, Any]) -> ObjectAttributes:
    return ObjectAttributes(
        content_type=raw.get("content_type"),
        cache_control=raw.get("cache_control"),
        content_encoding=raw.get("content_encoding"),
        content_disposition=raw.get("content_disposition"),
        user_metadata=dict(raw.get("user_metadata") or {}),
    )


def upload_timeout(size: int) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=UPLOAD_FLOOR_S + size / UPLOAD_MIN_RATE, sock_connect=30)


def check_whole_read(data: bytes, hashes: str, url: str) -> None:
    """Compare a whole object read with the CRC32C in its ``X-Goog-Hash`` header."""
    for item in hashes.split(","):
        kind, _, value = item.strip().partition("=")
        if kind == "crc32c" and value:
            actual = crc32c_b64(data)
            if actual != value:
                raise IntegrityError(
                    f"read {len(data)} bytes with CRC32C {actual}; GCS holds {value}", url=url
                )
