"""The oracle's own view of every store: each ecosystem's plain client, reading the emulators
directly (never through the fault proxies, never through the project's connectors).

A ``Destination`` lists what a reader would see (objects, and separately the staging names a
replicator may leave: GCS and Azure ``.replicator-uploads/``, file ``*.replicator-tmp-*`` and
``.replicator-uploads/``), reads one object whole (its SHA-256) or by its two ends (the
version markers, read pinned to one version), and at the end reports every temporary artefact
left behind (S3 multipart uploads, Azure uncommitted blocks, staged objects and files).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import boto3
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.chaos.azure_blocks import DiscardedBlock
from tests.chaos.workload import MARK

STAGING = ".replicator-uploads/"
TEMP_MARKER = ".replicator-tmp-"
# Objects up to this size are read whole when sampled; larger ones by their two ends.
WHOLE_READ_LIMIT = 1024 * 1024
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    # Changes whenever the object is replaced (etag, generation, inode and mtime).
    token: str


@dataclass(frozen=True)
class Seen:
    """What one read found: the size, both ends, and the SHA-256 when read whole."""

    size: int
    head: bytes
    tail: bytes
    digest: str | None


class Changed(Exception):
    """The object changed between the two reads of its ends: read again."""


class Destination(Protocol):
    url: str

    async def list(self) -> tuple[dict[str, Listed], list[str]]: ...

    async def read(self, key: str, *, whole: bool) -> Seen | None: ...

    async def leftovers(self) -> list[str]: ...


async def read_seen(destination: Destination, key: str, size: int) -> Seen | None:
    """Sample ``key``: whole when small, else by its ends (retried if it changed meanwhile)."""
    for _ in range(5):
        try:
            return await destination.read(key, whole=size <= WHOLE_READ_LIMIT)
        except Changed:
            continue
    return await destination.read(key, whole=True)


class _Threads:
    """Blocking SDK calls off the event loop, on threads of their own."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers)

    async def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: function(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class S3Destination:
    def __init__(self, endpoint: str, bucket: str) -> None:
        self.url = f"s3://{bucket}/"
        self.bucket = bucket
        self._threads = _Threads(8)
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="chaos",
            aws_secret_access_key="chaos-oracle",
            # The oracle compares bytes itself: an object whose stored checksum does not
            # match its bytes must be read and reported, not refused by the client.
            config=Config(
                retries={"total_max_attempts": 5, "mode": "standard"},
                max_pool_connections=16,
                response_checksum_validation="when_required",
            ),
        )

    def _list(self) -> tuple[dict[str, Listed], list[str]]:
        found: dict[str, Listed] = {}
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = Listed(item["Key"], item["Size"], item["ETag"])
        return found, []

    async def list(self) -> tuple[dict[str, Listed], list[str]]:
        listed: tuple[dict[str, Listed], list[str]] = await self._threads.call(self._list)
        return listed

    def _read(self, key: str, whole: bool) -> Seen | None:
        try:
            if whole:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
                digest, head, tail, size = _digest_stream(response["Body"].iter_chunks(CHUNK))
                return Seen(size, head, tail, digest)
            first = self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes=0-{MARK - 1}"
            )
            etag = first["ETag"]
            size = int(first["ContentRange"].rsplit("/", 1)[1])
            head = first["Body"].read()
            try:
                last = self._client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes=-{MARK}", IfMatch=etag
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] in ("PreconditionFailed", "412"):
                    raise Changed from None
                raise
            return Seen(size, head, last["Body"].read(), None)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    async def read(self, key: str, *, whole: bool) -> Seen | None:
        seen: Seen | None = await self._threads.call(self._read, key, whole)
        return seen

    def _leftovers(self) -> list[str]:
        response = self._client.list_multipart_uploads(Bucket=self.bucket)
        return [
            f"{self.url}{upload['Key']} (multipart upload {upload['UploadId']})"
            for upload in response.get("Uploads", [])
        ]

    async def leftovers(self) -> list[str]:
        found: list[str] = await self._threads.call(self._leftovers)
        return found

    def close(self) -> None:
        self._threads.close()


class GCSDestination:
    def __init__(self, host: str, bucket: str, session: aiohttp.ClientSession) -> None:
        self.url = f"gs://{bucket}/"
        self.host = host
        self.bucket = bucket
        self._session = session

    async def _list_all(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = {"maxResults": "1000", **({"pageToken": token} if token else {})}
            url = f"{self.host}/storage/v1/b/{self.bucket}/o?{urllib.parse.urlencode(query)}"
            async with self._session.get(url) as response:
                response.raise_for_status()
                page = await response.json()
            items += page.get("items", [])
            token = page.get("nextPageToken", "")
            if not token:
                return items

    async def list(self) -> tuple[dict[str, Listed], list[str]]:
        found: dict[str, Listed] = {}
        staging: list[str] = []
        for item in await self._list_all():
            name = item["name"]
            if name.startswith(STAGING):
                staging.append(self.url + name)
            else:
                # fake-gcs-server keeps an object's generation (and update time) when a compose
                # replaces it, so the content's CRC32C is part of what tells a new object.
                token = f"{item['generation']}:{item.get('crc32c')}"
                found[name] = Listed(name, int(item["size"]), token)
        return found, staging

    def _media(self, key: str, generation: str | None = None) -> str:
        name = urllib.parse.quote(key, safe="")
        url = f"{self.host}/storage/v1/b/{self.bucket}/o/{name}?alt=media"
        return url + (f"&ifGenerationMatch={generation}" if generation else "")

    async def read(self, key: str, *, whole: bool) -> Seen | None:
        if whole:
            async with self._session.get(self._media(key)) as response:
                if response.status == 404:
                    return None
                response.raise_for_status()
                digest, head, tail, size = await _digest_async(response.content.iter_chunked(CHUNK))
            return Seen(size, head, tail, digest)
        async with self._session.get(
            self._media(key), headers={"Range": f"bytes=0-{MARK - 1}"}
        ) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            generation = response.headers.get("x-goog-generation", "")
            size = int(response.headers["Content-Range"].rsplit("/", 1)[1])
            head = await response.read()
        async with self._session.get(
            self._media(key, generation), headers={"Range": f"bytes=-{MARK}"}
        ) as response:
            if response.status in (404, 412):
                raise Changed
            response.raise_for_status()
            tail = await response.read()
        return Seen(size, head, tail, None)

    async def leftovers(self) -> list[str]:
        _, staging = await self.list()
        return staging


class AzureDestination:
    def __init__(
        self,
        connection_string: str,
        container: str,
        account_label: str,
        discarded: Callable[[], set[DiscardedBlock]] = set,
    ) -> None:
        """``discarded``: the uncommitted blocks a real Azure account would already have
        dropped (``tests.chaos.azure_blocks``), which are not leftovers."""
        self.url = f"az://{container}{account_label}/"
        self._service = BlobServiceClient.from_connection_string(connection_string)
        self._container = self._service.get_container_client(container)
        self._threads = _Threads(6)
        self._discarded = discarded

    def _list(self) -> tuple[dict[str, Listed], list[str]]:
        found: dict[str, Listed] = {}
        staging: list[str] = []
        for blob in self._container.list_blobs():
            if blob.name.startswith(STAGING):
                staging.append(self.url + blob.name)
            else:
                found[blob.name] = Listed(blob.name, blob.size, str(blob.etag))
        return found, staging

    async def list(self) -> tuple[dict[str, Listed], list[str]]:
        listed: tuple[dict[str, Listed], list[str]] = await self._threads.call(self._list)
        return listed

    def _read(self, key: str, whole: bool) -> Seen | None:
        blob = self._container.get_blob_client(key)
        try:
            if whole:
                stream = blob.download_blob()
                digest, head, tail, size = _digest_stream(stream.chunks())
                return Seen(size, head, tail, digest)
            first = blob.download_blob(offset=0, length=MARK)
            # A ranged download's properties.size is the range's: the blob's is in the range.
            size = int(str(first.properties.content_range).rsplit("/", 1)[1])
            head = first.readall()
            if size <= MARK:
                return Seen(size, head, head, None)
            try:
                last = blob.download_blob(
                    offset=size - MARK,
                    length=MARK,
                    etag=first.properties.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceModifiedError:
                raise Changed from None
            return Seen(size, head, last.readall(), None)
        except ResourceNotFoundError:
            return None

    async def read(self, key: str, *, whole: bool) -> Seen | None:
        seen: Seen | None = await self._threads.call(self._read, key, whole)
        return seen

    def _leftovers(self) -> list[str]:
        found = []
        discarded = self._discarded()
        container = self._container.container_name
        for blob in self._container.list_blobs(include=["uncommittedblobs"]):
            if blob.name.startswith(STAGING):
                found.append(f"{self.url}{blob.name} (upload marker)")
                continue
            _, uncommitted = self._container.get_blob_client(blob.name).get_block_list(
                "uncommitted"
            )
            kept = [b for b in uncommitted if (container, blob.name, b.id) not in discarded]
            if kept:
                found.append(f"{self.url}{blob.name} ({len(kept)} uncommitted blocks)")
        return found

    async def leftovers(self) -> list[str]:
        found: list[str] = await self._threads.call(self._leftovers)
        return found

    def close(self) -> None:
        self._threads.close()
        self._service.close()


class FileDestination:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}/"

    def _list(self) -> tuple[dict[str, Listed], list[str]]:
        found: dict[str, Listed] = {}
        staging: list[str] = []
        for directory, subdirs, files in os.walk(self.root):
            relative = Path(directory).relative_to(self.root).as_posix()
            prefix = "" if relative == "." else relative + "/"
            if prefix.startswith(STAGING):
                staging += [self.url + prefix + name for name in files]
                continue
            for name in files:
                key = prefix + name
                if TEMP_MARKER in name:
                    staging.append(self.url + key)
                    continue
                try:
                    stat = os.stat(Path(directory) / name)
                except FileNotFoundError:
                    continue
                found[key] = Listed(key, stat.st_size, f"{stat.st_ino}:{stat.st_mtime_ns}")
            subdirs.sort()
        return found, staging

    async def list(self) -> tuple[dict[str, Listed], list[str]]:
        return await asyncio.to_thread(self._list)

    def _read(self, key: str, whole: bool) -> Seen | None:
        try:
            with open(self.root / key, "rb") as file:
                if whole:
                    digest, head, tail, size = _digest_stream(iter(lambda: file.read(CHUNK), b""))
                    return Seen(size, head, tail, digest)
                size = os.fstat(file.fileno()).st_size
                head = os.pread(file.fileno(), MARK, 0)
                tail = os.pread(file.fileno(), MARK, max(0, size - MARK))
                return Seen(size, head, tail, None)
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def read(self, key: str, *, whole: bool) -> Seen | None:
        return await asyncio.to_thread(self._read, key, whole)

    async def leftovers(self) -> list[str]:
        _, staging = await self.list()
        return staging


def _digest_stream(chunks: Any) -> tuple[str, bytes, bytes, int]:
    digest = hashlib.sha256()
    head = b""
    window = b""
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        if len(head) < MARK:
            head += chunk[: MARK - len(head)]
        window = (window + chunk)[-MARK:]
        size += len(chunk)
    return digest.hexdigest(), head, window, size


async def _digest_async(chunks: Any) -> tuple[str, bytes, bytes, int]:
    digest = hashlib.sha256()
    head = b""
    window = b""
    size = 0
    async for chunk in chunks:
        digest.update(chunk)
        if len(head) < MARK:
            head += chunk[: MARK - len(head)]
        window = (window + chunk)[-MARK:]
        size += len(chunk)
    return digest.hexdigest(), head, window, size
