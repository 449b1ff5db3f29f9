"""A counting HTTP proxy in front of one emulator (moto S3, fake-gcs-server, Azurite): every
request is forwarded unchanged and counted by class, with the object bytes it carried, as the
store saw it. The classification is written here from each API's HTTP vocabulary, apart from
the connectors' own, so that the two check each other.

Forwarding is ``tests/forwarding.py``'s, as for the chaos suite's fault proxy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from tests.forwarding import ForwardingProxy

Flavour = Literal["s3", "gcs", "azure"]


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


class CountingProxy(ForwardingProxy):
    """``await start()`` returns its URL; ``counts`` holds what it forwarded."""

    def __init__(self, upstream: str, *, flavour: Flavour) -> None:
        super().__init__(upstream)
        self.classify = CLASSIFIERS[flavour]
        self.counts = Counts()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = self.classify(request.method, request.rel_url, request.headers)
        body = await request.read()
        status, headers, payload = await self.forward(request, body)
        self.counts.requests[kind] += 1
        if kind == "put":
            self.counts.bytes_written += len(body)
        if kind == "get" and 200 <= status < 300:
            self.counts.bytes_read += len(payload)
        return await self.answer(request, status, headers, payload)
