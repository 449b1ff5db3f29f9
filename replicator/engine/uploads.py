"""Finding and aborting multipart uploads that a crashed or killed process left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors import open_store
from connectors.base import ObjectStore


async def _uploads(store: ObjectStore) -> list[dict[str, str | None]]:
    return [
        {
            "url": store.url_for(upload.key),
            "key": upload.key,
            "upload_id": upload.upload_id,
            "initiated": upload.initiated.isoformat() if upload.initiated else None,
        }
        async for upload in store.list_multipart_uploads()
    ]


async def list_uploads(url: str) -> list[dict[str, str | None]]:
    async with open_store(url) as store:
        return await _uploads(store)


async def clean_uploads(url: str, older_than: timedelta) -> list[dict[str, str | None]]:
    """Abort every upload under ``url`` started before now - ``older_than``. An upload whose
    start time the store does not report is left alone: it may belong to a live copy."""
    cutoff = datetime.now(UTC) - older_than
    aborted = []
    async with open_store(url) as store:
        for upload in await _uploads(store):
            initiated = upload["initiated"]
            if initiated is None or datetime.fromisoformat(initiated) > cutoff:
                continue
            await store.abort_multipart(str(upload["key"]), str(upload["upload_id"]))
            aborted.append(upload)
    return aborted
