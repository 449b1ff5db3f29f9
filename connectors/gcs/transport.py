"""The GCS JSON API transport: one aiohttp session per store, credentials, requests, and the
mapping of every failure into connectors.base errors.

The base of ``GCSStore``: object operations (``store``) and multipart staging (``multipart``)
are written on top of these requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, cast

import aiohttp
import yarl
from gcloud.aio.auth import Token
from gcloud.aio.storage import SCOPES, Storage
from gcloud.aio.storage.storage import init_api_root
from tenacity import stop_after_attempt

from connectors.base import (
    AlreadyExists,
    Buffer,
    ChecksumKind,
    ContainerNotFound,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    NotFound,
    ObjectMeta,
    ObjectStore,
    PermissionDenied,
    PreconditionFailed,
    RequestClass,
    StoreError,
    Throttled,
    TransientError,
    check_key,
    parse_retry_after,
)
from connectors.gcs.resources import attributes, crc32c_b64, timestamp, upload_timeout
from connectors.observed import request_tracing
from connectors.payload import BufferPayload

KEY_RULE = " (GCS object name rule: 1-1024 bytes of UTF-8)"
STAGING_PREFIX = ".replicator-uploads/"
# The first name after every name under the staging prefix ('0' follows '/').
_STAGING_END = STAGING_PREFIX[:-1] + chr(ord("/") + 1)
_ACME_PREFIX = ".well-known/acme-challenge/"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_GENERATION = re.compile(r"[0-9]+")


def write_preconditions(create_only: bool, if_match: str | None, url: str) -> dict[str, str]:
    """The query parameters that condition a write (an upload or a compose) on what the key
    holds: nothing (``ifGenerationMatch=0``) or one generation."""
    if create_only:
        if if_match is not None:
            raise InvalidArgument("create_only and if_match exclude each other", url=url)
        return {"ifGenerationMatch": "0"}
    if if_match is not None:
        if not _GENERATION.fullmatch(if_match):
            raise PreconditionFailed(f"{if_match!r} is not a GCS generation", url=url)
        return {"ifGenerationMatch": if_match}
    return {}


COMPOSE_MAX_SOURCES = 32
POOL_CONNECTIONS = 64
# Composes and deletes of one upload in flight at once: enough to keep the pool busy while
# leaving room for other transfers.
_FANOUT = 32
_JSON_TIMEOUT_S = 60
_REWRITE_TIMEOUT_S = 120
_JSON_TIMEOUT = aiohttp.ClientTimeout(total=_JSON_TIMEOUT_S, sock_connect=30)
# A download may be large: bound the silences, not the whole transfer.
_READ_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)

_Missing = Literal["object", "changed", "upload", "absent_ok"]


def quote(name: str) -> str:
    # Every character but unreserved ones is encoded, '/' included: a name is one path segment.
    return urllib.parse.quote(name, safe="")


def request_class(method: str, url: yarl.URL, _: Mapping[str, str]) -> RequestClass | None:
    """A JSON API request as GCS bills it (``connectors.base.RequestClass``); None for one
    that is not to the storage API (a token)."""
    path = url.raw_path
    if path.startswith(("/upload/", "/resumable/")):
        return RequestClass.PUT
    if path.startswith("/download/"):
        return RequestClass.GET
    if not path.startswith("/storage/v1/"):
        return None
    if method == "DELETE":
        return RequestClass.DELETE
    if method in ("POST", "PUT") and (
        "/compose" in path or "/rewriteTo/" in path or "/copyTo/" in path
    ):
        return RequestClass.COPY
    if method != "GET":
        return RequestClass.PUT  # bucket creation, metadata patches
    if path.endswith("/o"):
        return RequestClass.LIST
    if url.query.get("alt") == "media":
        return RequestClass.GET
    return RequestClass.HEAD  # an object's or a bucket's resource


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


class GCSTransport(ObjectStore):
    """Requests to one bucket's JSON API, with errors mapped; see ``connectors.gcs``."""

    def __init__(self, bucket: str, prefix: str = "", service_file: str | None = None) -> None:
        super().__init__(f"gs://{bucket}/{prefix}")
        self.bucket = bucket
        self.prefix = prefix
        # A service-account key file for this location; None: application defaults.
        self._service_file = service_file
        self._emulated, self._api_root = init_api_root(None)
        self._bucket_path = f"{self._api_root}/storage/v1/b/{quote(bucket)}"
        self._upload_url = yarl.URL(
            f"{self._api_root}/upload/storage/v1/b/{quote(bucket)}/o", encoded=True
        )
        self._session: aiohttp.ClientSession | None = None
        self._storage: Storage | None = None
        self._client_lock = asyncio.Lock()

    # -- client ---------------------------------------------------------------------------

    async def _client(self) -> tuple[aiohttp.ClientSession, Storage]:
        if self._session is None or self._storage is None:
            async with self._client_lock:
                if self._session is None or self._storage is None:
                    session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=POOL_CONNECTIONS),
                        trace_configs=[request_tracing("gs", request_class)],
                    )
                    # The library's annotations name requests' Session, serving both its
                    # aiohttp and its requests builds; this build runs on aiohttp.
                    shared = cast(Any, session)
                    try:
                        token = _Token(
                            service_file=self._service_file, session=shared, scopes=SCOPES
                        )
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
        return yarl.URL(f"{self._bucket_path}/o/{quote(name)}{suffix}", encoded=True)

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
                raise ContainerNotFound(
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
        missing bucket, so every 404 is followed by one look at the bucket (a bucket deleted
        since it was last seen must never be taken for its objects deleted)."""
        try:
            await self._json("GET", yarl.URL(self._bucket_path, encoded=True))
        except _HTTPError as exc:
            # 403: credentials that may read objects but not bucket metadata; assume it exists.
            return exc.status == 404
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
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
            last_modified=timestamp(resource.get("timeCreated") or resource.get("updated")),
            attributes=attributes(resource),
            checksums=checksums,
        )

    async def _resource(
        self, name: str, url: str, *, generation: str | None = None
    ) -> dict[str, Any]:
        params = {"generation": generation} if generation is not None else None
        async with self._errors(url):
            return await self._json("GET", self._object_url(name), params=params)

    async def _upload(
        self,
        name: str,
        data: Buffer,
        url: str,
        *,
        fields: Mapping[str, Any],
        params: Mapping[str, str] | None = None,
        create_only: bool = False,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> dict[str, Any]:
        """One multipart upload (resource and media in one request) carrying the CRC32C
        (the caller's, in ``checksums``, else computed here)."""
        checksum = (checksums or {}).get(ChecksumKind.CRC32C) or crc32c_b64(data)
        resource = {**fields, "name": name, "crc32c": checksum}
        writer = aiohttp.MultipartWriter("related")
        writer.append_json(resource)
        # fake-gcs-server takes the content type from the media part, GCS from the resource.
        # The bytes go out in slices of the caller's buffer, never copied whole.
        writer.append_payload(BufferPayload(data, content_type=str(resource["contentType"])))
        async with (
            self._errors(url, create_only=create_only, write=True),
            self._send(
                "POST",
                self._upload_url,
                params={"uploadType": "multipart", **(params or {})},
                data=writer,
                time_limit=upload_timeout(len(data)),
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
