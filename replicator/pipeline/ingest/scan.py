"""The listing scan: a change event for every object under a source (stores without
notifications, backfills, reconciliation)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from connectors import open_store
from replicator.engine.metadata import replica_source
from replicator.pipeline.events import ChangeEvent, scan_event
from replicator.pipeline.ingest.publisher import Publisher


async def scan(
    source_url: str,
    publisher: Publisher,
    *,
    start_after: str | None = None,
    on_page: Callable[[str], Awaitable[None]] | None = None,
) -> int:
    """Publish a change event for every object under ``source_url`` (stores without
    notifications, backfills, reconciliation). Replicas found there are skipped."""
    published = 0
    batch: list[ChangeEvent] = []
    async with open_store(source_url) as store:
        async for meta in store.list(start_after=start_after):
            if replica_source(meta.attributes.user_metadata) is not None:
                continue
            batch.append(
                scan_event(meta.url, meta.size, meta.etag, meta.version, meta.last_modified)
            )
            if len(batch) == 500:
                published += await publisher.publish(batch)
                batch.clear()
                if on_page is not None:
                    await on_page(meta.key)
        published += await publisher.publish(batch)
    return published
