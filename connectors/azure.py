"""Azure Blob Storage (``az://container/prefix`` in the default account,
``az://container@account/prefix`` in a named one) on azure-storage-blob's asyncio client.

Credentials (``connectors.azure_credentials``) are resolved when the store is opened: the
default account's from the environment (``AZURE_STORAGE_CONNECTION_STRING``, else
``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY``, ``AZURE_STORAGE_SAS_TOKEN`` or Entra ID
through ``DefaultAzureCredential``); a named account's from the installed
``connectors.credentials`` (key, SAS, connection string or Entra ID, per account).

Integrity: every block and every single put carries a transactional ``x-ms-content-crc64``
(CRC-64/NVME, little-endian), so the service refuses damaged bytes (``Crc64Mismatch``); the
CRC64 the service echoes is compared with the one sent, and part tokens carry it. The caller
usually passes the CRC64 it computed while reading (``checksums``); otherwise it is computed
here (awscrt, ~8 GB/s per core, where MD5 manages ~0.5 GB/s: CRC64 is what keeps the client's
CPU per GiB low). ``head`` reports the blob's Content-MD5 as its full-object MD5 where the
service computed one (a single put); a blob assembled from blocks has none. Azurite computes
CRC64 in JavaScript, so on the emulator a block with an MD5 is accepted ~3x faster; on Azure
both are free to the service, and only the client's hashing differs.

Small objects: Get Blob of a whole blob, Put Blob and Get Blob Properties go straight over
the store's aiohttp session (``connectors.azure_direct``), authorised with the account key
(Shared Key, signed by the SDK's own policy) or the SAS token, without azure-core's pipeline,
whose per-request cost exceeded the rest of a small blob's copy. Entra ID credentials keep
the SDK for them, and ``REPLICATOR_AZURE_DIRECT_REQUESTS=0`` does too; every other request
always goes through it.

Bodies are sent in slices of the caller's buffer (``connectors.payload``), and ranged reads
stream (``read_stream``: one GET per range, through the SDK's generated client, because the
public downloader buffers whole ranges and joins them, memory outside the engine's budget).

Multipart uploads are staged blocks of the destination blob with deterministic block ids
(``<upload id>-<part:05d>``, the same width for every block, as Azure requires) committed in
part-number order. Azure has no upload object to list, so each upload also writes a marker
blob ``.replicator-uploads/<upload id>`` at the container root holding the destination key
(metadata) and attributes (body); it is deleted on complete and abort, and the reserved
prefix is hidden from listings and refused as a key. Uncommitted blocks of a blob that was
never committed are dropped on abort by deleting the blob (Azurite removes them; Azure
otherwise garbage-collects them after 7 days, and any later commit to the name discards them).

Listing: Azure has no start-after and its continuation markers are opaque, so ``start_after``
pages from the beginning of the prefix and skips keys up to it on the client: resuming costs a
listing of every key before the resume point. Keys are yielded in the service's order
(Azurite compares UTF-16 code units, so keys with characters above U+FFFF may sort before
U+E000..U+FFFF, unlike Python's code-point order).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import json
import os
import re
import urllib.parse
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, ClassVar, NoReturn, Self, cast

import aiohttp
import yarl
from awscrt import checksums as crt_checksums
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import BlobBlock, BlobProperties, ContentSettings
from azure.storage.blob._generated.models import ModifiedAccessConditions
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient, LinearRetry

from connectors.azure_credentials import (
    NO_CREDENTIALS,
    AzureCredentials,
    AzureCredentialsError,
    close_credential,
)
from connectors.azure_direct import AzureDirectRequests, BlobAnswer, BlobRequestFailed
from connectors.base import (
    STAGING_PREFIX,
    AlreadyExists,
    Buffer,
    ChecksumKind,
    ContainerNotFound,
    IntegrityError,
    InvalidArgument,
    InvalidKey,
    InvalidStoreURL,
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
    RequestClass,
    StoreError,
    StoreURL,
    Throttled,
    TransientError,
    check_key,
    clip_range,
)
from connectors.credentials import installed
from connectors.observed import request_tracing
from connectors.payload import sliced

UPLOADS_PREFIX = STAGING_PREFIX
_UPLOAD_KEY_META = "replicator_upload_key"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_PART_DIGITS = 5  # max_parts is 50,000: five digits keep every block id the same length

_CONTAINER_NAME = re.compile(r"^(?:\$root|\$web|\$logs|[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9])$")
_METADATA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
_XML_UNSAFE = re.compile("[\x00-\x1f\x7f\ufffe\uffff]")
_MAX_SEGMENTS = 254
_NAME_RULE = " (Azure Blob names: at most 1,024 characters, enforced here as UTF-8 bytes)"

_POOL_CONNECTIONS = 128
_CONNECT_TIMEOUT_S = 10
_READ_TIMEOUT_S = 120
_GET_CHUNK = 8 * MiB
_DATA_BLOCK = 256 * 1024
_GET_CONCURRENCY = 4
_BLOB_CLIENTS_KEPT = 1024
_THREAD_HASH_BYTES = 8 * MiB
_COPY_POLL_S = (0.1, 2.0)

_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")
#: The environment variable that, set to 0, sends small-object requests through the SDK too.
DIRECT_REQUESTS_VARIABLE = "REPLICATOR_AZURE_DIRECT_REQUESTS"


def _proxy_in_environment() -> bool:
    """Whether the environment names an HTTP(S) proxy (HTTP_PROXY, HTTPS_PROXY, ...)."""
    return any(scheme in ("http", "https") for scheme in urllib.request.getproxies())


# -- checksums -------------------------------------------------------------------------------


def crc64_b64(data: Buffer) -> str:
    """Azure's CRC64 of ``data`` in wire form: CRC-64/NVME, 8 bytes little-endian, base64."""
    value = crt_checksums.crc64nvme(data)
    return base64.b64encode(value.to_bytes(8, "little")).decode()


async def _write_crc64(data: Buffer, checksums: Mapping[ChecksumKind, str] | None) -> str:
    """The CRC64 to send with a write: the caller's, else computed (large buffers off the
    event loop; awscrt releases the GIL)."""
    given = (checksums or {}).get(ChecksumKind.CRC64)
    if given is not None:
        return given
    if len(data) > _THREAD_HASH_BYTES:
        return await asyncio.to_thread(crc64_b64, data)
    return crc64_b64(data)


def _md5_reported(digest: bytes | bytearray | None) -> dict[ChecksumKind, str]:
    return {ChecksumKind.MD5: base64.b64encode(bytes(digest)).decode()} if digest else {}


# -- names and attributes --------------------------------------------------------------------


def _name_problem(name: str) -> str | None:
    """Why Azure cannot hold the blob name ``name`` byte-exact, or None."""
    if name.startswith(UPLOADS_PREFIX):
        return f"blob names under {UPLOADS_PREFIX!r} are reserved for in-progress multipart uploads"
    if "\\" in name:
        return "Azure Blob names cannot contain '\\': the service turns it into '/'"
    bad = _XML_UNSAFE.search(name)
    if bad:
        return (
            f"Azure Blob names cannot contain control characters or U+FFFE/U+FFFF "
            f"(found U+{ord(bad.group()):04X}): listings are XML and cannot carry them"
        )
    segments = name.split("/")
    if len(segments) > _MAX_SEGMENTS:
        return f"Azure Blob names have at most {_MAX_SEGMENTS} path segments, not {len(segments)}"
    if any(segment.endswith(".") for segment in segments):
        return (
            "Azure Blob names must not have a path segment ending in '.' (URL normalisation "
            "removes '.' and '..' segments and trailing dots)"
        )
    return None


def _check_header_value(what: str, value: str, url: str) -> None:
    if not _HEADER_VALUE.match(value) or value != value.strip(" \t"):
        raise InvalidArgument(
            f"{what} must be printable US-ASCII without leading or trailing blanks "
            "(Azure carries it as an HTTP header)",
            url=url,
        )


def _check_attributes(attributes: ObjectAttributes, url: str) -> None:
    for what, value in (
        ("Content-Type", attributes.content_type),
        ("Cache-Control", attributes.cache_control),
        ("Content-Encoding", attributes.content_encoding),
        ("Content-Disposition", attributes.content_disposition),
    ):
        if value is not None:
            _check_header_value(what, value, url)
    seen: dict[str, str] = {}
    for name, value in attributes.user_metadata.items():
        if not _METADATA_NAME.match(name):
            raise InvalidArgument(
                f"user-metadata name {name!r} is not allowed: Azure metadata names must be "
                "C# identifiers (a letter or '_', then letters, digits or '_')",
                url=url,
            )
        folded = name.lower()
        if folded in seen:
            raise InvalidArgument(
                f"user-metadata names {seen[folded]!r} and {name!r} are the same name on Azure "
                "(metadata names are case-insensitive)",
                url=url,
            )
        seen[folded] = name
        _check_header_value(f"user-metadata value of {name!r}", value, url)


def _content_settings(attributes: ObjectAttributes) -> ContentSettings:
    return ContentSettings(
        content_type=attributes.content_type,
        content_encoding=attributes.content_encoding,
        cache_control=attributes.cache_control,
        content_disposition=attributes.content_disposition,
    )


def _attributes_of(props: BlobProperties) -> ObjectAttributes:
    settings = props.content_settings
    return ObjectAttributes(
        content_type=settings.content_type,
        cache_control=settings.cache_control,
        content_encoding=settings.content_encoding,
        content_disposition=settings.content_disposition,
        user_metadata=dict(props.metadata or {}),
    )


def _attributes_to_json(name: str, attributes: ObjectAttributes) -> bytes:
    return json.dumps(
        {
            "key": name,
            "content_type": attributes.content_type,
            "cache_control": attributes.cache_control,
            "content_encoding": attributes.content_encoding,
            "content_disposition": attributes.content_disposition,
            "user_metadata": dict(attributes.user_metadata),
        }
    ).encode()


def _attributes_from_json(raw: bytes) -> tuple[str, ObjectAttributes]:
    doc = json.loads(raw)
    return doc["key"], ObjectAttributes(
        content_type=doc["content_type"],
        cache_control=doc["cache_control"],
        content_encoding=doc["content_encoding"],
        content_disposition=doc["content_disposition"],
        user_metadata=doc["user_metadata"],
    )


def _encode_marker_key(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_marker_key(value: str) -> str:
    return base64.urlsafe_b64decode(value.encode()).decode()


def block_id(upload_id: str, part_number: int) -> str:
    """The block id of one part, before the SDK base64-encodes it for the wire."""
    return f"{upload_id}-{part_number:0{_PART_DIGITS}d}"


# -- errors ----------------------------------------------------------------------------------


def _header(exc: HttpResponseError, name: str) -> str | None:
    headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
    return headers.get(name)


def _error_code(exc: HttpResponseError) -> str:
    # The storage SDK sets error_code (it rewrites it for create-only conflicts); the header
    # is the fallback for errors it did not process.
    code: Any = getattr(exc, "error_code", None) or _header(exc, "x-ms-error-code")
    if isinstance(code, Enum):
        code = code.value
    return str(code) if code else ""


def _retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# -- the store -------------------------------------------------------------------------------


def request_class(method: str, url: yarl.URL, headers: Mapping[str, str]) -> RequestClass:
    """A Blob service request as Azure bills it (``connectors.base.RequestClass``)."""
    comp = url.query.get("comp")
    if method == "DELETE":
        return RequestClass.DELETE
    if method == "HEAD":
        return RequestClass.HEAD
    if method == "GET":
        if comp in ("list", "blocklist"):
            return RequestClass.LIST
        if comp is not None or url.query.get("restype") == "container":
            return RequestClass.HEAD  # properties or metadata of a container or a blob
        return RequestClass.GET
    if "x-ms-copy-source" in {name.lower() for name in headers}:
        return RequestClass.COPY  # Copy Blob, Put Block From URL
    return RequestClass.PUT


# azure-core exports AioHttpTransport through a lazy module __getattr__, so mypy sees Any.
class _Transport(AioHttpTransport):  # type: ignore[misc]
    """Large bytes-like bodies go out in slices of the caller's buffer (connectors.payload),
    never copied whole; the payload is reusable, so SDK retries still work."""

    def _get_request_data(self, request: Any) -> Any:
        return sliced(super()._get_request_data(request))


class AzureStore(ObjectStore):
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

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        """``az://container/prefix`` is the environment's default account;
        ``az://container@account/prefix`` names the account, whose credentials come from the
        installed ``connectors.credentials`` (or the environment, if it is the default)."""
        container, _, account = url.container.partition("@")
        if not _CONTAINER_NAME.match(container):
            raise InvalidStoreURL(
                f"{container!r} is not an Azure container name: 3-63 lowercase letters, "
                "digits and single hyphens, starting and ending with a letter or digit"
            )
        if account and not _ACCOUNT_NAME.match(account):
            raise InvalidStoreURL(
                f"{account!r} is not an Azure storage account name: 3-24 lowercase letters "
                "and digits"
            )
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

    def _new_service(self, transport: _Transport) -> BlobServiceClient:
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
                session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=_POOL_CONNECTIONS),
                    trace_configs=[request_tracing("az", request_class)],
                    cookie_jar=aiohttp.DummyCookieJar(),
                    auto_decompress=False,
                    # The environment's proxy settings are honoured as the SDK's own
                    # transport does, but only when it names a proxy: aiohttp's trust_env
                    # looks up the proxy and netrc in a worker thread on every request,
                    # which costs a small blob's copy more CPU than its bytes.
                    trust_env=_proxy_in_environment(),
                )
                transport = _Transport(
                    session=session,
                    session_owner=False,
                    connection_timeout=_CONNECT_TIMEOUT_S,
                    read_timeout=_READ_TIMEOUT_S,
                    # The SDK sets 256 KiB on transports it builds; azure-core's default is 4 KiB.
                    connection_data_block_size=_DATA_BLOCK,
                )
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

    @contextlib.contextmanager
    def _errors(self, url: str, *, quiet_missing_blob: bool = False) -> Iterator[None]:
        """Map SDK failures into connectors.base errors. Messages carry the status, the
        service error code and the request id, never the response body or credentials."""
        try:
            yield
        except StoreError:
            raise
        except ClientAuthenticationError as exc:
            if exc.response is not None:
                self._raise_http(exc, url)
            # No answer from the service: the credential could not get an Entra ID token.
            first_line = str(exc.message or exc).splitlines()[0][:300]
            raise PermissionDenied(
                f"no Entra ID token for Azure account {self._account_name} "
                f"({self._origin}): {first_line}",
                url=url,
            ) from None
        except HttpResponseError as exc:
            if quiet_missing_blob and _error_code(exc) == "BlobNotFound":
                return
            self._raise_http(exc, url)
        except BlobRequestFailed as exc:
            self._raise_status(exc.status, exc.error_code, exc.reason, exc.headers, url)
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(
                f"cannot reach {self._endpoint}: {type(exc).__name__}", url=url
            ) from None
        except AzureError as exc:
            raise TransientError(
                f"request to {self._endpoint} failed: {type(exc).__name__}", url=url
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(
                f"cannot reach {self._endpoint}: {type(exc).__name__}", url=url
            ) from None

    def _raise_http(self, exc: HttpResponseError, url: str) -> NoReturn:
        headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
        self._raise_status(exc.status_code or 0, _error_code(exc), exc.reason, headers, url)

    def _raise_status(
        self, status: int, code: str, reason: str | None, headers: Mapping[str, str], url: str
    ) -> NoReturn:
        request_id = headers.get("x-ms-request-id")
        detail = f"HTTP {status} {code or reason or ''}".strip()
        if request_id:
            detail += f", request id {request_id}"
        if code == "ContainerNotFound":
            raise ContainerNotFound(
                f"container {self._container_name!r} does not exist ({detail})", url=url
            ) from None
        if code in {"BlobAlreadyExists", "ContainerAlreadyExists"}:
            raise AlreadyExists(f"already exists ({detail})", url=url) from None
        if code in {"Md5Mismatch", "Crc64Mismatch"}:
            raise IntegrityError(
                f"the service received bytes that do not match their checksum ({detail})", url=url
            ) from None
        if status == 404:
            raise NotFound(f"not found ({detail})", url=url) from None
        if status in {401, 403}:
            raise PermissionDenied(
                f"{self._endpoint} refused the credentials or their permissions ({detail}); "
                f"check the credentials of account {self._account_name} ({self._origin})",
                url=url,
            ) from None
        if status in {409, 412}:
            raise PreconditionFailed(
                f"the object is not in the state the request requires ({detail})", url=url
            ) from None
        if status in {429, 503}:
            raise Throttled(
                f"{self._endpoint} is throttling requests ({detail})",
                url=url,
                retry_after=_retry_after(headers.get("Retry-After")),
            ) from None
        if status >= 500 or status in {0, 408}:
            raise TransientError(f"{self._endpoint} failed ({detail})", url=url) from None
        raise InvalidArgument(f"the service refused the request ({detail})", url=url) from None

    # -- helpers -------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        name = self._prefix + key
        url = self.url_for(key)
        check_key(name, self.limits, url, rule=_NAME_RULE)
        problem = _name_problem(name)
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
            attributes=_attributes_of(props),
            checksums=_md5_reported(props.content_settings.content_md5),
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
            content_settings=_content_settings(attributes),
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
                if _error_code(exc) != "ContainerAlreadyExists":
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
        _check_attributes(attributes, url)
        if create_only and if_match is not None:
            raise InvalidArgument("create_only and if_match exclude each other", url=url)
        self.check_single_put(key, len(data))
        crc64 = await _write_crc64(data, checksums)
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
        self._check_echoed_crc64(response, crc64, url)
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

    @staticmethod
    def _check_echoed_crc64(response: Mapping[str, Any], crc64: str, url: str) -> None:
        echoed = response.get("content_crc64")
        if echoed and base64.b64encode(bytes(echoed)).decode() != crc64:
            raise IntegrityError(
                "the service reports a CRC64 other than the one of the bytes sent", url=url
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

    # -- multipart -----------------------------------------------------------------------

    def _check_upload_id(self, upload_id: str, url: str) -> None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NotFound(f"no multipart upload {upload_id!r}", url=url)

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        name = self._name(key)
        url = self.url_for(key)
        attributes = attributes or ObjectAttributes()
        _check_attributes(attributes, url)
        upload_id = uuid.uuid4().hex
        body = _attributes_to_json(name, attributes)
        marker = await self._blob(UPLOADS_PREFIX + upload_id)
        marker_attributes = ObjectAttributes(
            content_type="application/json",
            user_metadata={_UPLOAD_KEY_META: _encode_marker_key(name)},
        )
        crc64 = crc64_b64(body)
        with self._errors(url):
            response = await self._upload(marker, body, marker_attributes, crc64, overwrite=False)
        self._check_echoed_crc64(response, crc64, url)
        return upload_id

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        # No marker lookup here: a part is one request on the hot path; complete checks it.
        name = self._name(key)
        url = self.url_for(key)
        self._check_upload_id(upload_id, url)
        self.check_part(key, part_number, len(data))
        crc64 = await _write_crc64(data, checksums)
        block = block_id(upload_id, part_number)
        client = await self._blob(name)
        with self._errors(url):
            # stage_block passes any bytes-like body through to the transport uncopied.
            response = await client.stage_block(
                block, cast(bytes, data), length=len(data), headers={"x-ms-content-crc64": crc64}
            )
        self._check_echoed_crc64(response, crc64, url)
        return PartToken(part_number, block, len(data), {ChecksumKind.CRC64: crc64})

    async def _read_marker(self, upload_id: str, url: str) -> tuple[str, ObjectAttributes] | None:
        marker = await self._blob(UPLOADS_PREFIX + upload_id)
        with self._errors(url):
            try:
                raw = await (await marker.download_blob()).readall()
            except HttpResponseError as exc:
                if _error_code(exc) == "BlobNotFound":
                    return None
                raise
        return _attributes_from_json(raw)

    async def _delete_marker(self, upload_id: str, url: str) -> None:
        marker = await self._blob(UPLOADS_PREFIX + upload_id)
        with self._errors(url, quiet_missing_blob=True):
            await marker.delete_blob()

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
        name = self._name(key)
        url = self.url_for(key)
        self._check_upload_id(upload_id, url)
        if create_only and if_match is not None:
            raise InvalidArgument("create_only and if_match exclude each other", url=url)
        conditions: dict[str, Any] = {}
        if create_only:
            conditions.update(match_condition=MatchConditions.IfMissing)
        if if_match is not None:
            conditions.update(etag=if_match, match_condition=MatchConditions.IfNotModified)
        ordered = sorted(parts, key=lambda p: p.part_number)
        numbers = [p.part_number for p in ordered]
        if len(set(numbers)) != len(numbers):
            raise InvalidArgument("a part number is given twice", url=url)
        for part in ordered:
            if part.token != block_id(upload_id, part.part_number):
                raise InvalidArgument(
                    f"part {part.part_number} was not uploaded by upload {upload_id}", url=url
                )
        ids = [p.token for p in ordered]
        client = await self._blob(name)
        marker = await self._read_marker(upload_id, url)
        if marker is None:
            # A retried complete whose first attempt committed and removed the marker.
            with self._errors(url):
                try:
                    committed, _ = await client.get_block_list("committed")
                except HttpResponseError as exc:
                    if _error_code(exc) != "BlobNotFound":
                        raise
                    committed = []
            if not ids or [b.id for b in committed] != ids:
                raise NotFound(f"no multipart upload {upload_id}", url=url)
        else:
            marker_name, attributes = marker
            if extra_metadata:
                attributes = replace(
                    attributes, user_metadata={**attributes.user_metadata, **extra_metadata}
                )
            if marker_name != name:
                raise NotFound(f"multipart upload {upload_id} is for another key", url=url)
            try:
                with self._errors(url):
                    await client.commit_block_list(
                        [BlobBlock(block_id=i) for i in ids],
                        content_settings=_content_settings(attributes),
                        metadata=dict(attributes.user_metadata),
                        **conditions,
                    )
            except PreconditionFailed as exc:
                if create_only:
                    raise AlreadyExists(str(exc), url=url) from None
                raise
        meta = await self.head(key)
        expected = sum(p.size for p in ordered)
        if meta.size != expected:
            # Never leave a wrong object visible; the marker stays so the upload can be aborted.
            with contextlib.suppress(StoreError):
                await self.delete(key, if_match=meta.etag)
            raise IntegrityError(
                f"committed blob holds {meta.size} bytes, the parts hold {expected}", url=url
            )
        await self._delete_marker(upload_id, url)
        return meta

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        name = self._name(key)
        url = self.url_for(key)
        if not _UPLOAD_ID.fullmatch(upload_id):
            return
        marker = await self._blob(UPLOADS_PREFIX + upload_id)
        with self._errors(url):
            try:
                props = await marker.get_blob_properties()
            except HttpResponseError as exc:
                if _error_code(exc) != "BlobNotFound":
                    raise
                props = None
        if props is not None and props.metadata.get(_UPLOAD_KEY_META) != _encode_marker_key(name):
            return  # the upload belongs to another key
        await self._drop_staged_blocks(name, upload_id, url)
        if props is not None:
            with self._errors(url, quiet_missing_blob=True):
                await marker.delete_blob(
                    etag=props.etag, match_condition=MatchConditions.IfNotModified
                )

    async def _drop_staged_blocks(self, name: str, upload_id: str, url: str) -> None:
        """Delete the uncommitted blocks of this upload now rather than in 7 days, when that
        is safe: only a blob that was never committed, and only if every block staged on it
        is this upload's (another upload to the same key keeps its blocks)."""
        client = await self._blob(name)
        with self._errors(url):
            try:
                _, uncommitted = await client.get_block_list("uncommitted")
            except HttpResponseError as exc:
                if _error_code(exc) != "BlobNotFound":
                    raise
                return
        if not uncommitted or any(not b.id.startswith(upload_id) for b in uncommitted):
            return
        with self._errors(url):
            try:
                await client.get_blob_properties()
                return  # a committed blob: its name must not be deleted
            except HttpResponseError as exc:
                if _error_code(exc) != "BlobNotFound":
                    raise
        # If-None-Match: * keeps a blob committed in the meantime (Azure honours it).
        with contextlib.suppress(NotFound, PreconditionFailed), self._errors(url):
            await client.delete_blob(match_condition=MatchConditions.IfMissing)

    async def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        full_prefix = self._prefix + prefix
        async for markers in self._blob_pages(UPLOADS_PREFIX, self.root_url + prefix):
            for marker in markers:
                upload_id = marker.name[len(UPLOADS_PREFIX) :]
                encoded = (marker.metadata or {}).get(_UPLOAD_KEY_META)
                if not _UPLOAD_ID.fullmatch(upload_id) or encoded is None:
                    continue
                name = _decode_marker_key(encoded)
                if name.startswith(full_prefix):
                    yield MultipartUpload(
                        name[len(self._prefix) :],
                        upload_id,
                        marker.creation_time or marker.last_modified,
                    )

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
        return await self._copy(
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
        return await self._copy(
            source, source_key, dest_key, if_match, attributes, create_only, dest_if_match
        )

    async def _copy(
        self,
        origin: AzureStore,
        source_key: str,
        dest_key: str,
        if_match: str | None,
        attributes: ObjectAttributes | None,
        create_only: bool,
        dest_if_match: str | None,
    ) -> ObjectMeta:
        """Copy Blob inside the account, from ``source_key`` of ``origin`` (a store of this
        account rooted at its own container and prefix). The source is named by its blob
        URL: the request's own shared key authorises a source in the same account, and with
        a SAS credential the URL carries the SAS. Azurite copies within one instance
        synchronously; Azure may answer ``pending``, so the copy status is polled until it
        settles."""
        source = await origin._blob(origin._name(source_key))
        dest = await self._blob(self._name(dest_key))
        url = self.url_for(dest_key)
        if attributes is not None:
            _check_attributes(attributes, url)
        if create_only and dest_if_match is not None:
            raise InvalidArgument("create_only and if_match exclude each other", url=url)
        options: dict[str, Any] = {}
        if if_match is not None:
            options.update(
                source_etag=if_match, source_match_condition=MatchConditions.IfNotModified
            )
        # Conditions on the destination blob, checked by the service with the copy.
        if create_only:
            options.update(match_condition=MatchConditions.IfMissing)
        if dest_if_match is not None:
            options.update(etag=dest_if_match, match_condition=MatchConditions.IfNotModified)
        if attributes is not None and attributes.user_metadata:
            options["metadata"] = dict(attributes.user_metadata)
        try:
            with self._errors(url):
                response = await dest.start_copy_from_url(source.url, **options)
        except PreconditionFailed as exc:
            if create_only:
                raise AlreadyExists(str(exc), url=url) from None
            raise
        with self._errors(url):
            status = response.get("copy_status")
            delay = _COPY_POLL_S[0]
            while status == "pending":
                await asyncio.sleep(delay)
                delay = min(delay * 2, _COPY_POLL_S[1])
                props = await dest.get_blob_properties()
                status = props.copy.status
                if status not in {"pending", "success"}:
                    raise TransientError(
                        f"server-side copy ended {status}: {props.copy.status_description}",
                        url=url,
                    )
            if attributes is not None:
                props = await dest.get_blob_properties()
                settings = _content_settings(attributes)
                settings.content_md5 = props.content_settings.content_md5
                done = await dest.set_http_headers(
                    settings, etag=props.etag, match_condition=MatchConditions.IfNotModified
                )
                if not attributes.user_metadata:
                    await dest.set_blob_metadata(
                        {}, etag=done["etag"], match_condition=MatchConditions.IfNotModified
                    )
        return await self.head(dest_key)
