"""S3Store: the client, error context, key checks and object operations of one S3 bucket
prefix; multipart uploads (``connectors.s3.multipart``) and server-side copies
(``connectors.s3.copy``) are delegated."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, ClassVar, Self

import aiohttp
from aiobotocore.session import AioSession
from botocore.exceptions import BotoCoreError, ClientError

from connectors.aws_session import aws_session, region_of
from connectors.base import (
    AlreadyExists,
    Buffer,
    ChecksumKind,
    ContainerNotFound,
    GiB,
    InvalidArgument,
    Limits,
    MiB,
    NotFound,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PermissionDenied,
    PreconditionFailed,
    StoreError,
    StoreURL,
    check_key,
    clip_range,
)
from connectors.credentials import AwsAccess, installed
from connectors.delegated import DelegatedMultipart
from connectors.payload import body_chunks
from connectors.s3.client import (
    client_config,
    configured_endpoint,
    open_direct,
    register_send_hooks,
)
from connectors.s3.copy import S3ServerSideCopy
from connectors.s3.errors import KEY_RULE, UnsatisfiableRange, error_code, map_error
from connectors.s3.fields import (
    attribute_params,
    attributes_of,
    decode_key,
    full_object_crc32c,
    request_body,
    version_of,
    write_crc32c,
)
from connectors.s3.multipart import S3Multipart
from connectors.s3_direct import S3DirectRequests

DEFAULT_REGION = "us-east-1"
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
#: The environment variable that, set to 0, sends small-object requests through the SDK too.
DIRECT_REQUESTS_VARIABLE = "REPLICATOR_S3_DIRECT_REQUESTS"


class S3Store(DelegatedMultipart):
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
        self._multipart = S3Multipart(self)
        self._server_side_copy = S3ServerSideCopy(self)

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
        endpoint_url = configured_endpoint(session, self._access)
        if endpoint_url:
            self._endpoint = str(endpoint_url)
        config = client_config(self.location.removeprefix("s3:"), path_style=bool(endpoint_url))
        client = await self._exit_stack.enter_async_context(
            session.create_client("s3", config=config, endpoint_url=endpoint_url)
        )
        register_send_hooks(client, self.location)
        self._endpoint = str(client.meta.endpoint_url)
        if self.direct_requests:
            self._direct = await open_direct(
                session, client, self.bucket, self.location, path_style=bool(endpoint_url)
            )
        return client

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
            version=version_of(response),
            last_modified=response.get("LastModified"),
            attributes=attributes_of(response),
            checksums=full_object_crc32c(response, etag),
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
                if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
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
        except UnsatisfiableRange:
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
        checksum = write_crc32c(data, checksums)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full,
            "Body": request_body(data),
            "ChecksumAlgorithm": "CRC32C",
            "ChecksumCRC32C": checksum,
            **attribute_params(attributes),
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
            version=version_of(response),
            last_modified=None,
            attributes=attributes,
            checksums=full_object_crc32c(response, etag) or {ChecksumKind.CRC32C: checksum},
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
                key = decode_key(item["Key"])[cut:]
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
        return await self._server_side_copy.copy(
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
        return await self._server_side_copy.copy(
            source, source_key, dest_key, if_match, attributes, create_only, dest_if_match
        )
