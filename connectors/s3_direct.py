"""S3's small-object requests (GetObject of a whole object, PutObject, HeadObject) sent
straight over aiohttp, signed with botocore's own SigV4 signer.

Through aiobotocore each of these requests costs 2.6-3.2 ms of client CPU (event hooks,
endpoint rules, parameter validation and serialisation, response parsing), most of a 4 KiB
object's copy. Here a request is a URL, a few headers, one signature and a response read
into the same fields the SDK's answer carries, so ``connectors.s3`` builds the same
``ObjectMeta`` from either path and maps failures through one ``map_error``: an error
response becomes the botocore ``ClientError`` the SDK would have raised, a CRC32C mismatch
its ``FlexibleChecksumError``.

What stays with the SDK: everything else (multipart, listings, copies, deletes, ranges), and
these requests too wherever addressing is not plain: an AWS bucket that needs path-style
addressing (a name with dots or not DNS-safe), accelerate, dual-stack or FIPS endpoints.

Credentials are the session's own object, the one the SDK client signs with: refreshable
credentials (an assumed role, an instance profile) are refreshed as the SDK refreshes them,
by asking for frozen credentials before each request. No header or credential is logged.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from awscrt import checksums as crt_checksums
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, FlexibleChecksumError
from yarl import URL

from connectors.aws_session import USER_AGENT, fast_timestamp
from connectors.base import Buffer, RequestClass
from connectors.observed import request_tracing
from connectors.payload import BufferPayload

_METADATA_PREFIX = "x-amz-meta-"
# A bucket name that is one DNS label, which botocore's ``auto`` addressing puts in the host.
_DNS_LABEL = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_REQUEST_CLASSES = {"GET": RequestClass.GET, "HEAD": RequestClass.HEAD, "PUT": RequestClass.PUT}
# Response headers and the output fields botocore's S3 model gives them.
_HEADER_FIELDS = (
    ("ETag", "ETag"),
    ("x-amz-version-id", "VersionId"),
    ("Content-Type", "ContentType"),
    ("Cache-Control", "CacheControl"),
    ("Content-Encoding", "ContentEncoding"),
    ("Content-Disposition", "ContentDisposition"),
    ("x-amz-checksum-crc32", "ChecksumCRC32"),
    ("x-amz-checksum-crc32c", "ChecksumCRC32C"),
    ("x-amz-checksum-crc64nvme", "ChecksumCRC64NVME"),
    ("x-amz-checksum-sha1", "ChecksumSHA1"),
    ("x-amz-checksum-sha256", "ChecksumSHA256"),
    ("x-amz-checksum-type", "ChecksumType"),
)
# The whole-object checksums a GET with checksum mode may bring, and how each is computed
# (the bytes it is given; its digest as S3 spells it, before base64).
_CHECKSUMS: tuple[tuple[str, Callable[[bytes], bytes]], ...] = (
    ("ChecksumCRC32", lambda data: crt_checksums.crc32(data).to_bytes(4, "big")),
    ("ChecksumCRC32C", lambda data: crt_checksums.crc32c(data).to_bytes(4, "big")),
    ("ChecksumCRC64NVME", lambda data: crt_checksums.crc64nvme(data).to_bytes(8, "big")),
    ("ChecksumSHA1", lambda data: hashlib.sha1(data).digest()),
    ("ChecksumSHA256", lambda data: hashlib.sha256(data).digest()),
)
# Request attributes and the headers botocore's S3 model sends them as.
_ATTRIBUTE_HEADERS = (
    ("ContentType", "Content-Type"),
    ("CacheControl", "Cache-Control"),
    ("ContentEncoding", "Content-Encoding"),
    ("ContentDisposition", "Content-Disposition"),
)


def virtual_host_endpoint(endpoint_url: str, bucket: str) -> str | None:
    """The bucket's virtual-host endpoint on an AWS endpoint, as botocore's ``auto``
    addressing picks it; None where botocore would fall back to path-style (a bucket name
    that is not one DNS label, or that TLS certificates for ``*.s3...`` cannot cover)."""
    parts = urllib.parse.urlsplit(endpoint_url)
    if not _DNS_LABEL.fullmatch(bucket) or not parts.hostname:
        return None
    return f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path.rstrip('/')}"


def _classify(method: str, _: URL, __: Mapping[str, str]) -> RequestClass:
    return _REQUEST_CLASSES.get(method, RequestClass.PUT)


def _client_error(
    operation: str, status: int, headers: Mapping[str, str], body: bytes
) -> ClientError:
    """The ``ClientError`` botocore raises for this answer: the code and message of S3's XML
    error body, or the status as the code when there is no body (HEAD)."""
    code, message = str(status), ""
    if body:
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            pass
        else:
            for element in root.iter():
                tag = element.tag.rsplit("}", 1)[-1]
                if tag == "Code" and element.text:
                    code = element.text
                elif tag == "Message" and element.text:
                    message = element.text
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "HTTPHeaders": {name.lower(): value for name, value in headers.items()},
        },
    }
    return ClientError(response, operation)


def _fields(headers: Mapping[str, str]) -> dict[str, Any]:
    # ``headers``: aiohttp's case-insensitive headers of the answer.
    """The response fields ``connectors.s3`` reads, named and typed as botocore's parser
    gives them."""
    fields: dict[str, Any] = {}
    for header, field in _HEADER_FIELDS:
        value = headers.get(header)
        if value is not None:
            fields[field] = value
    last_modified = headers.get("Last-Modified")
    if last_modified is not None:
        fields["LastModified"] = fast_timestamp(last_modified)
    length = headers.get("Content-Length")
    if length is not None:
        fields["ContentLength"] = int(length)
    fields["Metadata"] = {
        name[len(_METADATA_PREFIX) :]: value
        for name, value in headers.items()
        if name.lower().startswith(_METADATA_PREFIX)
    }
    return fields


def _check_checksums(fields: Mapping[str, Any], data: bytes) -> None:
    """What the SDK checks when a GET asks for checksums: the whole object's checksum the
    store reports, whichever algorithm it was written with (not a COMPOSITE one of parts,
    marked ``-N``), must be the bytes' own."""
    if fields.get("ChecksumType") == "COMPOSITE":
        return
    for field, compute in _CHECKSUMS:
        expected = fields.get(field)
        if not expected or "-" in expected:
            continue
        actual = base64.b64encode(compute(data)).decode()
        if actual != expected:
            raise FlexibleChecksumError(
                error_msg=f"expected checksum {expected} did not match calculated {actual}"
            )
        return


class S3DirectRequests:
    """GetObject, PutObject and HeadObject for one bucket on one endpoint."""

    def __init__(
        self,
        *,
        bucket_url: str,
        region: str,
        credentials: Any,
        client_config: Any,
        location: str,
        pool_connections: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        """``bucket_url``: the bucket's root (``https://bucket.s3.region.amazonaws.com`` or a
        custom endpoint with the bucket as first path segment); ``credentials``: botocore
        credentials, refreshable or not; ``client_config``: the SDK client's config, whose S3
        options (unsigned payloads) the signer reads."""
        self._bucket_url = bucket_url.rstrip("/")
        self._region = region
        self._credentials = credentials
        self._client_config = client_config
        self._location = location
        self._pool_connections = pool_connections
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._signer: S3SigV4Auth | None = None
        self._signed_with: Any = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_connections, limit_per_host=0),
                timeout=self._timeout,
                # Objects are stored bytes, gzip or not: never decoded on the way.
                auto_decompress=False,
                # S3 picks its own default content type when a put names none, as with the SDK.
                skip_auto_headers=("Content-Type", "Accept-Encoding"),
                trace_configs=[request_tracing(self._location, _classify)],
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def object_url(self, key: str, version: str | None = None) -> str:
        """The object's URL, percent-encoded once as S3 signs it (``/`` kept, as botocore
        serialises the greedy ``{Key+}`` label)."""
        url = f"{self._bucket_url}/{urllib.parse.quote(key, safe='/~')}"
        if version is not None:
            url += "?versionId=" + urllib.parse.quote(version, safe="-_.~")
        return url

    async def _signed(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        frozen = await self._credentials.get_frozen_credentials()
        if self._signer is None or frozen is not self._signed_with:
            self._signer = S3SigV4Auth(frozen, "s3", self._region)
            self._signed_with = frozen
        request = AWSRequest(method=method, url=url, headers=headers)
        request.context["client_config"] = self._client_config
        self._signer.add_auth(request)
        return dict(request.headers.items())

    async def _send(
        self,
        operation: str,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Buffer | None = None,
    ) -> tuple[Mapping[str, str], bytes]:
        """One request: the answer's headers and body, or the SDK's ``ClientError``. A
        connection the pool kept but the server had closed is tried once more, as the SDK's
        single retry does; every other failure goes to the engine's retry policy."""
        headers["User-Agent"] = USER_AGENT
        signed = await self._signed(method, url, headers)
        for attempt in (1, 2):
            try:
                async with self._http().request(
                    method,
                    URL(url, encoded=True),
                    headers=signed,
                    data=None if body is None else BufferPayload(body),
                    allow_redirects=False,
                ) as response:
                    data = await response.read()
                    if response.status >= 300:
                        raise _client_error(operation, response.status, response.headers, data)
                    return response.headers, data
            except aiohttp.ServerDisconnectedError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def get(
        self, key: str, *, if_match: str | None, version: str | None
    ) -> tuple[dict[str, Any], bytes]:
        """A whole object with its checksums: the GetObject fields and the bytes."""
        headers = {"x-amz-checksum-mode": "ENABLED"}
        if if_match is not None:
            headers["If-Match"] = if_match
        answer, data = await self._send("GetObject", "GET", self.object_url(key, version), headers)
        fields = _fields(answer)
        _check_checksums(fields, data)
        return fields, data

    async def head(self, key: str, *, version: str | None) -> dict[str, Any]:
        headers = {"x-amz-checksum-mode": "ENABLED"}
        answer, _ = await self._send("HeadObject", "HEAD", self.object_url(key, version), headers)
        return _fields(answer)

    async def put(
        self,
        key: str,
        data: Buffer,
        *,
        crc32c: str,
        attributes: Mapping[str, Any],
        create_only: bool,
        if_match: str | None,
    ) -> dict[str, Any]:
        """PutObject with ``attributes`` as ``connectors.s3`` gives them to the SDK
        (``ContentType``..., ``Metadata``): the response's fields."""
        headers = {
            "x-amz-sdk-checksum-algorithm": "CRC32C",
            "x-amz-checksum-crc32c": crc32c,
        }
        for field, header in _ATTRIBUTE_HEADERS:
            if field in attributes:
                headers[header] = attributes[field]
        for name, value in (attributes.get("Metadata") or {}).items():
            headers[_METADATA_PREFIX + name] = value
        if create_only:
            headers["If-None-Match"] = "*"
        if if_match is not None:
            headers["If-Match"] = if_match
        answer, _ = await self._send("PutObject", "PUT", self.object_url(key), headers, data)
        return _fields(answer)
