"""AzureStore: the clients, error context, name checks and object operations of one
container prefix; multipart uploads (``connectors.azure.multipart``) and server-side copies
(``connectors.azure.copy``) are delegated."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar, Self

import aiohttp
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobProperties
from azure.storage.blob._generated.models import ModifiedAccessConditions
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient, LinearRetry

from connectors.azure.copy import AzureServerSideCopy
from connectors.azure.errors import error_code, mapped_errors
from connectors.azure.fields import (
    attributes_of,
    check_echoed_crc64,
    content_settings,
    md5_reported,
    write_crc64,
)
from connectors.azure.multipart import AzureMultipart
from connectors.azure.names import (
    NAME_RULE,
    UPLOADS_PREFIX,
    check_attributes,
    check_container_url,
    name_problem,
)
from connectors.azure.transport import Transport, new_session, new_transport
from connectors.azure_credentials import (
    NO_CREDENTIALS,
    AzureCredentials,
    AzureCredentialsError,
    close_credential,
)
from connectors.azure_direct import AzureDirectRequests, BlobAnswer
from connectors.base import (
    Buffer,
    ChecksumKind,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    Limits,
    MiB,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PermissionDenied,
    StoreURL,
    check_key,
    clip_range,
)
from connectors.credentials import installed
from connectors.delegated import DelegatedMultipart

_GET_CHUNK = 8 * MiB
_GET_CONCURRENCY = 4
_BLOB_CLIENTS_KEPT = 1024

#: The environment variable that, set to 0, sends small-object requests through the SDK too.
DIRECT_REQUESTS_VARIABLE = "REPLICATOR_AZURE_DIRECT_REQUESTS"


class AzureStore(DelegatedMultipart):
    scheme: ClassVar[str] = "az"
    limits = Limits(
        min_part_size=1,
        max_part_size=4000 * MiB,
        max_parts=50_000,
        max_object_size=50_000 * 4000 * MiB,
        max_single_put=5000 * MiB,
        max_key_bytes=1024,
        native_checksums=frozenset({ChecksumKind.MD5, ChecksumKind.CRC64}),
        multipart=True,
        server_side_copy=True,
        versioned_reads=False,
        metadata_at_complete=True,
        streamed_reads=True,
        write_checksum=ChecksumKind.CRC64,
        server_side_copy_via="Copy Blob",
        server_side_copy_scope="the containers of one storage account and credentials",
    )

    def __init__(
        self,
        container: str,
        prefix: str,
        credentials: AzureCredentials | None,
        *,
        account: str | None = None,
        missing: str = NO_CREDENTIALS,
    ) -> None:
        where = f"{container}@{account}" if account else container
        super().__init__(f"az://{where}/{prefix}")
        self._container_name = container
        self._prefix = prefix
        # None: no credentials were found; ``missing`` says why, on first use.
        self._credentials = credentials
        self._missing = missing
        self._account_name = credentials.account if credentials else account
        self._origin = credentials.origin if credentials else ""
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._service: BlobServiceClient | None = None
        self._container_client: ContainerClient | None = None
        # Blob clients by name, the most recently used last: building one builds the SDK's
        # generated client and its pipeline (about half a millisecond of CPU), and a copy
        # asks for the same blob's client several times.
        self._blob_clients: OrderedDict[str, BlobClient] = OrderedDict()
        self._credential: Any = None
        self._endpoint = "Azure Blob endpoint"
        self.direct_requests = os.environ.get(DIRECT_REQUESTS_VARIABLE, "1") != "0"
        self._direct: AzureDirectRequests | None = None
        self._multipart = AzureMultipart(self)
        self._server_side_copy = AzureServerSideCopy(self)

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        """``az://container/prefix`` is the environment's default account;
        ``az://container@account/prefix`` names the account, whose credentials come from the
        installed ``connectors.credentials`` (or the environment, if it is the default)."""
        container, _, account = url.container.partition("@")
        check_container_url(container, account)
        # Read now, not on first use: the store keeps the credentials it was opened with.
        try:
            default: AzureCredentials | None = AzureCredentials.from_environment()
        except AzureCredentialsError:
            default = None
        if not account:
            return cls(container, url.path, default)
        credentials = installed().azure_for(account)
        if credentials is None and default is not None and default.account == account:
            credentials = default
        missing = (
            f"no credentials for Azure storage account {account!r}: configure them "
            "([[credentials]] azure_account) or make it the environment's default account"
        )
        return cls(container, url.path, credentials, account=account, missing=missing)

    # -- clients -------------------------------------------------------------------------

    def _new_service(self, transport: Transport) -> BlobServiceClient:
        options: dict[str, Any] = {
            "transport": transport,
            # The engine owns the retry policy; one SDK-level retry at most so that the two
            # never multiply, with a short back-off instead of the SDK's 15 s.
            "retry_policy": LinearRetry(backoff=1, random_jitter_range=1, retry_total=1),
            # Put Blob takes up to 5000 MiB: never let the SDK split a put into blocks.
            "max_single_put_size": self.limits.max_single_put,
            "max_chunk_get_size": _GET_CHUNK,
        }
        if self._credentials is None:
            raise PermissionDenied(self._missing, url=self.root_url)
        try:
            self._credential = self._credentials.credential()
        except AzureCredentialsError as exc:
            raise InvalidArgument(str(exc), url=self.root_url) from None
        return BlobServiceClient(
            self._credentials.endpoint("blob"), credential=self._credential, **options
        )

    async def _container(self) -> ContainerClient:
        if self._container_client is not None:
            return self._container_client
        async with self._lock:
            if self._container_client is None:
                session = new_session()
                transport = new_transport(session)
                try:
                    service = self._new_service(transport)
                except BaseException:
                    await session.close()
                    raise
                parts = urllib.parse.urlsplit(service.url)
                # Named in error messages: scheme, host and path only, never a SAS query.
                self._endpoint = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
                self._session = session
                self._service = service
                self._container_client = service.get_container_client(self._container_name)
                if self.direct_requests and AzureDirectRequests.supports(self._credential):
                    self._direct = AzureDirectRequests(
                        session,
                        f"{self._endpoint}/{self._container_name}",
                        self._credential,
                    )
            return self._container_client

    async def _blob(self, name: str) -> BlobClient:
        container = await self._container()
        client = self._blob_clients.get(name)
        if client is None:
            client = self._blob_clients[name] = container.get_blob_client(name)
            if len(self._blob_clients) > _BLOB_CLIENTS_KEPT:
                self._blob_clients.popitem(last=False)
        else:
            self._blob_clients.move_to_end(name)
        return client

    async def close(self) -> None:
        async with self._lock:
            service, session, credential = self._service, self._session, self._credential
            self._service = self._session = self._container_client = self._credential = None
            self._direct = None
            self._blob_clients.clear()
            if service is not None:
                await service.close()
            if session is not None:
                await session.close()
            if credential is not None:
                await close_credential(credential)

    # -- error mapping -------------------------------------------------------------------

    def _errors(
        self, url: str, *, quiet_missing_blob: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        return mapped_errors(self, url, quiet_missing_blob=quiet_missing_blob)

    # -- helpers -------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        name = self._prefix + key
        url = self.url_for(key)
        check_key(name, self.limits, url, rule=NAME_RULE)
        problem = name_problem(name)
        if problem:
            raise InvalidKey(problem, url=url)
        return name

    def _meta(self, key: str, props: BlobProperties) -> ObjectMeta:
        return ObjectMeta(
            url=self.url_for(key),
            key=key,
            size=props.size,
            etag=props.etag,
            version=props.version_id,
            last_modified=props.last_modified,
            attributes=attributes_of(props),
            checksums=md5_reported(props.content_settings.content_md5),
        )

    def _answer_meta(self, key: str, answer: BlobAnswer) -> ObjectMeta:
        """``_meta`` of a direct Get Blob's or Get Blob Properties' answer."""
        return ObjectMeta(
            url=self.url_for(key),
            key=key,
            size=answer.size or 0,
            etag=answer.etag,
            version=answer.version,
            last_modified=answer.last_modified,
            attributes=ObjectAttributes(
                content_type=answer.content_type,
                cache_control=answer.cache_control,
                content_encoding=answer.content_encoding,
                content_disposition=answer.content_disposition,
                user_metadata=answer.metadata,
            ),
            checksums={ChecksumKind.MD5: answer.content_md5} if answer.content_md5 else {},
        )

    async def _upload(
        self,
        client: BlobClient,
        data: bytes,
        attributes: ObjectAttributes,
        crc64: str,
        **conditions: Any,
    ) -> dict[str, Any]:
        # Put Blob: the service checks the transactional CRC64 and computes the blob's
        # Content-MD5 itself, which head then reports.
        response: dict[str, Any] = await client.upload_blob(
            data,
            length=len(data),
            content_settings=content_settings(attributes),
            metadata=dict(attributes.user_metadata),
            headers={"x-ms-content-crc64": crc64},
            **conditions,
        )
        return response

    # -- objects -------------------------------------------------------------------------

    async def create_container(self) -> None:
        container = await self._container()
        with self._errors(self.root_url):
            try:
                await container.create_container()
            except HttpResponseError as exc:
                if error_code(exc) != "ContainerAlreadyExists":
                    raise

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        name = self._name(key)
        url = self.url_for(key)
        await self._container()
        if self._direct is not None:
            with self._errors(url):
                answer = await self._direct.head(name, version=version)
            return self._answer_meta(key, answer)
        client = await self._blob(name)
        with self._errors(url):
            props = await client.get_blob_properties(version_id=version)
        return self._meta(key, props)

    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> bytes:
        name = self._name(key)
        url = self.url_for(key)
        if start < 0 or (end is not None and end < start):
            raise InvalidArgument(f"invalid byte range [{start}, {end})", url=url)
        client = await self._blob(name)
        conditions: dict[str, Any] = {"version_id": version}
        if if_match is not None:
            conditions.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        if end == start:
            with self._errors(url):
                props = await client.get_blob_properties(**conditions)
            clip_range(props.size, start, end, url)
            return b""
        with self._errors(url):
            try:
                downloader = await client.download_blob(
                    offset=None if start == 0 and end is None else start,
                    length=None if end is None else end - start,
                    max_concurrency=_GET_CONCURRENCY,
                    # Bytes as stored: a gzip Content-Encoding must not be undone.
                    decompress=False,
                    **conditions,
                )
            except HttpResponseError as exc:
                if exc.status_code != 416:
                    raise
                if start == 0:
                    return b""  # only an empty blob refuses a range starting at 0
                raise InvalidArgument(
                    f"range start {start} is past the end of the object", url=url
                ) from None
            # Azurite answers a range starting exactly at the end with 206 and no bytes where
            # Azure answers 416; a non-empty range that yields nothing started past the end.
            if start > 0 and downloader.size == 0:
                raise InvalidArgument(f"range start {start} is past the end of the object", url=url)
            data: bytes = await downloader.readall()
        return data

    async def get(
        self, key: str, *, if_match: str | None = None, version: str | None = None
    ) -> tuple[ObjectMeta, bytes]:
        """One GET: its answer carries the blob's properties and metadata (the whole blob's
        MD5 in ``x-ms-blob-content-md5``), so no HEAD goes before it."""
        name = self._name(key)
        url = self.url_for(key)
        await self._container()
        if self._direct is not None:
            with self._errors(url):
                answer, data = await self._direct.get(name, if_match=if_match, version=version)
            meta = self._answer_meta(key, answer)
        else:
            client = await self._blob(name)
            conditions: dict[str, Any] = {"version_id": version}
            if if_match is not None:
                conditions.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
            with self._errors(url):
                downloader = await client.download_blob(
                    max_concurrency=_GET_CONCURRENCY,
                    # Bytes as stored: a gzip Content-Encoding must not be undone.
                    decompress=False,
                    **conditions,
                )
                data = await downloader.readall()
            meta = self._meta(key, downloader.properties)
        if len(data) != meta.size:
            raise IntegrityError(f"read {len(data)} bytes of {meta.size}", url=url)
        stored = meta.checksums.get(ChecksumKind.MD5)
        # A whole blob's stored MD5 comes with it: bytes damaged on the way are refused here,
        # not copied on.
        if stored is not None and base64.b64encode(hashlib.md5(data).digest()).decode() != stored:
            raise IntegrityError("the blob read differs from its stored MD5", url=url)
        return meta, data

    async def read_stream(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> AsyncIterator[bytes]:
        """One ranged GET whose body is yielded as it arrives, in the transport's blocks.

        Through the SDK's generated client: ``download_blob`` reads whole ranges into memory
        and joins them (and fetches in parallel chunks), holding object bytes outside the
        engine's byte budget.
        """
        name = self._name(key)
        url = self.url_for(key)
        if not 0 <= start < end:
            raise InvalidArgument(f"invalid byte range [{start}, {end}) for a stream", url=url)
        client = await self._blob(name)
        pinned = ModifiedAccessConditions(if_match=if_match) if if_match is not None else None
        with self._errors(url):
            chunks = await client._client.blob.download(
                range=f"bytes={start}-{end - 1}",
                version_id=version,
                modified_access_conditions=pinned,
                # Bytes as stored: a gzip Content-Encoding must not be undone.
                decompress=False,
            )
            async for chunk in chunks:
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
        name = self._name(key)
        url = self.url_for(key)
        attributes = attributes or ObjectAttributes()
        check_attributes(attributes, url)
        if create_only and if_match is not None:
            raise InvalidArgument("create_only and if_match exclude each other", url=url)
        self.check_single_put(key, len(data))
        crc64 = await write_crc64(data, checksums)
        await self._container()
        if self._direct is not None:
            with self._errors(url):
                answer = await self._direct.put(
                    name,
                    data,
                    crc64=crc64,
                    content_type=attributes.content_type,
                    cache_control=attributes.cache_control,
                    content_encoding=attributes.content_encoding,
                    content_disposition=attributes.content_disposition,
                    metadata=attributes.user_metadata,
                    create_only=create_only,
                    if_match=if_match,
                )
            echoed = answer.content_crc64
            response: dict[str, Any] = {
                "etag": answer.etag,
                "version_id": answer.version,
                "last_modified": answer.last_modified,
                "content_crc64": base64.b64decode(echoed) if echoed else None,
            }
        else:
            conditions: dict[str, Any] = {"overwrite": not create_only}
            if if_match is not None:
                conditions.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
            client = await self._blob(name)
            # upload_blob takes bytes only (and then shares them rather than copying).
            body = data if isinstance(data, bytes) else bytes(data)
            with self._errors(url):
                response = await self._upload(client, body, attributes, crc64, **conditions)
        check_echoed_crc64(response, crc64, url)
        return ObjectMeta(
            url=url,
            key=key,
            size=len(data),
            etag=response.get("etag"),
            version=response.get("version_id"),
            last_modified=response.get("last_modified"),
            attributes=attributes,
            checksums={ChecksumKind.CRC64: crc64},
        )

    async def _blob_pages(
        self, name_prefix: str, url: str, page_size: int | None = None
    ) -> AsyncIterator[list[BlobProperties]]:
        """The blobs whose names start with ``name_prefix`` (with metadata), a page per
        request; SDK errors are mapped against ``url``."""
        container = await self._container()
        pages = container.list_blobs(
            name_starts_with=name_prefix or None, include=["metadata"], results_per_page=page_size
        ).by_page()
        while True:
            with self._errors(url):
                try:
                    page = await anext(pages)
                except StopAsyncIteration:
                    return
                blobs = [blob async for blob in page]
            yield blobs

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[ObjectMeta]:
        full_prefix = self._prefix + prefix
        after = None if start_after is None else self._prefix + start_after
        async for blobs in self._blob_pages(full_prefix, self.root_url + prefix, page_size):
            for blob in blobs:
                if blob.name.startswith(UPLOADS_PREFIX):
                    continue
                if after is not None and blob.name <= after:
                    continue
                yield self._meta(blob.name[len(self._prefix) :], blob)

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        name = self._name(key)
        client = await self._blob(name)
        conditions: dict[str, Any] = {}
        if if_match is not None:
            conditions.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        with self._errors(self.url_for(key), quiet_missing_blob=if_match is None):
            await client.delete_blob(**conditions)

    # -- server-side copy ----------------------------------------------------------------

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
        """Any Azure store of the same storage account with the same credentials, in any
        container: stores are rooted at prefixes, so a route within one account has two
        different roots."""
        return (
            isinstance(source, AzureStore)
            and source._account_name == self._account_name
            and source._credentials == self._credentials
            and self._credentials is not None
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
        if not isinstance(source, AzureStore) or not self.copies_from(source):
            raise NotSupported(
                f"az:// cannot copy from {source.root_url} itself", url=self.url_for(dest_key)
            )
        return await self._server_side_copy.copy(
            source, source_key, dest_key, if_match, attributes, create_only, dest_if_match
        )
