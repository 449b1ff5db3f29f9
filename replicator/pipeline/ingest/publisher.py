"""The publisher every ingest path shares: route, publish to the changes topic keyed by source
object URL, dead-letter what cannot be parsed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from connectors.queues import QueueDepth
from replicator.pipeline.bus import CHANGES_TOPIC, DLQ_TOPIC, AsyncProducer
from replicator.pipeline.events import (
    ChangeEvent,
    ParseError,
    default_account_url,
)
from replicator.pipeline.ingest.backlog import Holdings, UrlFilter
from replicator.pipeline.rules import Router

log = structlog.get_logger(__name__)

Parser = Callable[[bytes | str], list[ChangeEvent]]
#: Records routed changes before they are published (the daemon: as pending in the catalog),
#: so that a change waiting in Kafka or in a worker's memory holds its route's watermark.
Acceptor = Callable[[Sequence[ChangeEvent]], Awaitable[object]]
#: Every DLQ record is cut to this, below Kafka's default 1 MB record limit with its headers.
DLQ_BODY_LIMIT = 900_000


@dataclass(frozen=True)
class Rejection:
    """Why a notification cannot be used: the DLQ's reason and error headers."""

    reason: str
    error: str


def parse_notification(parser: Parser, payload: bytes | str) -> list[ChangeEvent] | Rejection:
    """``parser(payload)``, or why not. Any exception is a rejection, not only ParseError: a
    body that trips the parser in an unforeseen way (RecursionError from deep nesting, a bug)
    must go to the DLQ, never take the process down and come back to do it again."""
    try:
        return parser(payload)
    except ParseError as exc:
        return Rejection(exc.reason, "ParseError")
    except Exception as exc:
        return Rejection(f"{type(exc).__name__}: {str(exc)[:1000]}", type(exc).__name__)


async def send_change(
    producer: AsyncProducer, topic: str, event: ChangeEvent, key: str | None = None
) -> None:
    """Publish ``event`` keyed by its source object URL (or ``key``: ``Router.ordering_key``):
    every change of one key lands on one partition, whose owner applies them in order.
    Returns once Kafka has it."""
    await producer.send(topic, (key or event.source_url).encode(), event.to_json())


def routed_events(
    router: Router, events: Sequence[ChangeEvent], azure_default_account: str | None = None
) -> list[ChangeEvent]:
    """The events some route takes, with their URLs in the routes' form. A replication
    group's member's events go without their store's sequencer: the changes of one key at
    several members share its catalog rows, and sequencers of different stores (S3's and
    Azure's hex, GCS's generations) do not compare, so they are ordered by their event times,
    as the group's conflict rule orders them."""
    if azure_default_account is not None:
        events = [
            replace(e, source_url=url)
            if (url := default_account_url(e.source_url, azure_default_account)) != e.source_url
            else e
            for e in events
        ]
    routed = []
    for event in events:
        targets = router.targets(event.source_url)
        if not targets:
            continue
        if targets[0].route.group is not None and event.sequencer:
            event = replace(event, sequencer="")
        routed.append(event)
    return routed


class Publisher:
    """Routes, then publishes change events; dead-letters what cannot be parsed.

    It is an ``IngestBacklog``: the changes it is publishing (from any caller: receivers,
    queue consumers, scans) are held until Kafka acknowledged them. With an ``accept``, every
    routed change is recorded through it before it is published: once Kafka has a change, a
    durable record of it holds its route's watermark until it is applied.
    """

    def __init__(
        self,
        producer: AsyncProducer,
        router: Router,
        *,
        changes_topic: str = CHANGES_TOPIC,
        dlq_topic: str = DLQ_TOPIC,
        azure_default_account: str | None = None,
        accept: Acceptor | None = None,
    ) -> None:
        self.producer = producer
        self.accept = accept
        self.router = router
        # Events of this storage account are published as az://container/key, the URL that
        # routes and stores written without an account mean (events.default_account_url).
        self.azure_default_account = azure_default_account
        self.changes_topic = changes_topic
        self.dlq_topic = dlq_topic
        self.published = 0
        self.filtered = 0
        self.dead_lettered = 0
        self.holdings = Holdings()

    def routed(self, events: Sequence[ChangeEvent]) -> list[ChangeEvent]:
        """The events some route takes, as the pipeline orders them (``routed_events``)."""
        return routed_events(self.router, events, self.azure_default_account)

    async def publish(self, events: Sequence[ChangeEvent]) -> int:
        routed = self.routed(events)
        self.filtered += len(events) - len(routed)
        if not routed:
            return 0
        token = self.holdings.hold(
            min(e.event_time for e in routed), (e.source_url for e in routed)
        )
        try:
            if self.accept is not None:
                await self.accept(routed)
            await asyncio.gather(
                *(
                    send_change(
                        self.producer,
                        self.changes_topic,
                        e,
                        self.router.ordering_key(e.source_url),
                    )
                    for e in routed
                )
            )
        finally:
            self.holdings.release(token)
        self.published += len(routed)
        return len(routed)

    async def ingest(self, payload: bytes | str, parser: Parser, origin: str) -> int:
        """Parse and publish one notification; unusable ones go to the DLQ."""
        parsed = parse_notification(parser, payload)
        if isinstance(parsed, Rejection):
            await self.dead_letter(payload, parsed, origin)
            return 0
        return await self.publish(parsed)

    async def dead_letter(
        self,
        payload: bytes | str,
        rejection: Rejection,
        origin: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Park ``payload`` in the DLQ with the reason; returns once Kafka has it."""
        body = payload.encode(errors="replace") if isinstance(payload, str) else payload
        log.warning(
            "notification dead-lettered",
            origin=origin,
            reason=rejection.reason[:500],
            error=rejection.error,
            size=len(body),
        )
        await self.producer.send(
            self.dlq_topic,
            None,
            body[:DLQ_BODY_LIMIT],
            [
                ("replicator.reason", rejection.reason[:4000].encode()),
                ("replicator.error", rejection.error.encode()),
                ("replicator.origin", origin.encode()),
                *((name, value.encode()) for name, value in headers),
            ],
        )
        self.dead_lettered += 1

    def oldest_unpublished(self, matches: UrlFilter | None = None) -> datetime | None:
        return self.holdings.oldest(matches)

    async def queue_depth(self) -> QueueDepth | None:
        return None
