"""A counting HTTP proxy in front of one emulator (moto S3, fake-gcs-server, Azurite): every
request is forwarded unchanged and counted by class, with the object bytes it carried, as the
store saw it. The classification is written here from each API's HTTP vocabulary, apart from
the connectors' own, so that the two check each other.

Forwarding follows ``tests/chaos/proxy.py`` (hop-by-hop headers dropped, redirects naming the
upstream rewritten to the proxy), without its faults.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

Flavour = Literal["s3", "gcs", "azure"]
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


def s3_class(method: str, url: URL, headers: CIMultiDictProxy[str]) -> str:
    query = url.query
    if method == "HEAD":
        return "head"
    if method == "DELETE":
        return "delete"  # DeleteObject, AbortMultipartUpload
    if method == "GET":
        bucket_only = url.path.strip("/").count("/") == 0
        if "list-type" in query or "uploads" in query or "uploadId" in query or bucket_only:
            return "list"
        return "get"
    if "x-amz-copy-source" in headers:
        return "copy"  # CopyObject, UploadPartCopy
    return "put"  # PutObject, UploadPart, Create/CompleteMultipartUpload, CreateBucket


def gcs_class(method: str, url: URL, headers: CIMultiDictProxy[str]) -> str:
    path = url.path
    if path.startswith(("/upload/", "/resumable/")):
        return "put"
    if method == "DELETE":
        return "delete"
    if method == "POST" and (path.endswith("/compose") or "/rewriteTo/" in path):
        return "copy"
    if method != "GET":
        return "put"
    if path.endswith("/o"):
        return "list"
    return "get" if url.query.get("alt") == "media" else "head"


def azure_class(method: str, url: URL, headers: CIMultiDictProxy[str]) -> str:
    comp = url.query.get("comp")
    if method == "DELETE":
        return "delete"
    if method == "HEAD":
        return "head"
    if method == "GET":
        if comp in ("list", "blocklist"):
            return "list"
        return "head" if comp or url.query.get("restype") else "get"
    return "copy" if "x-ms-copy-source" in headers else "put"


CLASSIFIERS = {"s3": s3_class, "gcs": gcs_class, "azure": azure_class}


@dataclass
class Counts:
    """What the store served through the proxy."""

    requests: Counter[str] = field(default_factory=Counter)
    bytes_read: int = 0  # bodies of successful GETs
    bytes_written: int = 0  # bodies of PUT-class requests

    def reset(self) -> None:
        self.requests.clear()
        self.bytes_read = self.bytes_written = 0


class CountingProxy:
    """``await start()`` returns its URL; ``counts`` holds what it forwarded."""

    def __init__(self, upstream: str, *, flavour: Flavour) -> None:
        self.upstream = upstream.rstrip("/")
        self.classify = CLASSIFIERS[flavour]
        self.counts = Counts()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120),
        )
        app = web.Application(client_max_size=1 << 31)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> CountingProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = self.classify(request.method, request.rel_url, request.headers)
        body = await request.read()
        assert self._session is not None
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP and name.lower() != "accept-encoding"
        }
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=io.BytesIO(body) if body else (b"" if request.can_read_body else None),
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            payload = await upstream.read()
            status, upstream_headers = upstream.status, upstream.headers.copy()
        self.counts.requests[kind] += 1
        if kind == "put":
            self.counts.bytes_written += len(body)
        if kind == "get" and 200 <= status < 300:
            self.counts.bytes_read += len(payload)
        response = web.StreamResponse(status=status)
        for name, value in upstream_headers.items():
            lowered = name.lower()
            if lowered in _HOP_BY_HOP:
                continue
            if lowered == "location":
                value = value.replace(self.upstream, self.url)
            response.headers.add(name, value)
        if request.method == "HEAD" or status in (204, 304):
            if request.method == "HEAD" and "Content-Length" in upstream_headers:
                response.content_length = int(upstream_headers["Content-Length"])
            await response.prepare(request)
            await response.write_eof()
            return response
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload)
        await response.write_eof()
        return response
