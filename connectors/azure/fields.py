"""What Azure requests carry and answers hold: CRC64 and MD5 in wire form, content
settings from attributes and attributes from blob properties."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

from awscrt import checksums as crt_checksums
from azure.storage.blob import BlobProperties, ContentSettings

from connectors.base import Buffer, ChecksumKind, IntegrityError, MiB, ObjectAttributes

_THREAD_HASH_BYTES = 8 * MiB


def crc64_b64(data: Buffer) -> str:
    """Azure's CRC64 of ``data`` in wire form: CRC-64/NVME, 8 bytes little-endian, base64."""
    value = crt_checksums.crc64nvme(data)
    return base64.b64encode(value.to_bytes(8, "little")).decode()


async def write_crc64(data: Buffer, checksums: Mapping[ChecksumKind, str] | None) -> str:
    """The CRC64 to send with a write: the caller's, else computed (large buffers off the
    event loop; awscrt releases the GIL)."""
    given = (checksums or {}).get(ChecksumKind.CRC64)
    if given is not None:
        return given
    if len(data) > _THREAD_HASH_BYTES:
        return await asyncio.to_thread(crc64_b64, data)
    return crc64_b64(data)


def md5_reported(digest: bytes | bytearray | None) -> dict[ChecksumKind, str]:
    return {ChecksumKind.MD5: base64.b64encode(bytes(digest)).decode()} if digest else {}


def content_settings(attributes: ObjectAttributes) -> ContentSettings:
    return ContentSettings(
        content_type=attributes.content_type,
        content_encoding=attributes.content_encoding,
        cache_control=attributes.cache_control,
        content_disposition=attributes.content_disposition,
    )


def attributes_of(props: BlobProperties) -> ObjectAttributes:
    settings = props.content_settings
    return ObjectAttributes(
        content_type=settings.content_type,
        cache_control=settings.cache_control,
        content_encoding=settings.content_encoding,
        content_disposition=settings.content_disposition,
        user_metadata=dict(props.metadata or {}),
    )


def check_echoed_crc64(response: Mapping[str, Any], crc64: str, url: str) -> None:
    echoed = response.get("content_crc64")
    if echoed and base64.b64encode(bytes(echoed)).decode() != crc64:
        raise IntegrityError(
            "the service reports a CRC64 other than the one of the bytes sent", url=url
        )
