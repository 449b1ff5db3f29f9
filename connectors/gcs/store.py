"""Google Cloud Storage, through gcloud-aio-storage and the GCS JSON API.

Endpoint and credentials: gcloud-aio-storage resolves the API root, honouring
``STORAGE_EMULATOR_HOST`` (then no credentials are sent at all); otherwise requests carry a
token from gcloud-aio-auth's default credentials (``GOOGLE_APPLICATION_CREDENTIALS``, the
gcloud application-default file, or the GCE metadata server). One aiohttp session with a pool
of 64 connections serves every request of a store, so parallel parts and ranged reads do not
queue behind each other.

The library serves listings, deletes and rewrites. Uploads, reads, metadata reads and
composes go to the JSON API directly through the same session and API root, because the
library cannot do them right: it lower-cases camelCase resource fields (``cacheControl``
would be lost, ``md5Hash`` dropped), guesses a content type from the object name, copies
the body twice to build a multipart request, cannot name a generation in downloads and
metadata reads, composes with no destination metadata or source preconditions, and its
downloads let aiohttp decode ``Content-Encoding: gzip`` objects, which would hand back bytes
the object does not hold. Reads here ask for ``Accept-Encoding: gzip`` and decode nothing,
so the stored bytes come back; a whole-object read is checked against the CRC32C GCS sends
in ``X-Goog-Hash``.

Versions and etags: ``ObjectMeta.version`` and ``ObjectMeta.etag`` are both the object's
generation. GCS preconditions are generation-based (``ifGenerationMatch``), and the JSON API's
own etag also changes on metadata-only updates, so it would fail a pinned read of unchanged
bytes. Checksums are the object's CRC32C and, where GCS has one (not for composed objects),
its MD5; both cover the whole object.

Writes are multipart uploads (resource and media in one request) carrying the CRC32C of the
bytes, so GCS rejects damaged bytes (400, surfaced as IntegrityError). Create-only is
``ifGenerationMatch=0`` and ``if_match`` is ``ifGenerationMatch=<generation>``; both are
checked by fake-gcs-server too, which honours preconditions on multipart uploads only. A
conditional delete also sends ``ifGenerationMatch`` but compares the generation first, since
the emulator ignores it there; a conditional server-side copy rewrites the pinned
``sourceGeneration`` for the same reason.

Pinned reads name the generation itself (``generation=G``) as well as ``ifGenerationMatch``:
fake-gcs-server ignores preconditions on downloads, and a generation read can never return
other bytes. A generation that is gone is PreconditionFailed for ``if_match`` and NotFound
for ``version``. On a versioned bucket an ``if_match`` read may still return the pinned
(noncurrent) bytes, which is consistent, never a mix of versions.

Multipart uploads are parallel temporary objects composed at the end. Everything lives under
the reserved prefix ``.replicator-uploads/`` at the bucket root, which ``list()`` hides and
keys may not use: the manifest ``.replicator-uploads/<id>`` (the destination key and
attributes, written by ``create_multipart``; ``list_multipart_uploads`` lists these) and the
parts and intermediate composites under ``.replicator-uploads/<id>/``. A part token is the
part object's name and generation. ``complete_multipart`` checks every token against the
staged objects, then composes in part-number order through a tree of 32-source composes
(GCS's limit per request) and writes the destination with its attributes. Afterwards it
deletes the staged objects, the manifest last, so leftovers of an interrupted clean-up stay
listed for the orphan cleaner. When completion fails for good it clears the staging the same
way; when it fails transiently it keeps the parts and the manifest so the engine's retry of
``complete_multipart`` can succeed (abort removes them otherwise). A bucket lifecycle rule
deleting old objects under ``.replicator-uploads/`` is a good idea on real GCS: a part
uploaded after its upload was aborted has no manifest to be found by.

Limits: compose has no minimum source size, so parts may be as small as one byte (the engine
chooses bigger ones). 10,000 parts need three compose levels (32 x 32 x 10 = 10,240
sources), which bounds the work of ``complete``. A single put is one request with the bytes
in memory, so it is held to 5 GiB though GCS takes objects of up to 5 TiB.

Keys follow the GCS object naming rules: 1-1024 bytes of UTF-8, no carriage return or line
feed, not ``.`` or ``..``, not under ``.well-known/acme-challenge/``; plus this connector's
reserved staging prefix. Names are percent-encoded whole (``/`` included) in request paths, so
every other key, however hostile, is stored byte-exact.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import json
import os
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar, Literal, Self, cast

import aiohttp
import google_crc32c
import yarl
from gcloud.aio.auth import Token
from gcloud.aio.storage import SCOPES, Storage
from gcloud.aio.storage.storage import init_api_root
from tenacity import stop_after_attempt

from connectors.base import (
    AlreadyExists,
    ChecksumKind,
    GiB,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    Limits,
    MultipartUpload,
    NotFound,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PartToken,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    StoreURL,
    Throttled,
    TiB,
    TransientError,
    check_key,
    parse_retry_after,
)

KEY_RULE = " (GCS object name rule: 1-1024 bytes of UTF-8)"
STAGING_PREFIX = ".replicator-uploads/"
# The first name after every name under the staging prefix ('0' follows '/').
_STAGING_END = STAGING_PREFIX[:-1] + chr(ord("/") + 1)
_ACME_PREFIX = ".well-known/acme-challenge/"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_GENERATION = re.compile(r"[0-9]+")
COMPOSE_MAX_SOURCES = 32
DEFAULT_CONTENT_TYPE = "application/octet-stream"
POOL_CONNECTIONS = 64
# Composes and deletes of one upload in flight at once: enough to keep the pool busy while
# leaving room for other transfers.
_FANOUT = 32
_JSON_TIMEOUT_S = 60
_REWRITE_TIMEOUT_S = 120
_JSON_TIMEOUT = aiohttp.ClientTimeout(total=_JSON_TIMEOUT_S, sock_connect=30)
# A download may be large: bound the silences, not the whole transfer.
_READ_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
# Uploads are bounded as a whole: a minute plus the time to send at 1 MiB/s.
_UPLOAD_FLOOR_S = 60.0
_UPLOAD_MIN_RATE = 1024 * 1024

# Resource fields of ObjectAttributes: (attribute, JSON API field, the form gcloud-aio-storage
# turns into the JSON field; it lower-cases camelCase names it is given).
_ATTRIBUTE_FIELDS = (
    ("content_type", "contentType", "Content-Type"),
    ("cache_control", "cacheControl", "Cache-Control"),
    ("content_encoding", "contentEncoding", "Content-Encoding"),
    ("content_disposition", "contentDisposition", "Content-Disposition"),
)

_Missing = Literal["object", "changed", "upload", "absent_ok"]


def _crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _quote(name: str) -> str:
    # Every character but unreserved ones is encoded, '/' included: a name is one path segment.
    return urllib.parse.quote(name, safe="")


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _attributes(resource: Mapping[str, Any]) -> ObjectAttributes:
    metadata = resource.get("metadata") or {}
    return ObjectAttributes(
        content_type=resource.get("contentType"),
        cache_control=resource.get("cacheControl"),
        content_encoding=resource.get("contentEncoding"),
        content_disposition=resource.get("contentDisposition"),
        user_metadata={str(k): v for k, v in metadata.items() if isinstance(v, str)},
    )


def _resource_fields(attributes: ObjectAttributes) -> dict[str, Any]:
    """The object resource fields (JSON API names) that carry ``attributes``."""
    fields: dict[str, Any] = {"contentType": attributes.content_type or DEFAULT_CONTENT_TYPE}
    for attribute, field, _ in _ATTRIBUTE_FIELDS[1:]:
        value = getattr(attributes, attribute)
        if value is not None:
            fields[field] = value
    if attributes.user_metadata:
        fields["metadata"] = dict(attributes.user_metadata)
    return fields


def _library_fields(attributes: ObjectAttributes) -> dict[str, Any]:
    """The same fields in the spelling gcloud-aio-storage turns into the JSON API's."""
    fields: dict[str, Any] = {}
    for attribute, _, spelling in _ATTRIBUTE_FIELDS:
        value = getattr(attributes, attribute)
        if value is not None:
            fields[spelling] = value
    # Custom metadata keys pass through the library untouched.
    fields["metadata"] = dict(attributes.user_metadata)
    return fields


def _attributes_json(attributes: ObjectAttributes) -> dict[str, Any]:
    return {
        "content_type": attributes.content_type,
        "cache_control": attributes.cache_control,
        "content_encoding": attributes.content_encoding,
        "content_disposition": attributes.content_disposition,
        "user_metadata": dict(attributes.user_metadata),
    }


def _attributes_from_json(raw: Mapping[str, Any]) -> ObjectAttributes:
    return ObjectAttributes(
        content_type=raw.get("content_type"),
        cache_control=raw.get("cache_control"),
        content_encoding=raw.get("content_encoding"),
        content_disposition=raw.get("content_disposition"),
        user_metadata=dict(raw.get("user_metadata") or {}),
    )


def _upload_timeout(size: int) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=_UPLOAD_FLOOR_S + size / _UPLOAD_MIN_RATE, sock_connect=30)


def _check_whole_read(data: bytes, hashes: str, url: str) -> None:
    """Compare a whole object read with the CRC32C in its ``X-Goog-Hash`` header."""
    for item in hashes.split(","):
        kind, _, value = item.strip().partition("=")
        if kind == "crc32c" and value:
            actual = _crc32c_b64(data)
            if actual != value:
                raise IntegrityError(
                    f"read {len(data)} bytes with CRC32C {actual}; GCS holds {value}", url=url
                )


def _part_name(upload_id: str, part_number: int) -> str:
    return f"{STAGING_PREFIX}{upload_id}/part-{part_number:05d}"


def _is_staged(name: str) -> bool:
    return name.startswith(STAGING_PREFIX)


class _HTTPError(Exception):
    """A JSON API error answer, as this module's direct requests see it."""

    def __init__(self, status: int, headers: Mapping[str, str] | None, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.headers = headers or {}
        self.body = body


class _UnsatisfiableRange(InvalidArgument):
    """GCS's 416: the range starts at or past the end of the object."""


def _detail(status: int, body: str) -> str:
    """GCS's own words for a failure: ``error.message`` of a JSON error, else the text."""
    message = body.strip()
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        parsed = json.loads(body)
        message = str(parsed["error"]["message"])
    return f"HTTP {status}: {message[:300] or 'no message'}"


def map_status(
    status: int,
    headers: Mapping[str, str],
    body: str,
    *,
    url: str,
    endpoint: str,
    create_only: bool = False,
    write: bool = False,
) -> StoreError:
    """The connectors.base error for a JSON API error answer other than 404.

    ``create_only``: a failed precondition means the object exists (``ifGenerationMatch=0``).
    ``write``: the request carried a checksum of its bytes.
    """
    detail = _detail(status, body)
    if status == 412:
        if create_only:
            return AlreadyExists(f"object already exists ({detail})", url=url)
        return PreconditionFailed(f"generation precondition failed ({detail})", url=url)
    if status == 416:
        return _UnsatisfiableRange(f"range not satisfiable ({detail})", url=url)
    if status in (429, 503):
        return Throttled(
            f"GCS is throttling requests ({detail})",
            url=url,
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )
    if status in (401, 403):
        return PermissionDenied(f"GCS refused the credentials or access ({detail})", url=url)
    if status == 400 and write and "crc32c" in detail.lower():
        # GCS answers a checksum mismatch with a generic 400 "invalid"; its message, which
        # names the CRC32C, is the only thing that tells it from other malformed requests.
        return IntegrityError(f"GCS rejected the bytes as damaged ({detail})", url=url)
    if status == 408 or status >= 500:
        return TransientError(f"GCS endpoint {endpoint} failed ({detail})", url=url)
    if status == 409:
        return AlreadyExists(f"conflict ({detail})", url=url)
    if 400 <= status < 500:
        return InvalidArgument(f"GCS refused the request ({detail})", url=url)
    return StoreError(f"GCS error ({detail})", url=url)


class _Token(Token):
    # gcloud-aio-auth retries a token refresh five times with backoff of up to a minute. The
    # engine owns the one retry policy, so the SDK keeps one extra attempt (which absorbs a
    # dropped connection) and no more, and retries do not multiply.
    acquire_access_token = Token.acquire_access_token.retry_with(stop=stop_after_attempt(2))


class GCSStore(ObjectStore):
    scheme: ClassVar[str] = "gs"
    limits = Limits(
        min_part_size=1,
        max_part_size=5 * TiB,
        max_parts=10_000,
        max_object_size=5 * TiB,
        max_single_put=5 * GiB,
        max_key_bytes=1024,
        native_checksums=frozenset({ChecksumKind.CRC32C, ChecksumKind.MD5}),
        multipart=True,
        server_side_copy=True,
        versioned_reads=True,
        metadata_at_complete=True,
    )

    def __init__(self, bucket: str, prefix: str = "") -> None:
        super().__init__(f"gs://{bucket}/{prefix}")
        self.bucket = bucket
        self.prefix = prefix
        self._emulated, self._api_root = init_api_root(None)
        self._bucket_path = f"{self._api_root}/storage/v1/b/{_quote(bucket)}"
        self._upload_url = yarl.URL(
            f"{self._api_root}/upload/storage/v1/b/{_quote(bucket)}/o", encoded=True
        )
        self._session: aiohttp.ClientSession | None = None
        self._storage: Storage | None = None
        self._client_lock = asyncio.Lock()
        self._bucket_seen = False

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        return cls(url.container, url.path)

    # -- client ---------------------------------------------------------------------------

    async def _client(self) -> tuple[aiohttp.ClientSession, Storage]:
        if self._session is None or self._storage is None:
            async with self._client_lock:
                if self._session is None or self._storage is None:
                    session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=POOL_CONNECTIONS)
                    )
                    # The library's annotations name requests' Session, serving both its
                    # aiohttp and its requests builds; this build runs on aiohttp.
                    shared = cast(Any, session)
                    try:
                        token = _Token(session=shared, scopes=SCOPES)
                    except (OSError, KeyError, ValueError) as exc:
                        # GOOGLE_APPLICATION_CREDENTIALS names a file that is missing or
                        # is not a credentials file.
                        await session.close()
                        raise PermissionDenied(
                            f"cannot read the Google credentials file: {exc!r}",
                            url=self.root_url,
                        ) from exc
                    # Neither gcloud-aio-storage nor its session retries list, delete or
                    # rewrite requests; token refreshes are capped by _Token.
                    self._storage = Storage(
                        token=token,
                        session=shared,
                        api_root=self._api_root,
                        api_is_dev=self._emulated,
                    )
                    self._session = session
        return self._session, self._storage

    async def close(self) -> None:
        async with self._client_lock:
            session, self._session, self._storage = self._session, None, None
            if session is not None:
                await session.close()

    async def _auth_headers(self) -> dict[str, str]:
        if self._emulated:
            return {}
        _, storage = await self._client()
        try:
            token = await storage.token.get()
        except Exception as exc:
            # Whatever fails while finding credentials (no key file, no metadata server, a
            # refused key) leaves the store without usable credentials.
            raise PermissionDenied(
                f"no usable Google credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud "
                f"application-default login or the GCE metadata server): {exc!r}",
                url=self.root_url,
            ) from exc
        return {"Authorization": f"Bearer {token}"}

    def _object_url(self, name: str, suffix: str = "") -> yarl.URL:
        return yarl.URL(f"{self._bucket_path}/o/{_quote(name)}{suffix}", encoded=True)

    @contextlib.asynccontextmanager
    async def _send(
        self,
        method: str,
        url: yarl.URL,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        json_body: Any = None,
        time_limit: aiohttp.ClientTimeout = _JSON_TIMEOUT,
        auto_decompress: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        session, _ = await self._client()
        all_headers = {**(await self._auth_headers()), **(headers or {})}
        async with session.request(
            method,
            url,
            params=params,
            headers=all_headers,
            data=data,
            json=json_body,
            timeout=time_limit,
            auto_decompress=auto_decompress,
        ) as response:
            if response.status >= 400:
                body = await response.text(errors="replace")
                if response.status == 416:
                    # fake-gcs-server hangs up after a 416 without saying so; a pooled
                    # connection would fail the next request written to it.
                    response.close()
                raise _HTTPError(response.status, response.headers, body)
            yield response

    async def _json(
        self,
        method: str,
        url: yarl.URL,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> dict[str, Any]:
        async with self._send(method, url, params=params, json_body=json_body) as response:
            result: dict[str, Any] = await response.json(content_type=None)
        return result

    # -- errors ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _errors(
        self,
        url: str,
        *,
        missing: _Missing = "object",
        create_only: bool = False,
        write: bool = False,
    ) -> AsyncIterator[None]:
        """Map failures inside the block to connectors.base errors.

        ``missing`` says what a 404 means once the bucket is known to exist: ``object``
        NotFound, ``changed`` (a pinned generation is gone) PreconditionFailed, ``upload``
        NotFound naming the multipart upload, ``absent_ok`` nothing at all.
        """
        try:
            yield
        except StoreError:
            raise
        except (_HTTPError, aiohttp.ClientResponseError) as exc:
            if isinstance(exc, _HTTPError):
                status, headers, body = exc.status, exc.headers, exc.body
            else:
                status, headers, body = exc.status, exc.headers or {}, exc.message
            if status != 404:
                raise map_status(
                    status,
                    headers,
                    body,
                    url=url,
                    endpoint=self._api_root,
                    create_only=create_only,
                    write=write,
                ) from exc
            if await self._bucket_missing():
                raise NotFound(
                    f"GCS bucket {self.bucket!r} does not exist", url=self.root_url
                ) from exc
            detail = _detail(status, body)
            if missing == "changed":
                raise PreconditionFailed(
                    f"the pinned generation is gone: the object changed ({detail})", url=url
                ) from exc
            if missing == "upload":
                raise NotFound(f"no such multipart upload ({detail})", url=url) from exc
            if missing == "object":
                raise NotFound(f"object not found ({detail})", url=url) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransientError(
                f"GCS endpoint {self._api_root} is unreachable: {exc}", url=url
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransientError(f"GCS endpoint {self._api_root} failed: {exc!r}", url=url) from exc

    async def _bucket_missing(self) -> bool:
        """Whether the bucket is missing: GCS answers 404 alike for a missing object and a
        missing bucket, so a 404 is followed by one look at the bucket (once it was seen,
        no more)."""
        if self._bucket_seen:
            return False
        try:
            await self._json("GET", yarl.URL(self._bucket_path, encoded=True))
        except _HTTPError as exc:
            # 403: credentials that may read objects but not bucket metadata; assume it exists.
            return exc.status == 404
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        self._bucket_seen = True
        return False

    # -- keys and values ------------------------------------------------------------------

    def _full(self, key: str) -> str:
        full = self.prefix + key
        url = self.url_for(key)
        check_key(full, self.limits, url, rule=KEY_RULE)
        if "\r" in full or "\n" in full:
            raise InvalidKey(
                "key contains a carriage return or line feed, which GCS object names "
                "cannot hold (GCS object name rule)",
                url=url,
            )
        if full in (".", ".."):
            raise InvalidKey(
                f"key {full!r} is not allowed: GCS object names cannot be '.' or '..'", url=url
            )
        if full.startswith(_ACME_PREFIX):
            raise InvalidKey(
                f"key starts with {_ACME_PREFIX!r}, which GCS object names may not", url=url
            )
        if _is_staged(full):
            raise InvalidKey(
                f"key starts with {STAGING_PREFIX!r}, the name prefix this connector "
                "reserves for multipart staging",
                url=url,
            )
        return full

    def _meta(self, key: str, resource: Mapping[str, Any]) -> ObjectMeta:
        generation = str(resource["generation"])
        checksums: dict[ChecksumKind, str] = {}
        if resource.get("crc32c"):
            checksums[ChecksumKind.CRC32C] = str(resource["crc32c"])
        if resource.get("md5Hash"):
            checksums[ChecksumKind.MD5] = str(resource["md5Hash"])
        return ObjectMeta(
            url=self.url_for(key),
            key=key,
            size=int(resource.get("size") or 0),
            etag=generation,
            version=generation,
            # The creation time of this generation: when these bytes were written.
            last_modified=_timestamp(resource.get("timeCreated") or resource.get("updated")),
            attributes=_attributes(resource),
            checksums=checksums,
        )

    # -- objects --------------------------------------------------------------------------

    async def create_container(self) -> None:
        """Create the bucket if missing, in ``GOOGLE_CLOUD_PROJECT`` (or the credentials'
        project)."""
        _, storage = await self._client()
        async with self._errors(self.root_url):
            project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
            if not project and not self._emulated:
                project = await storage.token.get_project()
            if not project and not self._emulated:
                raise InvalidArgument(
                    "creating a GCS bucket needs a project: set GOOGLE_CLOUD_PROJECT",
                    url=self.root_url,
                )
            try:
                await self._json(
                    "POST",
                    yarl.URL(f"{self._api_root}/storage/v1/b", encoded=True),
                    params={"project": project or "replicator"},
                    json_body={"name": self.bucket},
                )
            except _HTTPError as exc:
                if exc.status != 409:  # it exists already
                    raise
        self._bucket_seen = True

    async def _resource(
        self, name: str, url: str, *, generation: str | None = None
    ) -> dict[str, Any]:
        params = {"generation": generation} if generation is not None else None
        async with self._errors(url):
            return await self._json("GET", self._object_url(name), params=params)

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        full = self._full(key)
        url = self.url_for(key)
        if version is not None and not _GENERATION.fullmatch(version):
            raise NotFound(f"no generation {version!r}: GCS generations are numbers", url=url)
        return self._meta(key, await self._resource(full, url, generation=version))

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> bytes:
        url = self.url_for(key)
        full = self._full(key)
        if start < 0 or (end is not None and end < start):
            raise InvalidArgument(f"invalid byte range [{start}, {end})", url=url)
        params = {"alt": "media"}
        if if_match is not None:
            if not _GENERATION.fullmatch(if_match):
                raise PreconditionFailed(f"{if_match!r} is not a GCS generation", url=url)
            params.update(generation=if_match, ifGenerationMatch=if_match)
        elif version is not None:
            if not _GENERATION.fullmatch(version):
                raise NotFound(f"no generation {version!r}: GCS generations are numbers", url=url)
            params["generation"] = version
        # The stored bytes, even of a gzip-encoded object (never decoded in transit).
        headers = {"Accept-Encoding": "gzip"}
        if end == start:
            # No HTTP range names zero bytes: one byte checks the object and the start.
            headers["Range"] = f"bytes={start}-{start}"
        elif end is not None:
            headers["Range"] = f"bytes={start}-{end - 1}"
        elif start > 0:
            headers["Range"] = f"bytes={start}-"
        try:
            async with (
                self._errors(url, missing="changed" if if_match is not None else "object"),
                self._send(
                    "GET",
                    self._object_url(full),
                    params=params,
                    headers=headers,
                    time_limit=_READ_TIMEOUT,
                    auto_decompress=False,
                ) as response,
            ):
                data = await response.read()
                partial = response.status == 206
                hashes = response.headers.get("X-Goog-Hash", "")
        except _UnsatisfiableRange:
            # Every range starting at 0 fits a non-empty object: the object is empty, which
            # the read contract answers with no bytes.
            if start == 0:
                return b""
            raise
        if "Range" in headers and not partial:
            # A server that ignores Range sends the whole object: cut the range from it.
            if start > 0 and start >= len(data):
                raise InvalidArgument(
                    f"range start {start} is past the end ({len(data)} bytes)", url=url
                )
            return data[start:end]
        if "Range" not in headers:
            # A whole object can be checked against the CRC32C GCS holds for it, for free.
            _check_whole_read(data, hashes, url)
        return b"" if end == start else data

    async def _upload(
        self,
        name: str,
        data: bytes,
        url: str,
        *,
        fields: Mapping[str, Any],
        params: Mapping[str, str] | None = None,
        create_only: bool = False,
    ) -> dict[str, Any]:
        """One multipart upload (resource and media in one request) carrying the CRC32C."""
        checksum = _crc32c_b64(data)
        resource = {**fields, "name": name, "crc32c": checksum}
        writer = aiohttp.MultipartWriter("related")
        writer.append_json(resource)
        # fake-gcs-server takes the content type from the media part, GCS from the resource.
        # A BytesIO shares the bytes rather than copying them, and aiohttp streams it in
        # chunks instead of blocking the loop on one large write.
        writer.append(io.BytesIO(data), {"Content-Type": str(resource["contentType"])})
        async with (
            self._errors(url, create_only=create_only, write=True),
            self._send(
                "POST",
                self._upload_url,
                params={"uploadType": "multipart", **(params or {})},
                data=writer,
                time_limit=_upload_timeout(len(data)),
            ) as response,
        ):
            result: dict[str, Any] = await response.json(content_type=None)
        stored = result.get("crc32c")
        if stored is not None and stored != checksum:
            # GCS refuses such bytes itself; emulators that store them report what they got.
            raise IntegrityError(
                f"GCS stored bytes with CRC32C {stored}, not the {checksum} sent", url=url
            )
        return result

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> ObjectMeta:
        url = self.url_for(key)
        full = self._full(key)
        self.check_single_put(key, len(data))
        params: dict[str, str] = {}
        if create_only:
            if if_match is not None:
                raise InvalidArgument("create_only and if_match exclude each other", url=url)
            params["ifGenerationMatch"] = "0"
        elif if_match is not None:
            if not _GENERATION.fullmatch(if_match):
                raise PreconditionFailed(f"{if_match!r} is not a GCS generation", url=url)
            params["ifGenerationMatch"] = if_match
        resource = await self._upload(
            full,
            data,
            url,
            fields=_resource_fields(attributes or ObjectAttributes()),
            params=params,
            create_only=create_only,
        )
        return self._meta(key, resource)

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[ObjectMeta]:
        _, storage = await self._client()
        params = {"prefix": self.prefix + prefix, "maxResults": str(page_size)}
        after = None if start_after is None else self.prefix + start_after
        if after is not None:
            # startOffset is inclusive; the key itself is skipped below.
            params["startOffset"] = after
        while True:
            async with self._errors(self.root_url):
                page = await storage.list_objects(
                    self.bucket, params=dict(params), timeout=_JSON_TIMEOUT_S
                )
            items = page.get("items") or []
            for item in items:
                name = str(item["name"])
                if name != after and not _is_staged(name):
                    yield self._meta(name[len(self.prefix) :], item)
            token = page.get("nextPageToken")
            if not token:
                return
            if items and _is_staged(str(items[-1]["name"])):
                # Step over the rest of the staging objects rather than page through them.
                params["startOffset"] = _STAGING_END
                params.pop("pageToken", None)
            else:
                params["pageToken"] = str(token)

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        url = self.url_for(key)
        full = self._full(key)
        _, storage = await self._client()
        if if_match is None:
            async with self._errors(url, missing="absent_ok"):
                await storage.delete(self.bucket, full, timeout=_JSON_TIMEOUT_S)
            return
        if not _GENERATION.fullmatch(if_match):
            raise PreconditionFailed(f"{if_match!r} is not a GCS generation", url=url)
        # fake-gcs-server ignores ifGenerationMatch on deletes, so the generation is compared
        # first. Between that look and the delete another writer may replace the object: GCS
        # itself closes that window by checking ifGenerationMatch (412); the emulator cannot.
        current = await self.head(key)
        if current.version != if_match:
            raise PreconditionFailed(
                f"generation is {current.version}, not {if_match}", url=current.url
            )
        async with self._errors(url):
            await storage.delete(
                self.bucket,
                full,
                params={"ifGenerationMatch": if_match},
                timeout=_JSON_TIMEOUT_S,
            )

    async def copy_within(
        self,
        source_key: str,
        dest_key: str,
        *,
        if_match: str | None = None,
        attributes: ObjectAttributes | None = None,
    ) -> ObjectMeta:
        source_url = self.url_for(source_key)
        source = self._full(source_key)
        dest = self._full(dest_key)
        _, storage = await self._client()
        params: dict[str, str] = {}
        if if_match is not None:
            if not _GENERATION.fullmatch(if_match):
                raise PreconditionFailed(f"{if_match!r} is not a GCS generation", url=source_url)
            # Rewriting that very generation is safe where the precondition is ignored
            # (fake-gcs-server); a generation that is gone answers 404.
            params.update(sourceGeneration=if_match, ifSourceGenerationMatch=if_match)
        async with self._errors(
            source_url, missing="changed" if if_match is not None else "object"
        ):
            # The library loops on rewriteToken until GCS reports the rewrite done.
            result = await storage.copy(
                self.bucket,
                source,
                self.bucket,
                new_name=dest,
                metadata=_library_fields(attributes) if attributes is not None else None,
                params=params,
                timeout=_REWRITE_TIMEOUT_S,
            )
        return self._meta(dest_key, result["resource"])

    # -- multipart ------------------------------------------------------------------------

    def _check_upload_id(self, key: str, upload_id: str) -> None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NotFound(f"no multipart upload {upload_id!r}", url=self.url_for(key))

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        url = self.url_for(key)
        full = self._full(key)
        upload_id = uuid.uuid4().hex
        manifest = {"key": full, "attributes": _attributes_json(attributes or ObjectAttributes())}
        await self._upload(
            STAGING_PREFIX + upload_id,
            json.dumps(manifest).encode(),
            url,
            # The key also goes in custom metadata, percent-encoded (plain ASCII whatever the
            # key), so that listing the manifests names every upload's key.
            fields={"contentType": "application/json", "metadata": {"key": _quote(full)}},
            params={"ifGenerationMatch": "0"},
            create_only=True,
        )
        return upload_id

    async def put_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> PartToken:
        url = self.url_for(key)
        self._full(key)
        self._check_upload_id(key, upload_id)
        self.check_part(key, part_number, len(data))
        name = _part_name(upload_id, part_number)
        resource = await self._upload(name, data, url, fields={"contentType": DEFAULT_CONTENT_TYPE})
        return PartToken(
            part_number,
            f"{name}#{resource['generation']}",
            len(data),
            {ChecksumKind.CRC32C: str(resource.get("crc32c") or _crc32c_b64(data))},
        )

    async def _manifest(self, key: str, upload_id: str) -> dict[str, Any]:
        url = self.url_for(key)
        async with (
            self._errors(url, missing="upload"),
            self._send(
                "GET", self._object_url(STAGING_PREFIX + upload_id), params={"alt": "media"}
            ) as response,
        ):
            raw = await response.read()
        try:
            manifest: dict[str, Any] = json.loads(raw)
            str(manifest["key"])
        except (ValueError, KeyError, TypeError):
            raise NotFound(
                f"multipart upload {upload_id} has no readable manifest", url=url
            ) from None
        return manifest

    async def _staged(self, upload_id: str, url: str) -> dict[str, dict[str, Any]]:
        """Every object under the upload's staging directory, by name."""
        _, storage = await self._client()
        params = {"prefix": f"{STAGING_PREFIX}{upload_id}/", "maxResults": "1000"}
        staged: dict[str, dict[str, Any]] = {}
        while True:
            async with self._errors(url):
                page = await storage.list_objects(
                    self.bucket, params=dict(params), timeout=_JSON_TIMEOUT_S
                )
            for item in page.get("items") or []:
                staged[str(item["name"])] = item
            token = page.get("nextPageToken")
            if not token:
                return staged
            params["pageToken"] = str(token)

    async def _fan_out(self, jobs: Iterable[Callable[[], Awaitable[Any]]]) -> Sequence[Any]:
        """Run ``jobs`` at most _FANOUT at a time; the first failure cancels the rest."""
        limit = asyncio.Semaphore(_FANOUT)

        async def bounded(job: Callable[[], Awaitable[Any]]) -> Any:
            async with limit:
                return await job()

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(bounded(job)) for job in jobs]
        except BaseExceptionGroup as failures:
            # Callers map and classify single errors (a transient one keeps the parts).
            first: BaseException = failures
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return [task.result() for task in tasks]

    async def _compose(
        self,
        name: str,
        sources: Sequence[tuple[str, str]],
        destination: Mapping[str, Any],
        url: str,
    ) -> tuple[str, str]:
        body = {
            "sourceObjects": [
                {"name": source, "objectPreconditions": {"ifGenerationMatch": generation}}
                for source, generation in sources
            ],
            "destination": dict(destination),
        }
        async with self._errors(url):
            result = await self._json("POST", self._object_url(name, "/compose"), json_body=body)
        return name, str(result["generation"])

    async def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartToken],
        *,
        extra_metadata: Mapping[str, str] | None = None,
    ) -> ObjectMeta:
        url = self.url_for(key)
        full = self._full(key)
        self._check_upload_id(key, upload_id)
        manifest = await self._manifest(key, upload_id)
        if manifest["key"] != full:
            raise NotFound(f"multipart upload {upload_id} is not one of this key", url=url)
        attributes = _attributes_from_json(manifest.get("attributes") or {})
        if extra_metadata:
            attributes = replace(
                attributes, user_metadata={**attributes.user_metadata, **extra_metadata}
            )
        failure: BaseException | None = None
        try:
            resource = await self._assemble(full, upload_id, parts, attributes, url)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            # A transient failure keeps the parts so that completing again can succeed; a
            # cancelled task does no more I/O and leaves the upload to abort or the orphan
            # cleaner. Clean-up is best effort: what it leaves stays listed by its manifest.
            if not isinstance(failure, asyncio.CancelledError):
                with contextlib.suppress(StoreError):
                    await self._clear_staging(
                        upload_id, url, keep_parts=isinstance(failure, TransientError)
                    )
        return self._meta(key, resource)

    async def _assemble(
        self,
        full: str,
        upload_id: str,
        parts: Sequence[PartToken],
        attributes: ObjectAttributes,
        url: str,
    ) -> dict[str, Any]:
        ordered = sorted(parts, key=lambda p: p.part_number)
        if not ordered:
            raise InvalidArgument("a multipart upload needs at least one part", url=url)
        staged = await self._staged(upload_id, url)
        sources: list[tuple[str, str]] = []
        for previous, part in zip([None, *ordered], ordered, strict=False):
            if previous is not None and previous.part_number == part.part_number:
                raise InvalidArgument(f"part {part.part_number} is given twice", url=url)
            name, _, generation = part.token.rpartition("#")
            item = staged.get(name)
            if (
                name != _part_name(upload_id, part.part_number)
                or item is None
                or str(item.get("generation")) != generation
                or int(item.get("size") or 0) != part.size
            ):
                raise InvalidArgument(
                    f"part {part.part_number} was not uploaded as given ({part.token!r})", url=url
                )
            sources.append((name, generation))
        depth = 0
        while len(sources) > COMPOSE_MAX_SOURCES:
            depth += 1
            groups = [
                sources[i : i + COMPOSE_MAX_SOURCES]
                for i in range(0, len(sources), COMPOSE_MAX_SOURCES)
            ]
            intermediate = {"contentType": DEFAULT_CONTENT_TYPE}
            composed = await self._fan_out(
                functools.partial(
                    self._compose,
                    f"{STAGING_PREFIX}{upload_id}/compose-{depth}-{i:05d}",
                    group,
                    intermediate,
                    url,
                )
                for i, group in enumerate(groups)
            )
            sources = [(str(name), str(generation)) for name, generation in composed]
        body = {
            "sourceObjects": [
                {"name": name, "objectPreconditions": {"ifGenerationMatch": generation}}
                for name, generation in sources
            ],
            "destination": _resource_fields(attributes),
        }
        async with self._errors(url):
            return await self._json("POST", self._object_url(full, "/compose"), json_body=body)

    async def _clear_staging(self, upload_id: str, url: str, *, keep_parts: bool = False) -> None:
        """Delete the upload's staged objects, then its manifest (unless ``keep_parts``, which
        deletes the intermediate composites only)."""
        _, storage = await self._client()
        staged = await self._staged(upload_id, url)
        doomed = [
            n for n in staged if not (keep_parts and n.rsplit("/", 1)[-1].startswith("part-"))
        ]

        async def delete(name: str) -> None:
            async with self._errors(url, missing="absent_ok"):
                await storage.delete(self.bucket, name, timeout=_JSON_TIMEOUT_S)

        await self._fan_out(functools.partial(delete, name) for name in doomed)
        if not keep_parts:
            await delete(STAGING_PREFIX + upload_id)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        url = self.url_for(key)
        full = self._full(key)
        if not _UPLOAD_ID.fullmatch(upload_id):
            return
        try:
            manifest = await self._manifest(key, upload_id)
        except NotFound:
            if await self._bucket_missing():
                raise
            # No manifest: clear whatever parts are left under the upload's directory.
        else:
            if manifest["key"] != full:
                return
        await self._clear_staging(upload_id, url)

    async def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        _, storage = await self._client()
        wanted = self.prefix + prefix
        # The delimiter keeps the parts (one level down) out of the listing of manifests.
        params = {"prefix": STAGING_PREFIX, "delimiter": "/", "maxResults": "1000"}
        while True:
            async with self._errors(self.root_url):
                page = await storage.list_objects(
                    self.bucket, params=dict(params), timeout=_JSON_TIMEOUT_S
                )
            for item in page.get("items") or []:
                upload_id = str(item["name"])[len(STAGING_PREFIX) :]
                encoded = (item.get("metadata") or {}).get("key")
                if not _UPLOAD_ID.fullmatch(upload_id) or not isinstance(encoded, str):
                    continue
                try:
                    full = urllib.parse.unquote(encoded, errors="strict")
                except UnicodeDecodeError:
                    continue
                if full.startswith(wanted):
                    yield MultipartUpload(
                        full[len(self.prefix) :], upload_id, _timestamp(item.get("timeCreated"))
                    )
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = str(token)
