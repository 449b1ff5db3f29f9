"""The object-store interface every connector implements, its values and its errors.

A store is rooted at a location (a bucket or container plus an optional key prefix, or a
directory); keys passed to it are relative to that root and are opaque strings: never
normalised, never URL-decoded, compared byte for byte.

Error tree (every connector maps its SDK's errors into these; nothing else leaves a connector)::

    StoreError
    ├── NotFound              the key (or the version asked for) does not exist
    ├── ContainerNotFound     the bucket, container or root directory does not exist: an error
    │                         of the store's configuration, never a sign its objects were deleted
    ├── AlreadyExists         create-only write on an existing key
    ├── PreconditionFailed    If-Match / version pin no longer holds (the object changed)
    ├── PermissionDenied      credentials refused
    ├── InvalidKey            the key breaks the store's naming rule (the message names the rule)
    ├── InvalidArgument       a request the store refuses as malformed (bad range, part size...)
    ├── IntegrityError        bytes or checksums do not match what was sent or expected
    ├── NotSupported          the store lacks the capability asked for
    ├── TransientError        network failure, 5xx, timeout            (retriable)
    │   └── Throttled         429 / 503 SlowDown, with optional retry_after (retriable)
    └── InvalidStoreURL       a URL that names no store we can open
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import email.utils
import enum
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import ClassVar, Protocol, Self, TypeAlias

#: Bytes handed to a write. Connectors send it as it is (no copy), never keep or change it: a
#: caller may reuse the buffer once the write returns.
Buffer: TypeAlias = bytes | bytearray | memoryview

#: Stores that stage multipart uploads as objects (GCS parts, Azure markers, file staging
#: directories) keep them under this prefix at the container root and never list them.
STAGING_PREFIX = ".replicator-uploads/"

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB


class StoreError(Exception):
    """Base of every error a connector raises. ``retriable`` tells the retry policy what to do."""

    retriable: ClassVar[bool] = False

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} ({self.url})" if self.url and self.url not in message else message


class NotFound(StoreError):
    """The key (or the version asked for) does not exist in a container that does."""


class ContainerNotFound(StoreError):
    """The bucket, container or root directory itself does not exist (deleted, mistyped, an
    unmounted file system). Deliberately not a ``NotFound``: code that treats a missing key as
    a deleted object must never see a missing bucket as every object deleted."""


class AlreadyExists(StoreError):
    pass


class PreconditionFailed(StoreError):
    pass


class PermissionDenied(StoreError):
    pass


class InvalidKey(StoreError):
    pass


class InvalidArgument(StoreError):
    pass


class IntegrityError(StoreError):
    """Bytes damaged on the way: a store refused them against the checksum sent with them,
    or what was read or written does not match the checksum it should have. Sending (or
    reading) them again is the remedy, so it is retriable, within the retry policy's budget."""

    retriable: ClassVar[bool] = True


class NotSupported(StoreError):
    pass


class InvalidStoreURL(StoreError):
    pass


class TransientError(StoreError):
    retriable = True


class Throttled(TransientError):
    def __init__(
        self, message: str, *, url: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, url=url)
        self.retry_after = retry_after


class ChecksumKind(enum.StrEnum):
    """Native checksums a store can verify on write and report on read.

    Values are base64 of the digest in the byte order the store's API uses: big-endian for
    CRC32C and MD5, little-endian for Azure's CRC64 (CRC-64/NVME).
    """

    CRC32C = "crc32c"
    MD5 = "md5"
    CRC64 = "crc64"


@dataclass(frozen=True)
class ObjectAttributes:
    """HTTP-level attributes and user metadata carried with an object."""

    content_type: str | None = None
    cache_control: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    user_metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectMeta:
    """What a store reports about one object. ``version`` is the store's immutable version
    handle where it has one (S3 version id, GCS generation); ``etag`` changes on every write."""

    url: str
    key: str
    size: int
    etag: str | None
    version: str | None
    last_modified: datetime | None
    attributes: ObjectAttributes = field(default_factory=ObjectAttributes)
    checksums: Mapping[ChecksumKind, str] = field(default_factory=dict)
    #: False when this came from a listing that omits attributes and user metadata (S3's):
    #: ``attributes`` is then empty whatever the object holds; HEAD or ``get`` for them.
    attributes_known: bool = True


@dataclass(frozen=True)
class PartToken:
    """Proof that one part of a multipart upload was stored; what ``complete`` needs back.

    ``part_number`` starts at 1. ``token`` is opaque to callers (an ETag, a block id, a
    temporary object name) and serialisable so an upload can be resumed after a crash.
    """

    part_number: int
    token: str
    size: int
    checksums: Mapping[ChecksumKind, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MultipartUpload:
    """An upload that was created and neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: datetime | None


@dataclass(frozen=True)
class Limits:
    """What the planner needs to know about a store, as plain data."""

    min_part_size: int
    max_part_size: int
    max_parts: int
    max_object_size: int
    max_single_put: int
    max_key_bytes: int
    native_checksums: frozenset[ChecksumKind]
    multipart: bool = True
    server_side_copy: bool = False
    versioned_reads: bool = False
    metadata_at_complete: bool = False
    # read_stream streams a range in one request (else it is one read); the engine then reads
    # a run of parts with one request instead of one request per part.
    streamed_reads: bool = False
    # Largest object copy_within copies (0: max_single_put).
    max_server_side_copy: int = 0
    # The checksum the store verifies every write against (put, put_part): a caller that
    # already has it for the bytes passes it in ``checksums`` and the connector does not hash
    # the bytes again.
    write_checksum: ChecksumKind = ChecksumKind.CRC32C
    # create_ordered_upload: parts sent one at a time, in order, into one upload that
    # completes into an ordinary object (GCS: a resumable upload session, not a composite).
    ordered_uploads: bool = False
    # In words, for plans explained to operators: the request(s) a server-side copy is made
    # of, and which sources it reaches (the scope ``ObjectStore.copies_from`` checks).
    server_side_copy_via: str = ""
    server_side_copy_scope: str = ""

    @property
    def server_side_copy_limit(self) -> int:
        return self.max_server_side_copy or self.max_single_put


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: ``scheme://container/path``. For ``file://`` the container is empty
    and ``path`` is the absolute path."""

    scheme: str
    container: str
    path: str

    @property
    def root(self) -> str:
        if self.scheme == "file":
            return "file://"
        return f"{self.scheme}://{self.container}"

    def __str__(self) -> str:
        return f"{self.root}/{self.path}" if self.scheme != "file" else f"file://{self.path}"


class RequestClass(enum.StrEnum):
    """What a request to a store is, as providers bill requests.

    GET reads object bytes (whole or one range); PUT writes them (a whole object, one part, or
    creating or completing a multipart upload); LIST fetches one page of a listing (objects,
    uploads, parts); HEAD reads metadata only; DELETE removes an object, a staged part or an
    upload; COPY copies inside the provider without the bytes passing through the client
    (copy, part copy, rewrite, compose).
    """

    GET = "get"
    PUT = "put"
    LIST = "list"
    HEAD = "head"
    DELETE = "delete"
    COPY = "copy"


@dataclass(frozen=True)
class StoreRequest:
    """What a connector reports of one request it sent to its store.

    ``location`` names the provider and, where the connector knows it, the region
    (``s3:eu-west-1``, ``gs``, ``az``, ``file``): bytes read from one location on behalf of a
    destination in another leave the first one (egress). ``bytes_sent`` is the request's body,
    ``bytes_received`` the object bytes a GET answered with. A connector that learns the
    answer's size only after reporting the request reports it again with ``requests=0``.
    """

    location: str
    request_class: RequestClass
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 1


class RequestObserver(Protocol):
    """Told of every request a connector sends (``observing``); it must be quick and never
    raise: it is called on the request's own path."""

    def __call__(self, request: StoreRequest, /) -> None: ...


# A context variable, not an attribute of a store: one store serves many routes and
# destinations at once, and the caller (the engine copying for one of them) knows which.
_observer: contextvars.ContextVar[RequestObserver | None] = contextvars.ContextVar(
    "connectors_request_observer", default=None
)


@contextlib.contextmanager
def observing(observer: RequestObserver | None) -> Iterator[None]:
    """Report every request connectors send from this context (and the tasks it starts) to
    ``observer`` until the block ends; None stops reporting within the block."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)


def report_request(request: StoreRequest) -> None:
    """Called by connectors for each request they send: hands it to the context's observer."""
    observer = _observer.get()
    if observer is not None:
        observer(request)


class ObjectStore(abc.ABC):
    """An async object store rooted at one location.

    Required: head, read, put, list, delete. Multipart (stateless: everything needed to
    resume lives in the upload id and the part tokens) and server-side copy are optional:
    ``limits.multipart`` and ``limits.server_side_copy`` say which a store has.
    """

    scheme: ClassVar[str]
    limits: Limits

    def __init__(self, root_url: str) -> None:
        #: The URL that ``url_for`` prefixes to keys: ``s3://bucket/`` plus the raw prefix,
        #: or ``file:///dir/``.
        self.root_url = root_url

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: StoreURL) -> Self:
        """Open the store rooted at ``url``, taking credentials and endpoints from the
        environment (each SDK's standard variables and chains). Does no I/O."""

    @property
    def location(self) -> str:
        """Where the store's bytes are, as far as egress goes: the provider, and the region
        where the connector knows it (S3). Bytes read here for a destination at another
        location leave this one. Requests are reported with it (``StoreRequest.location``)."""
        return self.scheme

    def url_for(self, key: str) -> str:
        """The URL of ``key`` under this store's root."""
        return self.root_url + key

    def check_single_put(self, key: str, size: int) -> None:
        """Refuse, before any request, a put larger than the store takes in one request."""
        if size > self.limits.max_single_put:
            raise InvalidArgument(
                f"{size} bytes exceed the {self.scheme}:// single-put limit of "
                f"{self.limits.max_single_put} bytes: use a multipart upload",
                url=self.url_for(key),
            )

    def check_part(self, key: str, part_number: int, size: int) -> None:
        """Refuse, before any request, a part number or part size outside the store's limits."""
        if not 1 <= part_number <= self.limits.max_parts:
            raise InvalidArgument(
                f"part number {part_number} is outside {self.scheme}://'s "
                f"1..{self.limits.max_parts}",
                url=self.url_for(key),
            )
        if size > self.limits.max_part_size:
            raise InvalidArgument(
                f"part of {size} bytes exceeds the {self.scheme}:// part limit of "
                f"{self.limits.max_part_size} bytes",
                url=self.url_for(key),
            )

    @abc.abstractmethod
    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta: ...

    @abc.abstractmethod
    async def read(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> bytes:
        """Bytes ``[start, end)`` of the object (``end=None``: to the end).

        A range reaching past the end is cut at the end; ``start`` past the end of a non-empty
        object raises InvalidArgument. ``if_match`` (an etag) or ``version`` pins the read to
        one version: if the object changed, PreconditionFailed (or NotFound for a version gone).
        """

    async def get(
        self, key: str, *, if_match: str | None = None, version: str | None = None
    ) -> tuple[ObjectMeta, bytes]:
        """The whole object and what ``head`` reports about it, read together and pinned like
        ``read``. Stores whose GET answers with the object's metadata do it in one request;
        by default it is a head and a read pinned to the version the head saw."""
        meta = await self.head(key, version=version)
        if if_match is not None and meta.etag != if_match:
            raise PreconditionFailed(f"etag is {meta.etag}, not {if_match}", url=meta.url)
        pin = version or (meta.version if self.limits.versioned_reads else None)
        data = await self.read(key, if_match=meta.etag, version=pin)
        return meta, data

    async def read_into(
        self,
        key: str,
        start: int,
        buffer: bytearray,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> int:
        """Bytes ``[start, start + len(buffer))`` into ``buffer``, pinned like ``read``; how
        many were read (fewer where the object ends sooner). A store that can read straight
        into the caller's buffer (the file store) does; by default it is a ``read`` copied in."""
        data = await self.read(key, start, start + len(buffer), if_match=if_match, version=version)
        buffer[: len(data)] = data
        return len(data)

    async def read_stream(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` as a stream of chunks, pinned like ``read``. Stores whose
        ``limits.streamed_reads`` is set send it as one request; by default it is one read."""
        yield await self.read(key, start, end, if_match=if_match, version=version)

    @abc.abstractmethod
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
        """Write a whole object in one request, with the store's native checksum attached so
        the store rejects damaged bytes. ``create_only`` raises AlreadyExists if the key exists;
        ``if_match`` raises PreconditionFailed unless the current etag matches. ``checksums``:
        checksums of ``data`` the caller computed from the bytes it read; the one of kind
        ``limits.write_checksum`` is sent instead of hashing ``data`` again."""

    @abc.abstractmethod
    def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[ObjectMeta]:
        """Objects under ``prefix`` in key order, after ``start_after``, fetched a page at a
        time so that a listing is never held in memory whole."""

    @abc.abstractmethod
    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete ``key``. Deleting a missing key is not an error unless ``if_match`` is set."""

    async def create_container(self) -> None:
        """Create the bucket, container or directory this store is rooted in, if missing.

        For set-up (test beds, demos, fresh targets); replication never creates buckets
        implicitly, because a typo in a route must not silently create one.
        """
        raise NotSupported(f"{self.scheme}:// cannot create containers", url=self.root_url)

    # -- multipart (optional) -------------------------------------------------------------

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        raise NotSupported(f"{self.scheme}:// has no multipart upload", url=self.url_for(key))

    async def put_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        """Store one part; ``checksums`` as for ``put``."""
        raise NotSupported(f"{self.scheme}:// has no multipart upload", url=self.url_for(key))

    async def put_part_at(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        offset: int,
        data: Buffer,
        *,
        checksums: Mapping[ChecksumKind, str] | None = None,
    ) -> PartToken:
        """``put_part`` for a part that starts ``offset`` bytes into the finished object.

        A store that can write each part straight into its place uses the offset so that
        completion need not join the parts; every other store ignores it. Completion still
        assembles exactly the parts it is given, in part-number order.
        """
        return await self.put_part(key, upload_id, part_number, data, checksums=checksums)

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
        """Assemble the parts, in part-number order whatever order they are given in.

        ``create_only`` and ``if_match`` condition the completion as they condition ``put``
        (AlreadyExists, PreconditionFailed), so that a writer that lost its claim on a key
        cannot land an upload over what another writer put there since it looked; the upload
        stays in place to be aborted.

        ``extra_metadata`` is added to the user metadata given at creation; only stores whose
        ``limits.metadata_at_complete`` is true take it (values known only at the end, such as
        a fingerprint of the whole object). ``checksums``: the whole object's checksums as the
        caller computed them from the bytes it read; a store that can check them as it
        assembles the object (S3's full-object CRC32C) refuses to complete on a mismatch.
        """
        raise NotSupported(f"{self.scheme}:// has no multipart upload", url=self.url_for(key))

    async def create_ordered_upload(
        self,
        key: str,
        *,
        attributes: ObjectAttributes | None = None,
        create_only: bool = False,
        if_match: str | None = None,
    ) -> str:
        """An upload (``limits.ordered_uploads``) whose parts go through ``put_part_at``
        one at a time, in part-number order, each starting where the one before ended;
        ``complete_multipart`` (given the same conditions, and no ``extra_metadata``) makes
        it an ordinary object and ``abort_multipart`` cancels it. Its id is a credential:
        never log or journal it. It is not listed, and not resumed after a crash."""
        raise NotSupported(f"{self.scheme}:// has no ordered upload", url=self.url_for(key))

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop the upload and every stored part. Aborting an unknown upload is not an error."""
        raise NotSupported(f"{self.scheme}:// has no multipart upload", url=self.url_for(key))

    def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        raise NotSupported(f"{self.scheme}:// has no multipart upload", url=self.root_url)

    # -- server-side copy (optional) ------------------------------------------------------

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
        """Copy inside this store without moving bytes through the client. ``if_match`` pins
        the source's etag; ``attributes`` replaces the source's attributes when given, else
        they are kept. ``create_only`` / ``dest_if_match`` condition the write on the
        destination key, as for ``put``: AlreadyExists / PreconditionFailed when it fails
        (PreconditionFailed may also mean the source changed: a store answers both with 412)."""
        raise NotSupported(f"{self.scheme}:// has no server-side copy", url=self.url_for(dest_key))

    def copies_from(self, source: ObjectStore) -> bool:
        """Whether ``copy_from`` copies from ``source`` without the bytes passing through this
        process: by default, within this very store (``copy_within``)."""
        return (
            self.limits.server_side_copy
            and type(source) is type(self)
            and source.root_url == self.root_url
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
        """Copy from ``source`` (one ``copies_from`` accepts) as ``copy_within`` does. A
        store that reads its copy back (the file store) calls ``inspect(chunk, offset)`` with
        every chunk of it, then ``extra_metadata()`` for user metadata to add (values known
        only once the bytes were seen, such as a fingerprint), and refuses to publish a copy
        whose CRC32C differs from the one the source reports; others call neither."""
        if not self.copies_from(source):
            raise NotSupported(
                f"{self.scheme}:// cannot copy from {source.root_url} itself",
                url=self.url_for(dest_key),
            )
        return await self.copy_within(
            source_key,
            dest_key,
            if_match=if_match,
            attributes=attributes,
            create_only=create_only,
            dest_if_match=dest_if_match,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:  # noqa: B027 - stores without connections need no close
        """Release connections."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def clip_range(size: int, start: int, end: int | None, url: str) -> tuple[int, int]:
    """Validate a read range against an object size; returns the clipped ``[start, end)``.

    The rule every connector follows: negative or inverted ranges and a start past the end of
    a non-empty object are InvalidArgument; an end past the size is cut at the size.
    """
    if start < 0 or (end is not None and end < start):
        raise InvalidArgument(f"invalid byte range [{start}, {end})", url=url)
    stop = size if end is None else min(end, size)
    if start > 0 and start >= size:
        raise InvalidArgument(f"range start {start} is past the end ({size} bytes)", url=url)
    return start, stop


def check_key(key: str, limits: Limits, url: str, *, rule: str = "") -> None:
    """Refuse keys no store can hold: empty, not UTF-8, or longer than ``max_key_bytes``.

    Connectors add their own rules on top (naming them in ``rule`` style messages).
    """
    if not key:
        raise InvalidKey("empty key", url=url)
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"key is not valid UTF-8: {exc.reason}", url=url) from None
    if len(encoded) > limits.max_key_bytes:
        raise InvalidKey(
            f"key is {len(encoded)} bytes of UTF-8; this store allows at most "
            f"{limits.max_key_bytes}{rule}",
            url=url,
        )
