"""The one-shot backfill: list every route's source and apply a listing event per object in
process (no Kafka), through the same applier as the daemon."""

from __future__ import annotations

import asyncio

import structlog

from connectors import open_store
from connectors.base import ObjectMeta
from replicator.catalog import Catalog
from replicator.daemon.applier import Applier, register_datasets
from replicator.engine.metadata import replica_source
from replicator.engine.transfer import Copier
from replicator.pipeline.events import scan_event
from replicator.pipeline.rules import (
    Router,
    RoutingConfig,
)

log = structlog.get_logger(__name__)


async def backfill(
    config: RoutingConfig,
    catalog: Catalog,
    copier: Copier,
    *,
    route_names: list[str] | None = None,
    concurrency: int = 16,
) -> dict[str, int]:
    """One-shot: list every route's source and copy what is missing or outdated, directly
    (no Kafka). Returns counts of copied, skipped and failed objects."""
    router = Router(config)
    applier = Applier(router, catalog, copier)
    counts = {"copied": 0, "skipped": 0, "deleted": 0, "failed": 0}
    gate = asyncio.Semaphore(concurrency)
    routes = [r for r in config.routes if route_names is None or r.name in route_names]
    await register_datasets(catalog, config)

    async def one(meta: ObjectMeta) -> None:
        async with gate:
            event = scan_event(meta.url, meta.size, meta.etag, meta.version, meta.last_modified)
            try:
                outcomes = await applier(event)
            except Exception as exc:
                counts["failed"] += 1
                log.error("backfill failed", source=meta.url, error=str(exc))
                return
            for outcome in outcomes:
                counts[outcome] = counts.get(outcome, 0) + 1

    try:
        for route in routes:
            async with open_store(route.source) as source:
                pending: set[asyncio.Task[None]] = set()
                async for meta in source.list():
                    if replica_source(meta.attributes.user_metadata) is not None:
                        continue
                    task = asyncio.create_task(one(meta))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    if len(pending) >= concurrency * 4:
                        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if pending:
                    await asyncio.wait(pending)
    finally:
        await applier.close()
    return counts
