"""GCSStore: object operations on top of the transport and the multipart staging."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import ClassVar, Self

import yarl

from connectors.base import (
    Buffer,
    ChecksumKind,
    GiB,
    InvalidArgument,
    Limits,
    NotFound,
    NotSupported,
    ObjectAttributes,
    ObjectMeta,
    ObjectStore,
    PreconditionFailed,
    StoreURL,
    TiB,
)
from connectors.credentials import installed
from connectors.gcs.resources import check_whole_read, library_fields, resource_fields
from connectors.gcs.sessions import GCSSessions
from connectors.gcs.transport import (
    _GENERATION,
    _JSON_TIMEOUT_S,
    _READ_TIMEOUT,
    _REWRITE_TIMEOUT_S,
    _STAGING_END,
    _HTTPError,
    _is_staged,
    _UnsatisfiableRange,
    write_preconditions,
)
from connectors.payload import body_chunks


class GCSStore(GCSSessions):
    scheme: ClassVar[str] = "gs"
    limits = Limits(
        min_part_size=1,
        max_part_size=5 * TiB,
        max_parts=10_000,
        max_object_size=5 * TiB,
        max_single_put=5 * GiB,
        max_key_bytes=1024,
        native_checksums=frozenset({ChecksumKind.CRC32C, ChecksumKind.MD5}),
        multipart=True,
        server_side_copy=True,
        versioned_reads=True,
        metadata_at_complete=True,
        streamed_reads=True,
        ordered_uploads=True,
        server_side_copy_via="rewrite",
        server_side_copy_scope="the buckets of one endpoint and credentials",
    )

    @classmethod
    def from_url(cls, url: StoreURL) -> Self:
        access = installed().gcs_for(f"gs://{url.container}/{url.path}")
        return cls(url.container, url.path, access.service_account_file if access else None)

    # -- objects --------------------------------------------------------------------------

    async def create_container(self) -> None:
        """Create the bucket if missing, in ``GOOGLE_CLOUD_PROJECT`` (or the credentials'
        project)."""
        _, storage = await self._client()
        async with self._errors(self.root_url):
            project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
            if not project and not self._emulated:
                project = await storage.token.get_project()
            if not project and not self._emulated:
                raise InvalidArgument(
                    "creating a GCS bucket needs a project: set GOOGLE_CLOUD_PROJECT",
                    url=self.root_url,
                )
            try:
                await self._json(
                    "POST",
                    yarl.URL(f"{self._api_root}/storage/v1/b", encoded=True),
                    params={"project": project or "replicator"},
                    json_body={"name": self.bucket},
                )
            except _HTTPError as exc:
                if exc.status != 409:  # it exists already
                    raise

    async def head(self, key: str, *, version: str | None = None) -> ObjectMeta:
        full = self._full(key)
        url = self.url_for(key)
        if version is not None and not _GENERATION.fullmatch(version):
            raise NotFound(f"no generation {version!r}: GCS generations are numbers", url=url)
        return self._meta(key, await self._resource(full, url, generation=version))

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
        params = self._media_params(url, if_match, version)
        # The stored bytes, even of a gzip-encoded object (never decoded in transit).
        headers = {"Accept-Encoding": "gzip"}
        if end == start:
            # No HTTP range names zero bytes: one byte checks the object and the start.
            headers["Range"] = f"bytes={start}-{start}"
        elif end is not None:
            headers["Range"] = f"bytes={start}-{end - 1}"
        elif start > 0:
            headers["Range"] = f"bytes={start}-"
        try:
            async with (
                self._errors(url, missing="changed" if if_match is not None else "object"),
                self._send(
                    "GET",
                    self._object_url(full),
                    params=params,
                    headers=headers,
                    time_limit=_READ_TIMEOUT,
                    auto_decompress=False,
                ) as response,
            ):
                data = await response.read()
                partial = response.status == 206
                hashes = response.headers.get("X-Goog-Hash", "")
        except _UnsatisfiableRange:
            # Every range starting at 0 fits a non-empty object: the object is empty, which
            # the read contract answers with no bytes.
            if start == 0:
                return b""
            raise
        if "Range" in headers and not partial:
            # A server that ignores Range sends the whole object: cut the range from it.
            if start > 0 and start >= len(data):
                raise InvalidArgument(
                    f"range start {start} is past the end ({len(data)} bytes)", url=url
                )
            return data[start:end]
        if "Range" not in headers:
            # A whole object can be checked against the CRC32C GCS holds for it, for free.
            check_whole_read(data, hashes, url)
        return b"" if end == start else data

    def _media_params(self, url: str, if_match: str | None, version: str | None) -> dict[str, str]:
        params = {"alt": "media"}
        if if_match is not None:
            if not _GENERATION.fullmatch(if_match):
                raise PreconditionFailed(f"{if_match!r} is not a GCS generation", url=url)
            params.update(generation=if_match, ifGenerationMatch=if_match)
        elif version is not None:
            if not _GENERATION.fullmatch(version):
                raise NotFound(f"no generation {version!r}: GCS generations are numbers", url=url)
            params["generation"] = version
        return params

    async def read_stream(
        self,
        key: str,
        start: int,
        end: int,
        *,
        if_match: str | None = None,
        version: str | None = None,
    ) -> AsyncIterator[bytes]:
        """One ranged GET, its body yielded as received (stored bytes, never decoded)."""
        url = self.url_for(key)
        full = self._full(key)
        if not 0 <= start < end:
            raise InvalidArgument(f"invalid byte range [{start}, {end}) for a stream", url=url)
        params = self._media_params(url, if_match, version)
        headers = {"Accept-Encoding": "gzip", "Range": f"bytes={start}-{end - 1}"}
        async with (
            self._errors(url, missing="changed" if if_match is not None else "object"),
            self._send(
                "GET",
                self._object_url(full),
                params=params,
                headers=headers,
                time_limit=_READ_TIMEOUT,
                auto_decompress=False,
            ) as response,
        ):
            # A server that ignores Range sends the whole object: cut the range from it.
            skip, left = (0 if response.status == 206 else start), end - start
            async for chunk in body_chunks(response.content):
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                piece = chunk[skip : skip + left] if skip or len(chunk) - skip > left else chunk
                skip, left = 0, left - len(piece)
                yield piece
                if not left:
                    return

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
        params = write_preconditions(create_only, if_match, url)
        resource = await self._upload(
            full,
            data,
            url,
            fields=resource_fields(attributes or ObjectAttributes()),
            params=params,
            create_only=create_only,
            checksums=checksums,
        )
        return self._meta(key, resource)

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[ObjectMeta]:
        _, storage = await self._client()
        params = {"prefix": self.prefix + prefix, "maxResults": str(page_size)}
        after = None if start_after is None else self.prefix + start_after
        if after is not None:
            # startOffset is inclusive; the key itself is skipped below.
            params["startOffset"] = after
        while True:
            async with self._errors(self.root_url):
                page = await storage.list_objects(
                    self.bucket, params=dict(params), timeout=_JSON_TIMEOUT_S
                )
            items = page.get("items") or []
            for item in items:
                name = str(item["name"])
                if name != after and not _is_staged(name):
                    yield self._meta(name[len(self.prefix) :], item)
            token = page.get("nextPageToken")
            if not token:
                return
            if items and _is_staged(str(items[-1]["name"])):
                # Step over the rest of the staging objects rather than page through them.
                params["startOffset"] = _STAGING_END
                params.pop("pageToken", None)
            else:
                params["pageToken"] = str(token)

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        url = self.url_for(key)
        full = self._full(key)
        _, storage = await self._client()
        if if_match is None:
            async with self._errors(url, missing="absent_ok"):
                await storage.delete(self.bucket, full, timeout=_JSON_TIMEOUT_S)
            return
        if not _GENERATION.fullmatch(if_match):
            raise PreconditionFailed(f"{if_match!r} is not a GCS generation", url=url)
        # fake-gcs-server ignores ifGenerationMatch on deletes, so the generation is compared
        # first. Between that look and the delete another writer may replace the object: GCS
        # itself closes that window by checking ifGenerationMatch (412); the emulator cannot.
        current = await self.head(key)
        if current.version != if_match:
            raise PreconditionFailed(
                f"generation is {current.version}, not {if_match}", url=current.url
            )
        async with self._errors(url):
            await storage.delete(
                self.bucket,
                full,
                params={"ifGenerationMatch": if_match},
                timeout=_JSON_TIMEOUT_S,
            )

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
        return await self._rewrite(
            self, source_key, dest_key, if_match, attributes, create_only, dest_if_match
        )

    def copies_from(self, source: ObjectStore) -> bool:
        """Any GCS store reached through the same endpoint with the same credentials, in any
        bucket (a rewrite copies between buckets of the project server-side): stores are
        rooted at prefixes, so a route within one bucket has two different roots."""
        return (
            isinstance(source, GCSStore)
            and source._api_root == self._api_root
            and source._service_file == self._service_file
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
        if not isinstance(source, GCSStore) or not self.copies_from(source):
            raise NotSupported(
                f"gs:// cannot copy from {source.root_url} itself", url=self.url_for(dest_key)
            )
        return await self._rewrite(
            source, source_key, dest_key, if_match, attributes, create_only, dest_if_match
        )

    async def _rewrite(
        self,
        origin: GCSStore,
        source_key: str,
        dest_key: str,
        if_match: str | None,
        attributes: ObjectAttributes | None,
        create_only: bool,
        dest_if_match: str | None,
    ) -> ObjectMeta:
        """A rewrite of ``source_key`` of ``origin`` (a GCS store rooted at its own bucket
        and prefix) to ``dest_key`` here, conditioned on the destination key as a put is (its
        generation also compared first: fake-gcs-server ignores the condition on rewrites)."""
        source_url = origin.url_for(source_key)
        source = origin._full(source_key)
        dest = self._full(dest_key)
        _, storage = await self._client()
        params = write_preconditions(create_only, dest_if_match, self.url_for(dest_key))
        if params:
            await self._check_destination(dest_key, create_only, dest_if_match)
        if if_match is not None:
            if not _GENERATION.fullmatch(if_match):
                raise PreconditionFailed(f"{if_match!r} is not a GCS generation", url=source_url)
            # Rewriting that very generation is safe where the precondition is ignored
            # (fake-gcs-server); a generation that is gone answers 404.
            params.update(sourceGeneration=if_match, ifSourceGenerationMatch=if_match)
        async with self._errors(
            source_url, missing="changed" if if_match is not None else "object"
        ):
            # The library loops on rewriteToken until GCS reports the rewrite done.
            result = await storage.copy(
                origin.bucket,
                source,
                self.bucket,
                new_name=dest,
                metadata=library_fields(attributes) if attributes is not None else None,
                params=params,
                timeout=_REWRITE_TIMEOUT_S,
            )
        return self._meta(dest_key, result["resource"])
