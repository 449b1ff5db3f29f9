"""The producer side the one-shot commands share with the daemon's ingest: publishing change
events for the fleet, each recorded in the catalog as accepted first (so the routes'
watermarks wait for it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replicator.catalog import Catalog
    from replicator.daemon.config import DaemonConfig
    from replicator.pipeline.ingest.publisher import Publisher


@asynccontextmanager
async def accepting_publisher(settings: DaemonConfig, catalog: Catalog) -> AsyncIterator[Publisher]:
    """A publisher on the configuration's changes topic (topics created if missing) whose
    changes are recorded as accepted in ``catalog`` before they are sent."""
    from replicator.daemon.applier import record_accepted
    from replicator.daemon.service import Daemon
    from replicator.pipeline.bus import AsyncProducer, ensure_topics
    from replicator.pipeline.ingest.publisher import Publisher
    from replicator.pipeline.rules import Router

    daemon = Daemon(settings)
    kafka = settings.kafka
    await asyncio.to_thread(
        ensure_topics,
        daemon.kafka_settings(),
        {kafka.changes_topic: kafka.partitions, kafka.dlq_topic: 1},
    )
    router = Router(settings)
    producer = AsyncProducer(daemon.kafka_settings())
    try:
        yield Publisher(
            producer,
            router,
            changes_topic=kafka.changes_topic,
            dlq_topic=kafka.dlq_topic,
            accept=lambda events: record_accepted(catalog, router, events),
        )
    finally:
        await producer.close()
