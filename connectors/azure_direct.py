"""Azure's small-object requests (Get Blob of a whole blob, Put Blob, Get Blob Properties)
sent straight over the store's aiohttp session, authorised as the SDK authorises them:
Shared Key signed by the storage SDK's own policy (``SharedKeyCredentialPolicy``), or a SAS
token in the query.

Through azure-core's pipeline (policies, the generated client's serialisation, the
downloader's ranged first GET) each request costs more client CPU than the rest of a small
object's copy. Here a request is a URL, a few headers and one signature; its answer is read
into the fields ``connectors.azure`` builds ``ObjectMeta`` from, and a failure into its
status, error code and headers, which ``connectors.azure`` maps as it maps the SDK's.

Entra ID credentials (bearer tokens with their refresh) stay with the SDK, as does everything
else: listings, blocks, copies, deletes and ranges.
"""

from __future__ import annotations

import email.utils
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy
from azure.storage.blob._shared.constants import X_MS_VERSION
from yarl import URL

from connectors.base import Buffer
from connectors.payload import BufferPayload

_METADATA_PREFIX = "x-ms-meta-"
# Headers aiohttp would otherwise add after the request is signed (Content-Type is signed).
_NOT_ADDED = ("Content-Type", "Accept-Encoding")


@dataclass(frozen=True)
class BlobAnswer:
    """What a Get or Put Blob answer says of the blob, as the SDK's models name it."""

    size: int | None
    etag: str | None
    version: str | None
    last_modified: datetime | None
    content_type: str | None
    cache_control: str | None
    content_encoding: str | None
    content_disposition: str | None
    content_md5: str | None
    content_crc64: str | None
    metadata: dict[str, str]


class BlobRequestFailed(Exception):
    """A status of 300 or more: what ``connectors.azure`` maps into the error tree."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers
        self.error_code = headers.get("x-ms-error-code") or ""


def _answer(headers: Mapping[str, str]) -> BlobAnswer:
    # ``headers``: aiohttp's case-insensitive headers of the answer.
    length = headers.get("Content-Length")
    modified = headers.get("Last-Modified")
    return BlobAnswer(
        size=int(length) if length is not None else None,
        etag=headers.get("ETag"),
        version=headers.get("x-ms-version-id"),
        last_modified=email.utils.parsedate_to_datetime(modified) if modified else None,
        content_type=headers.get("Content-Type"),
        cache_control=headers.get("Cache-Control"),
        content_encoding=headers.get("Content-Encoding"),
        content_disposition=headers.get("Content-Disposition"),
        # A whole-blob GET carries the blob's stored MD5 as the answer's own Content-MD5.
        content_md5=headers.get("x-ms-blob-content-md5") or headers.get("Content-MD5"),
        content_crc64=headers.get("x-ms-content-crc64"),
        metadata={
            name[len(_METADATA_PREFIX) :]: value
            for name, value in headers.items()
            if name.lower().startswith(_METADATA_PREFIX)
        },
    )


class _SharedKey(SharedKeyCredentialPolicy):
    """The SDK's Shared Key signature of the path as it is sent (the SDK's own policy
    re-derives it from the URL, as its aiohttp transport would send it)."""

    def _get_canonicalized_resource(self, request: Any) -> str:
        return f"/{self.account_name}{request.http_request.path}"


class _HttpDate:
    """``x-ms-date``, formatted once per second rather than once per request."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = email.utils.formatdate(second, usegmt=True)
        return self._text


class AzureDirectRequests:
    """Get Blob and Put Blob for one container, over the store's session."""

    def __init__(self, session: aiohttp.ClientSession, container_url: str, credential: Any) -> None:
        """``credential``: what ``AzureCredentials.credential`` returned, an account key
        (``{"account_name", "account_key"}``) or a SAS token; see ``supports``."""
        self._session = session
        self._container_url = container_url.rstrip("/")
        self._sas = credential if isinstance(credential, str) else None
        self._shared_key = (
            _SharedKey(  # type: ignore[no-untyped-call]
                credential["account_name"], credential["account_key"]
            )
            if isinstance(credential, dict)
            else None
        )
        self._date = _HttpDate()

    @staticmethod
    def supports(credential: Any) -> bool:
        return isinstance(credential, str) or (
            isinstance(credential, dict) and bool(credential.get("account_key"))
        )

    def _url(self, name: str, query: Mapping[str, str]) -> URL:
        # The path as the SDK's requests carry it: quoted, then requoted by yarl (which
        # unescapes what a path may hold, such as '=' or ';'). The query goes as it is.
        path = URL(f"{self._container_url}/{urllib.parse.quote(name, safe='/~')}")
        parts = [f"{key}={urllib.parse.quote(value, safe='')}" for key, value in query.items()]
        if self._sas:
            parts.append(self._sas)
        if not parts:
            return path
        return URL(f"{path}?{'&'.join(parts)}", encoded=True)

    def _authorise(
        self, method: str, url: URL, headers: dict[str, str], query: Mapping[str, str]
    ) -> None:
        headers["x-ms-date"] = self._date.now()
        headers["x-ms-version"] = X_MS_VERSION
        if self._shared_key is None:
            return
        request = SimpleNamespace(
            http_request=SimpleNamespace(
                method=method, url=str(url), headers=headers, query=query, path=url.raw_path
            ),
            context=SimpleNamespace(transport=None),
        )
        self._shared_key.on_request(request)  # type: ignore[no-untyped-call]

    async def _send(
        self,
        method: str,
        name: str,
        headers: dict[str, str],
        query: Mapping[str, str],
        body: Buffer | None = None,
    ) -> tuple[Mapping[str, str], bytes]:
        """One request: the answer's headers and body, or ``BlobRequestFailed``. A connection
        the pool kept but the server had closed is tried once more, as the SDK's single retry
        does; every other failure goes to the engine's retry policy."""
        url = self._url(name, query)
        self._authorise(method, url, headers, query)
        for attempt in (1, 2):
            try:
                async with self._session.request(
                    method,
                    url,
                    headers=headers,
                    data=None if body is None else BufferPayload(body),
                    skip_auto_headers=_NOT_ADDED,
                    allow_redirects=False,
                ) as response:
                    data = await response.read()
                    if response.status >= 300:
                        raise BlobRequestFailed(
                            response.status, response.reason or "", response.headers
                        )
                    return response.headers, data
            except aiohttp.ServerDisconnectedError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def get(
        self, name: str, *, if_match: str | None, version: str | None
    ) -> tuple[BlobAnswer, bytes]:
        headers: dict[str, str] = {}
        if if_match is not None:
            headers["If-Match"] = if_match
        query = {"versionid": version} if version is not None else {}
        answer, data = await self._send("GET", name, headers, query)
        return _answer(answer), data

    async def head(self, name: str, *, version: str | None) -> BlobAnswer:
        """Get Blob Properties: the blob's size, properties and metadata, its stored MD5 as
        Content-MD5."""
        query = {"versionid": version} if version is not None else {}
        answer, _ = await self._send("HEAD", name, {}, query)
        return _answer(answer)

    async def put(
        self,
        name: str,
        data: Buffer,
        *,
        crc64: str,
        content_type: str | None,
        cache_control: str | None,
        content_encoding: str | None,
        content_disposition: str | None,
        metadata: Mapping[str, str],
        create_only: bool,
        if_match: str | None,
    ) -> BlobAnswer:
        """Put Blob of a block blob: the service checks ``crc64`` (the transactional
        ``x-ms-content-crc64``) and computes the blob's Content-MD5 itself."""
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "Content-Length": str(memoryview(data).nbytes),
            "x-ms-content-crc64": crc64,
        }
        for header, value in (
            ("x-ms-blob-content-type", content_type),
            ("x-ms-blob-cache-control", cache_control),
            ("x-ms-blob-content-encoding", content_encoding),
            ("x-ms-blob-content-disposition", content_disposition),
        ):
            if value is not None:
                headers[header] = value
        for key, value in metadata.items():
            headers[_METADATA_PREFIX + key] = value
        if create_only:
            headers["If-None-Match"] = "*"
        if if_match is not None:
            headers["If-Match"] = if_match
        answer, _ = await self._send("PUT", name, headers, {}, data)
        return _answer(answer)
