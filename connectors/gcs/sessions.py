"""Ordered uploads to GCS: one resumable upload session taking the parts in order.

Each part is one chunk ``PUT`` to the session with ``Content-Range: bytes A-B/*`` (parts are
multiples of 256 KiB but the last, as GCS requires of chunks); completion is an empty ``PUT``
with ``Content-Range: bytes */SIZE`` and the whole object's CRC32C in ``X-Goog-Hash``, which
GCS checks before it creates the object. The result is an ordinary object with its MD5, not a
composite, in one request per part plus two, where composing costs a part object per part, the
composes and the deletes of the parts.

The session's upload id is a credential (whoever holds it may write the object): the upload
id this connector hands out embeds it, so it is never logged, journaled or listed; a session
left by a crash holds no object and expires on its own (a week on GCS). Preconditions go with
the session's creation, where GCS checks them when the object is created; fake-gcs-server
ignores them there, so completion also compares the key's generation first, as composes do.

fake-gcs-server gaps (so these are not relied on): it ignores ``X-Goog-Hash`` (the engine
compares the CRC32C GCS reports after completion and removes a replica that differs), appends
a chunk sent twice instead of placing it at its offset, finalises a session on a status query
(``Content-Range: bytes */*``) and does not cancel a session on ``DELETE`` (it answers 499 as
GCS does). Hence a session is never resumed after a crash: the copy starts again.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import (
    Buffer,
    ChecksumKind,
    IntegrityError,
    InvalidArgument,
    ObjectAttributes,
    ObjectMeta,
    PartToken,
    TransientError,
)
from connectors.gcs.multipart import GCSMultipart
from connectors.gcs.resources import resource_fields, upload_timeout
from connectors.gcs.transport import _HTTPError, write_preconditions
from connectors.payload import BufferPayload

SESSION_PREFIX = "session:"
# The chunk granularity of resumable uploads: every chunk but the last is a multiple of it.
CHUNK_MULTIPLE = 256 * 1024
# A chunk the session took; a status GCS answers while the upload is not finalised.
_INCOMPLETE = 308
# GCS's answer to a cancelled session.
_CANCELLED = 499


def is_session(upload_id: str) -> bool:
    return upload_id.startswith(SESSION_PREFIX)


class GCSSessions(GCSMultipart):
    """``create_ordered_upload`` and the session side of the multipart methods."""

    async def create_ordered_upload(
        self,
        key: str,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> str:
        url = self.url_for(key)
        full = self._full(key)
        params = {
            "uploadType": "resumable",
            "name": full,
            **write_preconditions(create_only, if_match, url),
        }
        resource = {**resource_fields(attributes or ObjectAttributes()), "name": full}
        async with (
            self._errors(url, create_only=create_only, write=True),
            self._send("POST", self._upload_url, params=params, json_body=resource) as response,
        ):
            location = response.headers.get("Location", "")
        session = _session_id(location)
        if not session:
            raise TransientError("GCS gave no resumable upload session", url=url)
        content_type = urllib.parse.quote(resource["contentType"], safe="")
        return f"{SESSION_PREFIX}{content_type}:{session}"

    def _session_of(self, key: str, upload_id: str) -> tuple[dict[str, str], str]:
        """The query naming the session, and the object's content type, which every
        request of the session carries: fake-gcs-server takes it from the requests' own
        Content-Type rather than from the resource the session was created with."""
        content_type, _, session = upload_id.removeprefix(SESSION_PREFIX).partition(":")
        params = {"uploadType": "resumable", "name": self._full(key), "upload_id": session}
        return params, urllib.parse.unquote(content_type)

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
        """A session's part is the chunk at ``offset``: the parts before it must be in."""
        if not is_session(upload_id):
            return await super().put_part_at(
                key, upload_id, part_number, offset, data, checksums=checksums
            )
        url = self.url_for(key)
        if offset % CHUNK_MULTIPLE or not data:
            raise InvalidArgument(
                f"a session chunk starts at a multiple of {CHUNK_MULTIPLE} bytes and holds "
                f"some (part {part_number} at {offset}, {len(data)} bytes)",
                url=url,
            )
        end = offset + len(data) - 1
        params, content_type = self._session_of(key, upload_id)
        async with (
            self._errors(url, missing="upload", write=True),
            self._send(
                "PUT",
                self._upload_url,
                params=params,
                headers={"Content-Range": f"bytes {offset}-{end}/*"},
                data=BufferPayload(data, content_type=content_type),
                time_limit=upload_timeout(len(data)),
            ) as response,
        ):
            status, committed = response.status, response.headers.get("Range", "")
        if status != _INCOMPLETE or committed != f"bytes=0-{end}":
            raise IntegrityError(
                f"part {part_number}: the session holds {committed or 'nothing'} after bytes "
                f"{offset}-{end} (HTTP {status})",
                url=url,
            )
        return PartToken(part_number, f"{offset}-{end}", len(data))

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
        """Finalise the session: the parts given must be the chunks it took, in order.
        ``extra_metadata`` cannot be added to a session's object and is refused."""
        if not is_session(upload_id):
            return await super().complete_multipart(
                key,
                upload_id,
                parts,
                extra_metadata=extra_metadata,
                checksums=checksums,
                create_only=create_only,
                if_match=if_match,
            )
        url = self.url_for(key)
        if extra_metadata:
            raise InvalidArgument("a session's object takes no metadata at completion", url=url)
        size = _contiguous_size(parts, url)
        if create_only or if_match is not None:
            await self._check_destination(key, create_only, if_match)
        params, content_type = self._session_of(key, upload_id)
        headers = {"Content-Range": f"bytes */{size}", "Content-Type": content_type}
        crc32c = (checksums or {}).get(ChecksumKind.CRC32C)
        if crc32c is not None:
            headers["X-Goog-Hash"] = f"crc32c={crc32c}"
        async with (
            self._errors(url, missing="upload", create_only=create_only, write=True),
            self._send(
                "PUT",
                self._upload_url,
                params=params,
                headers=headers,
                data=b"",
            ) as response,
        ):
            if response.status == _INCOMPLETE:
                raise IntegrityError(
                    f"the session did not take all {size} bytes "
                    f"({response.headers.get('Range', 'none')})",
                    url=url,
                )
            resource: dict[str, Any] = await response.json(content_type=None)
        return self._meta(key, resource)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Cancel a session (GCS answers 499 when it did); an unknown one is not an error."""
        if not is_session(upload_id):
            await super().abort_multipart(key, upload_id)
            return
        url = self.url_for(key)
        params, _ = self._session_of(key, upload_id)
        async with self._errors(url, missing="absent_ok"):
            try:
                async with self._send("DELETE", self._upload_url, params=params):
                    pass
            except _HTTPError as exc:
                if exc.status != _CANCELLED:
                    raise


def _session_id(location: str) -> str:
    query = urllib.parse.urlsplit(location).query
    return urllib.parse.parse_qs(query).get("upload_id", [""])[0]


def _contiguous_size(parts: Sequence[PartToken], url: str) -> int:
    """The object's size, from parts that must follow each other from byte 0."""
    size = 0
    for number, part in enumerate(sorted(parts, key=lambda p: p.part_number), start=1):
        if part.part_number != number or part.token != f"{size}-{size + part.size - 1}":
            raise InvalidArgument(
                f"part {part.part_number} ({part.token!r}) is not the session's chunk "
                f"{number} from byte {size}",
                url=url,
            )
        size += part.size
    if not size:
        raise InvalidArgument("a session needs at least one byte", url=url)
    return size
