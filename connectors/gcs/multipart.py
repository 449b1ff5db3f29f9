"""Multipart uploads to GCS: parts staged as temporary objects under ``.replicator-uploads/``,
composed at the end through a tree of 32-source composes (see ``connectors.gcs``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from connectors.base import (
    AlreadyExists,
    Buffer,
    ChecksumKind,
    InvalidArgument,
    MultipartUpload,
    NotFound,
    ObjectAttributes,
    ObjectMeta,
    PartToken,
    PreconditionFailed,
    StoreError,
    TransientError,
)
from connectors.gcs.resources import (
    DEFAULT_CONTENT_TYPE,
    attributes_from_json,
    attributes_json,
    crc32c_b64,
    resource_fields,
    timestamp,
)
from connectors.gcs.transport import (
    _FANOUT,
    _JSON_TIMEOUT_S,
    _UPLOAD_ID,
    COMPOSE_MAX_SOURCES,
    STAGING_PREFIX,
    GCSTransport,
    _part_name,
    quote,
    write_preconditions,
)

# Set in a manifest by an abort or a completion before the staged parts are swept.
_CLOSED = "closed"


class GCSMultipart(GCSTransport):
    """The stateless multipart capability: staged parts, composed on completion."""

    def _check_upload_id(self, key: str, upload_id: str) -> None:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise NotFound(f"no multipart upload {upload_id!r}", url=self.url_for(key))

    async def create_multipart(
        self, key: str, *, attributes: ObjectAttributes | None = None
    ) -> str:
        url = self.url_for(key)
        full = self._full(key)
        upload_id = uuid.uuid4().hex
        manifest = {"key": full, "attributes": attributes_json(attributes or ObjectAttributes())}
        await self._write_manifest(upload_id, manifest, url, create=True)
        return upload_id

    async def _write_manifest(
        self, upload_id: str, manifest: Mapping[str, Any], url: str, *, create: bool = False
    ) -> None:
        await self._upload(
            STAGING_PREFIX + upload_id,
            json.dumps(manifest).encode(),
            url,
            # The key also goes in custom metadata, percent-encoded (plain ASCII whatever the
            # key), so that listing the manifests names every upload's key.
            fields={"contentType": "application/json", "metadata": {"key": quote(manifest["key"])}},
            params={"ifGenerationMatch": "0"} if create else None,
            create_only=create,
        )

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
        self._full(key)
        self._check_upload_id(key, upload_id)
        self.check_part(key, part_number, len(data))
        name = _part_name(upload_id, part_number)
        sent = (checksums or {}).get(ChecksumKind.CRC32C) or crc32c_b64(data)
        resource = await self._upload(
            name,
            data,
            url,
            fields={"contentType": DEFAULT_CONTENT_TYPE},
            checksums={ChecksumKind.CRC32C: sent},
        )
        await self._check_open(key, upload_id, name, str(resource["generation"]))
        return PartToken(
            part_number,
            f"{name}#{resource['generation']}",
            len(data),
            {ChecksumKind.CRC32C: str(resource.get("crc32c") or sent)},
        )

    async def _check_open(self, key: str, upload_id: str, name: str, generation: str) -> None:
        """A part written after its upload was closed (aborted or completed: a straggler of
        a striped copy, a redelivered part task) is removed again, and the writer told the
        upload is gone, as S3 refuses a part of an aborted upload. Closing marks the manifest
        before it sweeps the staged parts, and a part is checked after it was written, so
        every part is either swept or removed by its writer."""
        try:
            open_ = not (await self._manifest(key, upload_id)).get(_CLOSED)
        except NotFound:
            open_ = False
        if open_:
            return
        _, storage = await self._client()
        url = self.url_for(key)
        async with self._errors(url, missing="absent_ok"):
            await storage.delete(
                self.bucket,
                name,
                params={"ifGenerationMatch": generation},
                timeout=_JSON_TIMEOUT_S,
            )
        raise NotFound(f"no multipart upload {upload_id!r} (closed)", url=url)

    async def _close(self, upload_id: str, manifest: Mapping[str, Any], url: str) -> None:
        """Mark the manifest closed before the staged parts are swept (see ``_check_open``);
        it stays listed, so an abort that fails half-way is finished by the janitor."""
        await self._write_manifest(upload_id, {**manifest, _CLOSED: True}, url)

    async def _manifest(self, key: str, upload_id: str) -> dict[str, Any]:
        url = self.url_for(key)
        async with (
            self._errors(url, missing="upload"),
            self._send(
                "GET", self._object_url(STAGING_PREFIX + upload_id), params={"alt": "media"}
            ) as response,
        ):
            raw = await response.read()
        try:
            manifest: dict[str, Any] = json.loads(raw)
            str(manifest["key"])
        except (ValueError, KeyError, TypeError):
            raise NotFound(
                f"multipart upload {upload_id} has no readable manifest", url=url
            ) from None
        return manifest

    async def _staged(self, upload_id: str, url: str) -> dict[str, dict[str, Any]]:
        """Every object under the upload's staging directory, by name."""
        _, storage = await self._client()
        params = {"prefix": f"{STAGING_PREFIX}{upload_id}/", "maxResults": "1000"}
        staged: dict[str, dict[str, Any]] = {}
        while True:
            async with self._errors(url):
                page = await storage.list_objects(
                    self.bucket, params=dict(params), timeout=_JSON_TIMEOUT_S
                )
            for item in page.get("items") or []:
                staged[str(item["name"])] = item
            token = page.get("nextPageToken")
            if not token:
                return staged
            params["pageToken"] = str(token)

    async def _fan_out(self, jobs: Iterable[Callable[[], Awaitable[Any]]]) -> Sequence[Any]:
        """Run ``jobs`` at most _FANOUT at a time; the first failure cancels the rest."""
        limit = asyncio.Semaphore(_FANOUT)

        async def bounded(job: Callable[[], Awaitable[Any]]) -> Any:
            async with limit:
                return await job()

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(bounded(job)) for job in jobs]
        except BaseExceptionGroup as failures:
            # Callers map and classify single errors (a transient one keeps the parts).
            first: BaseException = failures
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return [task.result() for task in tasks]

    async def _compose(
        self,
        name: str,
        sources: Sequence[tuple[str, str]],
        destination: Mapping[str, Any],
        url: str,
    ) -> tuple[str, str]:
        body = {
            "sourceObjects": [
                {"name": source, "objectPreconditions": {"ifGenerationMatch": generation}}
                for source, generation in sources
            ],
            "destination": dict(destination),
        }
        async with self._errors(url):
            result = await self._json("POST", self._object_url(name, "/compose"), json_body=body)
        return name, str(result["generation"])

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
        url = self.url_for(key)
        full = self._full(key)
        self._check_upload_id(key, upload_id)
        conditions = write_preconditions(create_only, if_match, url)
        if conditions:
            await self._check_destination(key, create_only, if_match)
        manifest = await self._manifest(key, upload_id)
        if manifest["key"] != full:
            raise NotFound(f"multipart upload {upload_id} is not one of this key", url=url)
        if manifest.get(_CLOSED):
            raise NotFound(f"no multipart upload {upload_id!r} (closed)", url=url)
        attributes = attributes_from_json(manifest.get("attributes") or {})
        if extra_metadata:
            attributes = replace(
                attributes, user_metadata={**attributes.user_metadata, **extra_metadata}
            )
        failure: BaseException | None = None
        try:
            resource = await self._assemble(
                full, upload_id, parts, attributes, url, conditions, create_only
            )
        except BaseException as exc:
            failure = exc
            raise
        finally:
            # A transient failure keeps the parts so that completing again can succeed; a
            # cancelled task does no more I/O and leaves the upload to abort or the orphan
            # cleaner. Clean-up is best effort: what it leaves stays listed by its manifest.
            if not isinstance(failure, asyncio.CancelledError):
                keep_parts = isinstance(failure, TransientError)
                with contextlib.suppress(StoreError):
                    if not keep_parts:
                        await self._close(upload_id, manifest, url)
                    await self._clear_staging(upload_id, url, keep_parts=keep_parts)
        return self._meta(key, resource)

    async def _check_destination(self, key: str, create_only: bool, if_match: str | None) -> None:
        """Compare the key's generation with the condition before composing: GCS checks
        ``ifGenerationMatch`` on the compose itself, atomically, but fake-gcs-server ignores it
        there (as on deletes), so without this the condition would go unchecked on it."""
        url = self.url_for(key)
        try:
            resource = await self._resource(self._full(key), url)
        except NotFound:
            current = None
        else:
            current = str(resource["generation"])
        if create_only and current is not None:
            raise AlreadyExists(f"object already exists (generation {current})", url=url)
        if if_match is not None and current != if_match:
            raise PreconditionFailed(f"generation is {current}, not {if_match}", url=url)

    async def _assemble(
        self,
        full: str,
        upload_id: str,
        parts: Sequence[PartToken],
        attributes: ObjectAttributes,
        url: str,
        conditions: Mapping[str, str],
        create_only: bool,
    ) -> dict[str, Any]:
        ordered = sorted(parts, key=lambda p: p.part_number)
        if not ordered:
            raise InvalidArgument("a multipart upload needs at least one part", url=url)
        staged = await self._staged(upload_id, url)
        sources: list[tuple[str, str]] = []
        for previous, part in zip([None, *ordered], ordered, strict=False):
            if previous is not None and previous.part_number == part.part_number:
                raise InvalidArgument(f"part {part.part_number} is given twice", url=url)
            name, _, generation = part.token.rpartition("#")
            item = staged.get(name)
            if (
                name != _part_name(upload_id, part.part_number)
                or item is None
                or str(item.get("generation")) != generation
                or int(item.get("size") or 0) != part.size
            ):
                raise InvalidArgument(
                    f"part {part.part_number} was not uploaded as given ({part.token!r})", url=url
                )
            sources.append((name, generation))
        depth = 0
        while len(sources) > COMPOSE_MAX_SOURCES:
            depth += 1
            groups = [
                sources[i : i + COMPOSE_MAX_SOURCES]
                for i in range(0, len(sources), COMPOSE_MAX_SOURCES)
            ]
            intermediate = {"contentType": DEFAULT_CONTENT_TYPE}
            composed = await self._fan_out(
                functools.partial(
                    self._compose,
                    f"{STAGING_PREFIX}{upload_id}/compose-{depth}-{i:05d}",
                    group,
                    intermediate,
                    url,
                )
                for i, group in enumerate(groups)
            )
            sources = [(str(name), str(generation)) for name, generation in composed]
        body = {
            "sourceObjects": [
                {"name": name, "objectPreconditions": {"ifGenerationMatch": generation}}
                for name, generation in sources
            ],
            "destination": resource_fields(attributes),
        }
        async with self._errors(url, create_only=create_only):
            return await self._json(
                "POST", self._object_url(full, "/compose"), params=conditions, json_body=body
            )

    async def _clear_staging(self, upload_id: str, url: str, *, keep_parts: bool = False) -> None:
        """Delete the upload's staged objects, then its manifest (unless ``keep_parts``, which
        deletes the intermediate composites only)."""
        _, storage = await self._client()
        staged = await self._staged(upload_id, url)
        doomed = [
            n for n in staged if not (keep_parts and n.rsplit("/", 1)[-1].startswith("part-"))
        ]

        async def delete(name: str) -> None:
            async with self._errors(url, missing="absent_ok"):
                await storage.delete(self.bucket, name, timeout=_JSON_TIMEOUT_S)

        await self._fan_out(functools.partial(delete, name) for name in doomed)
        if not keep_parts:
            await delete(STAGING_PREFIX + upload_id)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        url = self.url_for(key)
        full = self._full(key)
        if not _UPLOAD_ID.fullmatch(upload_id):
            return
        try:
            manifest = await self._manifest(key, upload_id)
        except NotFound:
            if await self._bucket_missing():
                raise
            # No manifest: clear whatever parts are left under the upload's directory.
        else:
            if manifest["key"] != full:
                return
            await self._close(upload_id, manifest, url)
        await self._clear_staging(upload_id, url)

    async def list_multipart_uploads(self, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        _, storage = await self._client()
        wanted = self.prefix + prefix
        # The delimiter keeps the parts (one level down) out of the listing of manifests.
        params = {"prefix": STAGING_PREFIX, "delimiter": "/", "maxResults": "1000"}
        while True:
            async with self._errors(self.root_url):
                page = await storage.list_objects(
                    self.bucket, params=dict(params), timeout=_JSON_TIMEOUT_S
                )
            for item in page.get("items") or []:
                upload_id = str(item["name"])[len(STAGING_PREFIX) :]
                encoded = (item.get("metadata") or {}).get("key")
                if not _UPLOAD_ID.fullmatch(upload_id) or not isinstance(encoded, str):
                    continue
                try:
                    full = urllib.parse.unquote(encoded, errors="strict")
                except UnicodeDecodeError:
                    continue
                if full.startswith(wanted):
                    yield MultipartUpload(
                        full[len(self.prefix) :], upload_id, timestamp(item.get("timeCreated"))
                    )
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = str(token)
