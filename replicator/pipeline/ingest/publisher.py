"""The publisher every ingest path shares: route, publish to the changes topic keyed by source
object URL, dead-letter what cannot be parsed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from replicator.pipeline.bus import CHANGES_TOPIC, DLQ_TOPIC, AsyncProducer
from replicator.pipeline.events import (
    ChangeEvent,
    ParseError,
)
from replicator.pipeline.rules import Router

log = structlog.get_logger(__name__)

Parser = Callable[[bytes | str], list[ChangeEvent]]


class Publisher:
    """Routes, then publishes change events; dead-letters what cannot be parsed."""

    def __init__(
        self,
        producer: AsyncProducer,
        router: Router,
        *,
        changes_topic: str = CHANGES_TOPIC,
        dlq_topic: str = DLQ_TOPIC,
    ) -> None:
        self.producer = producer
        self.router = router
        self.changes_topic = changes_topic
        self.dlq_topic = dlq_topic
        self.published = 0
        self.filtered = 0
        self.dead_lettered = 0

    async def publish(self, events: Sequence[ChangeEvent]) -> int:
        routed = [e for e in events if self.router.targets(e.source_url)]
        self.filtered += len(events) - len(routed)
        await asyncio.gather(
            *(
                self.producer.send(self.changes_topic, e.source_url.encode(), e.to_json())
                for e in routed
            )
        )
        self.published += len(routed)
        return len(routed)

    async def ingest(self, payload: bytes | str, parser: Parser, origin: str) -> int:
        """Parse and publish one notification; unparseable ones go to the DLQ."""
        try:
            events = parser(payload)
        except ParseError as exc:
            await self.dead_letter(payload, exc.reason, origin)
            return 0
        return await self.publish(events)

    async def dead_letter(self, payload: bytes | str, reason: str, origin: str) -> None:
        body = payload.encode() if isinstance(payload, str) else payload
        log.warning("notification dead-lettered", origin=origin, reason=reason[:500])
        await self.producer.send(
            self.dlq_topic,
            None,
            body[:900_000],
            [
                ("replicator.reason", reason[:4000].encode()),
                ("replicator.error", b"ParseError"),
                ("replicator.origin", origin.encode()),
            ],
        )
        self.dead_lettered += 1
