"""What a daemon knows that the catalog does not, for the watermark (DESIGN.md rule 9).

The catalog holds every change ingest accepted (it is recorded before it is published), so a
route's watermark computed from it waits for everything in Kafka and in the workers. Before
that, a change is in one of two places the catalog cannot see:

* held by this daemon's ingest, received and not yet recorded: its event time is known
  (``IngestBacklog.oldest_unpublished``);
* in a notification queue (SQS, an Azure Storage Queue): waiting to be received, or received
  by a daemon that died holding it (invisible until its lease ends). Its event time is not
  known to anyone. What is known: when the queue was last seen empty (waiting and in flight),
  every message sent before then had been deleted, i.e. recorded in the catalog. So the routes
  it feeds can promise no more than the last moment it was seen empty (a message may have
  arrived since, even when the last sample found none); a queue never seen empty since this
  daemon started allows no promise at all.

``QueueWatch`` samples each queue's depth (the service's own count) every ``interval`` and
keeps, per queue, the start of the last sample that found it empty. Pub/Sub and HTTP push
have no count: a Pub/Sub message is redelivered to a live subscriber within its ack deadline,
and a push the daemon did not answer is the sender's to retry; neither is held here.

Services report approximate counts (SQS documents that its counts settle up to a minute after
messages stop arriving): a sample that finds a queue empty vouches only for messages sent
``count_lag_s`` before it, and only when this daemon's own consumer holds nothing either. The
hold applies whatever the last sample found: a message sent after the last empty sample is not
known to anyone yet, so an empty queue holds the watermark at that sample too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from connectors.base import StoreError
from replicator.catalog.lag import NO_PROMISE
from replicator.pipeline.ingest.backlog import IngestBacklog
from replicator.pipeline.ingest.queue import QueueConsumer

log = structlog.get_logger(__name__)


# The store scheme whose notifications each kind of queue carries.
_FEEDS = {"sqs": "s3://", "azure-queue": "az://"}


@dataclass
class _Queue:
    consumer: QueueConsumer
    feeds: str
    empty_at: datetime | None = None
    depth: int | None = None


class QueueWatch:
    """The last time each notification queue was seen empty, and the hold it puts on the
    watermarks of the routes it feeds."""

    def __init__(
        self,
        consumers: Sequence[QueueConsumer],
        backlogs: Sequence[IngestBacklog],
        *,
        interval: timedelta = timedelta(seconds=1),
    ) -> None:
        self.queues = [_Queue(c, _FEEDS[c.origin]) for c in consumers if c.origin in _FEEDS]
        self.backlogs = list(backlogs)
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval.total_seconds())

    async def sample(self) -> None:
        """Ask every queue for its depth once."""
        for queue in self.queues:
            started = datetime.now(UTC)
            try:
                depth = await queue.consumer.queue_depth()
            except StoreError as exc:
                log.warning(
                    "cannot read a queue's depth", queue=queue.consumer.queue.name, error=str(exc)
                )
                continue
            if depth is None:
                continue
            queue.depth = depth.total
            if depth.total == 0 and not len(queue.consumer.holdings):
                queue.empty_at = started - timedelta(seconds=queue.consumer.count_lag_s)

    def held(self, source: str) -> datetime | None:
        """The oldest event time the watermark of a route reading ``source`` may not pass
        because of what this daemon's ingest holds or its queues may still hold (None: no
        hold; ``NO_PROMISE``: no watermark can be promised yet)."""
        times = [
            backlog.oldest_unpublished(lambda url: url.startswith(source))
            for backlog in self.backlogs
        ]
        for queue in self.queues:
            if not source.startswith(queue.feeds):
                continue
            times.append(queue.empty_at or NO_PROMISE)
        return min((t for t in times if t is not None), default=None)
