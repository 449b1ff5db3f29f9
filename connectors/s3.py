"""AWS S3 and S3-compatible endpoints, through aiobotocore.

Endpoint, region and credentials come from the standard AWS chain (environment, shared config
and credentials files, instance roles): botocore itself honours ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_S3``, and when either (or an ``endpoint_url`` in the config file) is set the
client uses path-style addressing, which every S3-compatible server understands. Without a
configured region, us-east-1 is used.

Checksums: botocore is told to add checksums only where the API requires them and to validate
responses only when asked, so that it neither computes a CRC32 trailer nobody asked for nor
skips ours. Every put and every part carries a CRC32C computed here from the bytes, so S3
rejects damaged bytes. Multipart uploads use S3's default COMPOSITE CRC32C (a checksum of the
part checksums, shown as ``value-N``), which is not a checksum of the object's bytes and is
never reported in ``ObjectMeta.checksums``; part CRC32Cs are in the part tokens instead.

Bodies: a bytes body goes to botocore as it is, any other buffer as a file over its memory
(``connectors.payload.BufferReader``: botocore's signer copies a ``bytearray``); a
``before-send`` hook then hands aiohttp the same memory in slices (``BufferPayload``). Streamed
reads yield the aiohttp body's chunks as received. Every write sends the CRC32C its caller
computed while reading, when given (``checksums``), so the bytes are hashed once.

Conditional requests map onto S3's own: create-only is ``If-None-Match: *``, ``if_match`` is
``If-Match`` on put, get and delete, ``CopySourceIfMatch`` on copies. Versions are S3 version
ids; an unversioned bucket's ``null`` version is reported as None.

Server-side copy uses CopyObject, which S3 limits to sources of 5 GiB: larger sources raise
NotSupported, and the planner copies them through multipart parts instead (it already plans
server-side copies only up to ``max_single_put``).

Small objects: a whole-object GetObject, PutObject and HeadObject go straight over aiohttp,
signed with botocore's SigV4 signer (``connectors.s3_direct``): the SDK's per-request machinery
cost more client CPU than the rest of a small object's copy. Answers and errors are read into
what the SDK would have returned, so both paths give the same ``ObjectMeta`` and errors.
Setting ``REPLICATOR_S3_DIRECT_REQUESTS=0`` sends them through the SDK as well; everything
else (multipart, listings, copies, deletes, ranges) always goes through the SDK.

Keys: S3 takes any UTF-8 key up to 1024 bytes and this connector passes keys through untouched
(listings ask for URL-encoded keys, since XML 1.0 cannot carry some characters, and decode
them exactly). Multipart uploads are refused for keys with characters XML 1.0 cannot carry,
because S3 echoes the key in the XML bodies of CreateMultipartUpload and
CompleteMultipartUpload, which then cannot be parsed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from awscrt import checksums as crt_checksums
from botocore.configprovider import ConfiguredEndpointProvider
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from connectors.aws_requests import S3RequestReporter
from connectors.aws_session import USER_AGENT, aws_session, region_of
from connectors.base import (
    AlreadyExists,
    Buffer,
    ChecksumKind,
    ContainerNotFound,
    GiB,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    Limits,
    MiB,
    MultipartUpload,
    NotFound,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PartToken,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    StoreURL,
    Throttled,
    TransientError,
    check_key,
    clip_range,
    parse_retry_after,
)
from connectors.credentials import AwsAccess, installed
from connectors.payload import BufferReader, body_chunks, sliced
from connectors.s3_direct import S3DirectRequests, virtual_host_endpoint

DEFAULT_REGION = "us-east-1"
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
KEY_RULE = " bytes of UTF-8 (S3 object key rule)"
# Parallel part uploads and ranged reads each hold a connection.
POOL_CONNECTIONS = 64
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 60
#: The environment variable that, set to 0, sends small-object requests through the SDK too.
DIRECT_REQUESTS_VARIABLE = "REPLICATOR_S3_DIRECT_REQUESTS"

# Characters XML 1.0 cannot carry even as character references.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# A multipart object's ETag: the MD5 of the part MD5s followed by "-<part count>".
_MULTIPART_ETAG = re.compile(r'-\d+"?$')

_BUCKET_MISSING = frozenset({"NoSuchBucket"})
_OBJECT_MISSING = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchUpload", "NotFound", "404"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidSecurity",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "401",
        "403",
    }
)
_THROTTLED = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequests",
        "TooManyRequestsException",
        "429",
        # A HEAD answer has no body to name its code; S3's bodiless 503 is its SlowDown.
        "503",
    }
)
# 4xx codes S3 documents as worth retrying: a request the server gave up waiting for, and a
# conditional write that lost a race with another one in flight (the retry then sees 412).
_TRANSIENT_4XX = frozenset({"RequestTimeout", "OperationAborted", "ConditionalRequestConflict"})
_INTEGRITY = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_BAD_KEY = frozenset({"KeyTooLongError"})
_NOT_SUPPORTED = frozenset({"NotImplemented", "501"})


class _UnsatisfiableRange(InvalidArgument):
    """S3's 416: the range starts at or past the end of the object."""


def _code(exc: ClientError) -> str:
    return str((exc.response.get("Error") or {}).get("Code") or "")


def _crc32c_b64(data: Buffer) -> str:
    return base64.b64encode(crt_checksums.crc32c(data).to_bytes(4, "big")).decode()


def _write_crc32c(data: Buffer, checksums: Mapping[ChecksumKind, str] | None) -> str:
    """The CRC32C to send with a write: the caller's, else computed from the bytes."""
    given = (checksums or {}).get(ChecksumKind.CRC32C)
    return given if given is not None else _crc32c_b64(data)


def _body(data: Buffer) -> bytes | BufferReader:
    """A body botocore takes without copying it: bytes as they are (botocore wraps them in a
    BytesIO that shares them), any other buffer as a file over its memory."""
    return data if isinstance(data, bytes) else BufferReader(data)


def _send_sliced(request: Any, **_: Any) -> None:
    """botocore's ``before-send`` hook: a large body goes out in slices of its buffer (see
    connectors.payload), after botocore has sized and signed it. botocore asks a file body
    to wait for ``100 Continue``, a round trip per request that a signed, sized body of
    bytes already in memory does not need."""
    body = sliced(request.body)
    if body is not request.body:
        request.body = body
        request.headers.pop("Expect", None)


def _version(response: Mapping[str, Any]) -> str | None:
    version = response.get("VersionId")
    return None if version in (None, "", "null") else str(version)


def _full_object_crc32c(response: Mapping[str, Any], etag: str | None) -> dict[ChecksumKind, str]:
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


def _attributes(response: Mapping[str, Any]) -> ObjectAttributes:
    return ObjectAttributes(
        content_type=response.get("ContentType"),
        cache_control=response.get("CacheControl"),
        content_encoding=response.get("ContentEncoding"),
        content_disposition=response.get("ContentDisposition"),
        user_metadata=dict(response.get("Metadata") or {}),
    )


def _attribute_params(attributes: ObjectAttributes) -> dict[str, Any]:
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


def _decode_key(encoded: str) -> str:
    # With EncodingType=url S3 form-encodes keys (a space may come back as '+', a '+' as %2B).
    return urllib.parse.unquote_plus(encoded, errors="strict")


def map_error(
    exc: BaseException,
    *,
    url: str,
    bucket: str,
    endpoint: str,
    create_only: bool = False,
    missing_key_is_mismatch: bool = False,
) -> StoreError:
    """Translate an SDK or transport failure into the connectors.base error tree.

    ``create_only``: a failed precondition means the key exists (If-None-Match: *).
    ``missing_key_is_mismatch``: a missing key fails an If-Match write's precondition.
    """
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, ClientError):
        return _map_client_error(exc, url, bucket, endpoint, create_only, missing_key_is_mismatch)
    if isinstance(exc, FlexibleChecksumError):
        return IntegrityError(f"S3 response failed its checksum: {exc}", url=url)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return PermissionDenied(f"no usable AWS credentials: {exc}", url=url)
    if isinstance(exc, ParamValidationError):
        return InvalidArgument(f"S3 request refused before sending: {exc}", url=url)
    if isinstance(exc, BotoConnectionError):
        return TransientError(f"S3 endpoint {endpoint} is unreachable: {exc}", url=url)
    if isinstance(
        exc, HTTPClientError | IncompleteReadError | aiohttp.ClientError | OSError | TimeoutError
    ):
        return TransientError(f"S3 endpoint {endpoint} failed: {exc!r}", url=url)
    if isinstance(exc, BotoCoreError):
        return StoreError(f"S3 client error: {exc}", url=url)
    return StoreError(f"unexpected S3 failure: {exc!r}", url=url)


def _map_client_error(
    exc: ClientError,
    url: str,
    bucket: str,
    endpoint: str,
    create_only: bool,
    missing_key_is_mismatch: bool,
) -> StoreError:
    error = exc.response.get("Error") or {}
    metadata = exc.response.get("ResponseMetadata") or {}
    status = int(metadata.get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status)
    detail = f"{code}: {error.get('Message') or 'no message'} (HTTP {status})"
    if code in _BUCKET_MISSING:
        return ContainerNotFound(f"S3 bucket {bucket!r} does not exist ({detail})", url=url)
    if code == "PreconditionFailed" or status == 412:
        if create_only:
            return AlreadyExists(f"object already exists ({detail})", url=url)
        return PreconditionFailed(f"precondition failed ({detail})", url=url)
    if code in _OBJECT_MISSING or status == 404:
        if missing_key_is_mismatch and code != "NoSuchUpload":
            return PreconditionFailed(
                f"object does not exist, so If-Match fails ({detail})", url=url
            )
        if code == "404":
            # A HEAD response has no body to say whether the key or the bucket is missing;
            # S3Store.head asks the bucket before it reports a missing key.
            return NotFound(f"not found: no such key, or no bucket {bucket!r} ({detail})", url=url)
        return NotFound(f"not found in S3 bucket {bucket!r} ({detail})", url=url)
    if code == "MethodNotAllowed" or status == 405:
        # What S3 answers for a version id that names a delete marker.
        return NotFound(f"that version is a delete marker ({detail})", url=url)
    if code == "InvalidRange" or status == 416:
        return _UnsatisfiableRange(f"range not satisfiable ({detail})", url=url)
    if code in _THROTTLED or status == 429:
        headers = metadata.get("HTTPHeaders") or {}
        return Throttled(
            f"S3 is throttling requests ({detail})",
            url=url,
            retry_after=parse_retry_after(headers.get("retry-after")),
        )
    if code in _DENIED or status in (401, 403):
        return PermissionDenied(f"S3 refused the credentials or access ({detail})", url=url)
    if code in _INTEGRITY:
        return IntegrityError(f"S3 rejected the bytes as damaged ({detail})", url=url)
    if code in _BAD_KEY:
        return InvalidKey(f"S3 refused the key: at most 1024{KEY_RULE} ({detail})", url=url)
    if code in _NOT_SUPPORTED:
        return NotSupported(f"the S3 endpoint {endpoint} lacks this operation ({detail})", url=url)
    if code in _TRANSIENT_4XX or status >= 500:
        return TransientError(f"S3 endpoint {endpoint} failed ({detail})", url=url)
    if status == 409:
        return AlreadyExists(f"conflict ({detail})", url=url)
    if 400 <= status < 500:
        return InvalidArgument(f"S3 refused the request ({detail})", url=url)
    return StoreError(f"S3 error ({detail})", url=url)


class S3Store(ObjectStore):
    scheme: ClassVar[str] = "s3"
    limits = Limits(
        min_part_size=5 * MiB,
        max_part_size=MAX_PART_SIZE,
        max_parts=MAX_PARTS,
        # "Maximum object size 48.8 TiB" in the S3 User Guide's multipart upload limits
        # (qfacts): exactly 10,000 parts of 5 GiB.
        max_object_size=MAX_PARTS * MAX_PART_SIZE,
        max_single_put=5 * GiB,
        max_key_bytes=1024,
        native_checksums=frozenset({ChecksumKind.CRC32C}),
        multipart=True,
        server_side_copy=True,
        versioned_reads=True,
        streamed_reads=True,
        # Beyond CopyObject's 5 GiB, copy_within copies in parts (UploadPartCopy).
        max_server_side_copy=MAX_PARTS * MAX_PART_SIZE,
        server_side_copy_via="CopyObject (parallel UploadPartCopy parts over 5 GiB)",
        server_side_copy_scope="one bucket through one endpoint and credentials",
    )
    # Larger objects are copied within the bucket part by part, in parallel.
    copy_in_parts_above = 5 * GiB
    copy_part_size = 512 * MiB
    copy_part_concurrency = 8

    def __init__(self, bucket: str, prefix: str = "", access: AwsAccess | None = None) -> None:
        super().__init__(f"s3://{bucket}/{prefix}")
        self.bucket = bucket
        self.prefix = prefix
        self._access = access
        self._client: Any = None
        self._endpoint = "the default AWS S3 endpoint"
        self._exit_stack = contextlib.AsyncExitStack()
        self._client_lock = asyncio.Lock()
        self._region: str | None = None
        self._session: AioSession | None = None
        self.direct_requests = os.environ.get(DIRECT_REQUESTS_VARIABLE, "1") != "0"
        self._direct: S3DirectRequests | None = None

    @property
    def location(self) -> str:
        if self._region is None:
            self._region = region_of(self._aws_session(), self._access)
        return f"s3:{self._region}"

    def _aws_session(self) -> AioSession:
        # One per store: a session costs ~30 ms of CPU to build (botocore registers its
        # handlers), which the region lookup and the client would otherwise pay twice.
        if self._session is None:
            self._session = aws_session(self._access)
        return self._session

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        access = installed().s3_for(f"s3://{url.container}/{url.path}")
        return cls(url.container, url.path, access)

    # -- client ---------------------------------------------------------------------------

    async def _s3(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                with self._errors(self.root_url):
                    self._client = await self._open_client()
        return self._client

    async def _open_client(self) -> Any:
        session = self._aws_session()
        configured_endpoint = self._access.endpoint_url if self._access else None
        if not configured_endpoint and not session.get_config_variable(
            "ignore_configured_endpoint_urls"
        ):
            configured_endpoint = ConfiguredEndpointProvider(
                full_config=session.full_config,
                scoped_config=session.get_scoped_config(),
                client_name="s3",
            ).provide()
        if configured_endpoint:
            self._endpoint = str(configured_endpoint)
        config = AioConfig(
            region_name=self.location.removeprefix("s3:"),
            s3={
                "addressing_style": "path" if configured_endpoint else "auto",
                # The body is covered by the CRC32C header, which is signed; a SHA-256 of
                # every payload would cost a second pass over the bytes for nothing more.
                "payload_signing_enabled": False,
            },
            # The connector attaches CRC32C itself; botocore's default would add a CRC32
            # trailer to every upload on top of it.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # The engine owns the one retry policy; one SDK retry absorbs a dropped pooled
            # connection without multiplying the engine's attempts.
            retries={"total_max_attempts": 2, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=POOL_CONNECTIONS,
            user_agent=USER_AGENT,
        )
        client = await self._exit_stack.enter_async_context(
            session.create_client("s3", config=config, endpoint_url=configured_endpoint)
        )
        client.meta.events.register("before-send.s3", _send_sliced)
        reporter = S3RequestReporter(self.location)
        client.meta.events.register("before-send.s3", reporter.before_send)
        client.meta.events.register("response-received.s3.GetObject", reporter.response_received)
        self._endpoint = str(client.meta.endpoint_url)
        if self.direct_requests:
            self._direct = await self._open_direct(client, path_style=bool(configured_endpoint))
        return client

    async def _open_direct(self, client: Any, *, path_style: bool) -> S3DirectRequests | None:
        """The direct path for small-object requests, or None where addressing is not plain
        (see connectors.s3_direct) or there are no credentials to sign with (the SDK then
        raises what it raises without them)."""
        session = self._aws_session()
        credentials = await session.get_credentials()
        if credentials is None:
            return None
        endpoint = str(client.meta.endpoint_url)
        if path_style:
            bucket_url: str | None = f"{endpoint.rstrip('/')}/{self.bucket}"
        else:
            s3_options = (session.get_scoped_config() or {}).get("s3") or {}
            special = (
                session.get_config_variable("use_fips_endpoint")
                or session.get_config_variable("use_dualstack_endpoint")
                or str(s3_options.get("use_accelerate_endpoint", "")).lower() == "true"
                or str(s3_options.get("use_dualstack_endpoint", "")).lower() == "true"
            )
            bucket_url = None if special else virtual_host_endpoint(endpoint, self.bucket)
        if bucket_url is None:
            return None
        return S3DirectRequests(
            bucket_url=bucket_url,
            region=str(client.meta.region_name),
            credentials=credentials,
            client_config=client.meta.config,
            location=self.location,
            pool_connections=POOL_CONNECTIONS,
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        )

    async def _direct_requests(self) -> S3DirectRequests | None:
        await self._s3()
        return self._direct

    async def close(self) -> None:
        async with self._client_lock:
            self._client = None
            if self._direct is not None:
                await self._direct.close()
                self._direct = None
            await self._exit_stack.aclose()
            self._exit_stack = contextlib.AsyncExitStack()

    @contextlib.contextmanager
    def _errors(
        self, url: str, *, create_only: bool = False, missing_key_is_mismatch: bool = False
    ) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (BotoCoreError, ClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise map_error(
                exc,
                url=url,
                bucket=self.bucket,
                endpoint=self._endpoint,
                create_only=create_only,
                missing_key_is_mismatch=missing_key_is_mismatch,
            ) from exc

    def _full(self, key: str) -> str:
        full = self.prefix + key
        check_key(full, self.limits, self.url_for(key), rule=KEY_RULE)
        return full

    def _meta(self, key: str, response: Mapping[str, Any], size: int) -> ObjectMeta:
        etag = response.get("ETag")
        return ObjectMeta(
            url=self.url_for(key),
            key=key,
            size=size,
            etag=etag,
            version=_version(response),
            last_modified=response.get("LastModified"),
            attributes=_attributes(response),
            checksums=_full_object_crc32c(response, etag),
        )

    # -- objects --------------------------------------------------------------------------

    async def create_container(self) -> None:
        """Create the bucket if missing. Versioning is left off: keeping every old version
        costs storage, and that is the bucket owner's choice, not a side effect of set-up."""
        client = await self._s3()
        with self._errors(self.root_url):
            try:
                await client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            else:
                return
            params: dict[str, Any] = {"Bucket": self.bucket}
            region = client.meta.region_name
            if region != DEFAULT_REGION:
                params["CreateBucketConfiguration"] = {"LocationConstraint": region}
            await client.create_bucket(**params)

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        full = self._full(key)
        client = await self._s3()
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "ChecksumMode": "ENABLED"}
        if version is not None:
            params["VersionId"] = version
        try:
            with self._errors(self.url_for(key)):
                if self._direct is not None:
                    response = await self._direct.head(full, version=version)
                else:
                    response = await client.head_object(**params)
        except NotFound:
            await self._check_bucket()
            raise
        return self._meta(key, response, int(response["ContentLength"]))

    async def _check_bucket(self) -> None:
        """Raise ContainerNotFound if the bucket is missing: asked after every 404 of a HEAD,
        whose answer cannot tell a missing key from a missing bucket, so that a bucket deleted
        or mistyped is never taken for objects deleted."""
        client = await self._s3()
        try:
            with self._errors(self.root_url):
                await client.head_bucket(Bucket=self.bucket)
        except NotFound as exc:
            raise ContainerNotFound(
                f"S3 bucket {self.bucket!r} does not exist", url=self.root_url
            ) from exc
        except PermissionDenied:
            # Allowed to read objects but not the bucket: it exists.
            return

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
        client = await self._s3()
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if if_match is not None:
            params["IfMatch"] = if_match
        if version is not None:
            params["VersionId"] = version
        if end == start:
            # No HTTP range names zero bytes: check the object and the range with a HEAD.
            with self._errors(url):
                response = await client.head_object(**params)
            clip_range(int(response["ContentLength"]), start, end, url)
            return b""
        if end is not None:
            params["Range"] = f"bytes={start}-{end - 1}"
        elif start > 0:
            params["Range"] = f"bytes={start}-"
        elif self._direct is not None:
            with self._errors(url):
                _, whole = await self._direct.get(full, if_match=if_match, version=version)
            return whole
        else:
            # A whole-object read can be checked against the object's stored checksum.
            params["ChecksumMode"] = "ENABLED"
        try:
            with self._errors(url):
                response = await client.get_object(**params)
                async with response["Body"] as body:
                    data: bytes = await body.read()
        except _UnsatisfiableRange:
            # Every range starting at 0 fits a non-empty object: the object is empty, which
            # the read contract answers with no bytes (preconditions were checked first).
            if start == 0:
                return b""
            raise
        return data

    async def get(
        self, key: str, *, if_match: str | None = None, version: str | None = None
    ) -> tuple[ObjectMeta, bytes]:
        """One GET: S3 answers with the object's metadata and checksums as headers."""
        url = self.url_for(key)
        full = self._full(key)
        client = await self._s3()
        if self._direct is not None:
            with self._errors(url):
                fields, data = await self._direct.get(full, if_match=if_match, version=version)
            return self._meta(key, fields, len(data)), data
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "ChecksumMode": "ENABLED"}
        if if_match is not None:
            params["IfMatch"] = if_match
        if version is not None:
            params["VersionId"] = version
        with self._errors(url):
            response = await client.get_object(**params)
            async with response["Body"] as body:
                data = await body.read()
        return self._meta(key, response, len(data)), data

    async def read_stream(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> AsyncIterator[bytes]:
        url = self.url_for(key)
        if not 0 <= start < end:
            raise InvalidArgument(f"invalid byte range [{start}, {end}) for a stream", url=url)
        client = await self._s3()
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._full(key),
            "Range": f"bytes={start}-{end - 1}",
        }
        if if_match is not None:
            params["IfMatch"] = if_match
        if version is not None:
            params["VersionId"] = version
        with self._errors(url):
            response = await client.get_object(**params)
            async with response["Body"] as body:
                # The aiohttp stream under the body, so chunks come as received (the
                # engine checks the length it gets against the range it asked for).
                async for chunk in body_chunks(body.raw_stream.content):
                    yield chunk

    async def put(
        self,
        key: str,
        data: Buffer,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> ObjectMeta:
        url = self.url_for(key)
        full = self._full(key)
        self.check_single_put(key, len(data))
        client = await self._s3()
        attributes = attributes or ObjectAttributes()
        checksum = _write_crc32c(data, checksums)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full,
            "Body": _body(data),
            "ChecksumAlgorithm": "CRC32C",
            "ChecksumCRC32C": checksum,
            **_attribute_params(attributes),
        }
        if create_only:
            params["IfNoneMatch"] = "*"
        if if_match is not None:
            params["IfMatch"] = if_match
        with self._errors(
            url, create_only=create_only, missing_key_is_mismatch=if_match is not None
        ):
            if self._direct is not None:
                response = await self._direct.put(
                    full,
                    data,
                    crc32c=checksum,
                    attributes=params,
                    create_only=create_only,
                    if_match=if_match,
                )
            else:
                response = await client.put_object(**params)
        etag = response.get("ETag")
        return ObjectMeta(
            url=url,
            key=key,
            size=len(data),
            etag=etag,
            version=_version(response),
            last_modified=None,
            attributes=attributes,
            checksums=_full_object_crc32c(response, etag) or {ChecksumKind.CRC32C: checksum},
        )

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[ObjectMeta]:
        client = await self._s3()
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": page_size,
            "EncodingType": "url",
        }
        if start_after is not None:
            params["StartAfter"] = self.prefix + start_after
        cut = len(self.prefix)
        while True:
            with self._errors(self.url_for(prefix)):
                page = await client.list_objects_v2(**params)
            for item in page.get("Contents") or ():
                key = _decode_key(item["Key"])[cut:]
                yield ObjectMeta(
                    url=self.url_for(key),
                    key=key,
                    size=int(item["Size"]),
                    etag=item.get("ETag"),
                    version=None,
                    last_modified=item.get("LastModified"),
                    attributes_known=False,
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        full = self._full(key)
        client = await self._s3()
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if if_match is not None:
            params["IfMatch"] = if_match
        with self._errors(self.url_for(key)):
            await client.delete_object(**params)

    # -- multipart ------------------------------------------------------------------------

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        url = self.url_for(key)
        full = self._full(key)
        bad = _XML_ILLEGAL.search(full)
        if bad:
            raise InvalidKey(
                f"S3 multipart uploads need keys XML 1.0 can carry (S3 echoes the key in XML "
                f"responses); this key holds U+{ord(bad.group()):04X}",
                url=url,
            )
        client = await self._s3()
        with self._errors(url):
            response = await client.create_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                ChecksumAlgorithm="CRC32C",
                # The object's own CRC32C, combined by S3 from the parts', rather than a
                # checksum of the part checksums: comparable with the source's, and the
                # evidence that stands for the fingerprint S3 metadata cannot hold.
                ChecksumType="FULL_OBJECT",
                **_attribute_params(attributes or ObjectAttributes()),
            )
        return str(response["UploadId"])

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        url = self.url_for(key)
        full = self._full(key)
        self.check_part(key, part_number, len(data))
        client = await self._s3()
        checksum = _write_crc32c(data, checksums)
        with self._errors(url):
            response = await client.upload_part(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=part_number,
                Body=_body(data),
                ChecksumAlgorithm="CRC32C",
                ChecksumCRC32C=checksum,
            )
        stored = response.get("ChecksumCRC32C") or checksum
        return PartToken(
            part_number, str(response["ETag"]), len(data), {ChecksumKind.CRC32C: str(stored)}
        )

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
        if extra_metadata:
            raise NotSupported(
                "S3 fixes user metadata when a multipart upload is created",
                url=self.url_for(key),
            )
        url = self.url_for(key)
        full = self._full(key)
        ordered = sorted(parts, key=lambda p: p.part_number)
        completed = []
        for part in ordered:
            entry = {"PartNumber": part.part_number, "ETag": part.token}
            crc = part.checksums.get(ChecksumKind.CRC32C)
            if crc is not None:
                entry["ChecksumCRC32C"] = crc
            completed.append(entry)
        client = await self._s3()
        whole: dict[str, str] = {}
        crc = (checksums or {}).get(ChecksumKind.CRC32C)
        if crc is not None:
            # S3 refuses to complete when the parts do not add up to this CRC32C.
            whole = {"ChecksumCRC32C": crc, "ChecksumType": "FULL_OBJECT"}
        conditions = await self._destination_conditions(key, create_only, if_match, copy=False)
        with self._errors(
            url, create_only=create_only, missing_key_is_mismatch=if_match is not None
        ):
            response = await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": completed},
                **whole,
                **conditions,
            )
        etag = response.get("ETag")
        return ObjectMeta(
            url=url,
            key=key,
            size=sum(p.size for p in ordered),
            etag=etag,
            version=_version(response),
            last_modified=None,
            checksums=_full_object_crc32c(response, etag),
        )

    async def _copy_in_parts(
        self,
        origin: S3Store,
        source_key: str,
        dest_key: str,
        source: Mapping[str, Any],
        attributes: ObjectAttributes | None,
        create_only: bool,
        dest_if_match: str | None,
    ) -> ObjectMeta:
        """A server-side copy too large for CopyObject: a multipart upload whose parts are
        copied from ranges of the source (UploadPartCopy), every range pinned to its etag,
        completed under the destination's conditions."""
        size = int(source["ContentLength"])
        part_size = max(self.copy_part_size, -(-size // MAX_PARTS))
        kept = attributes if attributes is not None else _attributes(source)
        upload_id = await self.create_multipart(dest_key, attributes=kept)
        ranges = [
            (number, start, min(start + part_size, size))
            for number, start in enumerate(range(0, size, part_size), start=1)
        ]
        gate = asyncio.Semaphore(self.copy_part_concurrency)

        async def copy_part(number: int, start: int, end: int) -> PartToken:
            async with gate:
                return await self._copy_part(
                    dest_key, upload_id, number, origin, source_key, start, end, str(source["ETag"])
                )

        try:
            # A failed part cancels the others: nothing keeps copying into an aborted upload.
            async with asyncio.TaskGroup() as group:
                copying = [group.create_task(copy_part(*r)) for r in ranges]
            await self.complete_multipart(
                dest_key,
                upload_id,
                [t.result() for t in copying],
                create_only=create_only,
                if_match=dest_if_match,
            )
        except BaseException as exc:
            await asyncio.shield(self.abort_multipart(dest_key, upload_id))
            first: BaseException = exc
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return await self.head(dest_key)

    async def _copy_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        origin: S3Store,
        source_key: str,
        start: int,
        end: int,
        source_etag: str,
    ) -> PartToken:
        client = await self._s3()
        with self._errors(origin.url_for(source_key)):
            response = await client.upload_part_copy(
                Bucket=self.bucket,
                Key=self._full(key),
                UploadId=upload_id,
                PartNumber=part_number,
                CopySource={"Bucket": self.bucket, "Key": origin._full(source_key)},
                CopySourceRange=f"bytes={start}-{end - 1}",
                CopySourceIfMatch=source_etag,
            )
        result = response.get("CopyPartResult") or {}
        crc = result.get("ChecksumCRC32C")
        return PartToken(
            part_number,
            str(result["ETag"]),
            end - start,
            {ChecksumKind.CRC32C: str(crc)} if crc else {},
        )

    async def _destination_conditions(
        self, key: str, create_only: bool, if_match: str | None, *, copy: bool
    ) -> dict[str, str]:
        """The parameters that condition a completion or a ``copy`` on what ``key`` holds. S3
        checks them on the request itself, atomically; moto ignores If-Match on completions
        and both conditions on CopyObject, so the key is also compared first there (atomic on
        S3, with a window on moto). A create-only completion needs no look: moto honours it."""
        if not create_only and if_match is None:
            return {}
        url = self.url_for(key)
        if create_only and if_match is not None:
            raise InvalidArgument("create_only and if_match exclude each other", url=url)
        if create_only and not copy:
            return {"IfNoneMatch": "*"}
        try:
            current = (await self.head(key)).etag
        except NotFound:
            current = None
        if create_only:
            if current is not None:
                raise AlreadyExists(f"object already exists (etag {current})", url=url)
            return {"IfNoneMatch": "*"}
        assert if_match is not None
        if current is None or current.strip('"') != if_match.strip('"'):
            raise PreconditionFailed(f"etag is {current}, not {if_match}", url=url)
        return {"IfMatch": if_match}

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        url = self.url_for(key)
        full = self._full(key)
        client = await self._s3()
        with self._errors(url):
            try:
                await client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload_id
                )
            except ClientError as exc:
                if _code(exc) != "NoSuchUpload":
                    raise

    async def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        client = await self._s3()
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "EncodingType": "url",
        }
        cut = len(self.prefix)
        while True:
            with self._errors(self.url_for(prefix)):
                page = await client.list_multipart_uploads(**params)
            for upload in page.get("Uploads") or ():
                yield MultipartUpload(
                    key=_decode_key(upload["Key"])[cut:],
                    upload_id=str(upload["UploadId"]),
                    initiated=upload.get("Initiated"),
                )
            next_key = page.get("NextKeyMarker")
            if not page.get("IsTruncated") or not next_key:
                return
            params["KeyMarker"] = _decode_key(next_key)
            params["UploadIdMarker"] = page.get("NextUploadIdMarker") or ""

    # -- server-side copy -----------------------------------------------------------------

    async def copy_within(
        self,
        source_key: str,
        dest_key: str,
        *,
        if_match: str | None = None,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        dest_if_match: str | None = None,
    ) -> ObjectMeta:
        return await self._copy(
            self, source_key, dest_key, if_match, attributes, create_only, dest_if_match
        )

    def copies_from(self, source: ObjectStore) -> bool:
        """Any S3 store on the same bucket through the same endpoint and credentials: stores
        are rooted at prefixes (a route's source and destination), the bucket is one."""
        return (
            isinstance(source, S3Store)
            and source.bucket == self.bucket
            and source._access == self._access
        )

    async def copy_from(
        self,
        source: ObjectStore,
        source_key: str,
        dest_key: str,
        *,
        if_match: str | None = None,
        attributes: ObjectAttributes | None = None,
        inspect: Callable[[memoryview, int], None] | None = None,
        extra_metadata: Callable[[], Mapping[str, str]] | None = None,
        create_only: bool = False,
        dest_if_match: str | None = None,
    ) -> ObjectMeta:
        if not isinstance(source, S3Store) or not self.copies_from(source):
            raise NotSupported(
                f"s3:// cannot copy from {source.root_url} itself", url=self.url_for(dest_key)
            )
        return await self._copy(
            source, source_key, dest_key, if_match, attributes, create_only, dest_if_match
        )

    async def _copy(
        self,
        origin: S3Store,
        source_key: str,
        dest_key: str,
        if_match: str | None,
        attributes: ObjectAttributes | None,
        create_only: bool = False,
        dest_if_match: str | None = None,
    ) -> ObjectMeta:
        """CopyObject (or UploadPartCopy) from ``source_key`` of ``origin``, a store on this
        bucket rooted at its own prefix, conditioned on the destination key as a put is."""
        source_url = origin.url_for(source_key)
        dest_url = self.url_for(dest_key)
        source_full = origin._full(source_key)
        dest_full = self._full(dest_key)
        client = await self._s3()
        # The HEAD gives the size (which CopyObject does not return, and which decides
        # whether CopyObject can copy at all) and checks If-Match even on servers that ignore
        # CopySourceIfMatch (moto does); the copy is then pinned to the etag seen here.
        head_params: dict[str, Any] = {"Bucket": self.bucket, "Key": source_full}
        if if_match is not None:
            head_params["IfMatch"] = if_match
        with self._errors(source_url):
            source = await client.head_object(**head_params)
        size = int(source["ContentLength"])
        if size > self.copy_in_parts_above:
            return await self._copy_in_parts(
                origin, source_key, dest_key, source, attributes, create_only, dest_if_match
            )
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": dest_full,
            "CopySource": {"Bucket": self.bucket, "Key": source_full},
            "CopySourceIfMatch": source["ETag"],
            **await self._destination_conditions(dest_key, create_only, dest_if_match, copy=True),
        }
        if attributes is None:
            params["MetadataDirective"] = "COPY"
            kept = _attributes(source)
        else:
            params["MetadataDirective"] = "REPLACE"
            params.update(_attribute_params(attributes))
            kept = attributes
        with self._errors(
            dest_url, create_only=create_only, missing_key_is_mismatch=dest_if_match is not None
        ):
            response = await client.copy_object(**params)
        result = response.get("CopyObjectResult") or {}
        etag = result.get("ETag")
        return ObjectMeta(
            url=dest_url,
            key=dest_key,
            size=size,
            etag=etag,
            version=_version(response),
            last_modified=result.get("LastModified"),
            attributes=kept,
            checksums=_full_object_crc32c(result, etag),
        )
