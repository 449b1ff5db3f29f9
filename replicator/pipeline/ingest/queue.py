"""Notifications pulled from a queue on a lease (SQS, Azure Storage Queue, Pub/Sub pull) and
moved to Kafka: one consumer loop for all of them.

For each received message:

1. it is parsed at once (no ``await`` between receipt and parse) and held in the consumer's
   backlog with the oldest event time it carries, so the watermark never passes it;
2. a message the queue has handed out more than ``max_receives`` times is dead-lettered
   without being parsed again (it took down or outlived every process that received it), and
   an unusable one (any exception from the parser, oversized, not a notification) is
   dead-lettered with the reason; either way it is then deleted, so it can neither crash nor
   crash-loop the daemon;
3. the events a route takes are published; the message is deleted only after Kafka
   acknowledged every one of them (and its DLQ record, if any);
4. while that takes, the lease of every message of the batch is extended every third of its
   length, so no other receiver gets it; if Kafka is down the publish is retried with backoff
   under the same lease (a long outage does not inflate the receive count);
5. on stop, work in flight gets ``drain_s`` to finish; what is still unpublished then is
   released so that another daemon receives it at once.

A process killed mid-way leaves its messages to come back when their lease runs out, which is
why the lease is short and extended rather than long.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from connectors.base import StoreError
from connectors.queues import QueueDepth, QueueMessage
from replicator.engine.retry import RetryPolicy
from replicator.errors import Unavailable
from replicator.pipeline.bus import BusError
from replicator.pipeline.events import ChangeEvent
from replicator.pipeline.ingest.backlog import Holdings, UrlFilter
from replicator.pipeline.ingest.publisher import (
    Parser,
    Publisher,
    Rejection,
    parse_notification,
)

log = structlog.get_logger(__name__)


class LeasedQueue(Protocol):
    """What a queue connector offers the consumer (``connectors.sqs.SQSQueue``,
    ``connectors.azure_queue.AzureQueue``, ``connectors.pubsub.PubSubSubscription``)."""

    @property
    def name(self) -> str: ...

    @property
    def lease_s(self) -> int: ...

    async def receive(self, max_messages: int, wait_s: int) -> list[QueueMessage]: ...

    async def extend(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]: ...

    async def release(self, messages: Sequence[QueueMessage]) -> None: ...

    async def delete(self, messages: Sequence[QueueMessage]) -> None: ...

    async def depth(self) -> QueueDepth | None: ...

    async def close(self) -> None: ...


@dataclass
class _Received:
    message: QueueMessage
    token: int | None
    events: list[ChangeEvent]
    rejection: Rejection | None


class QueueConsumer:
    """Moves notifications from one leased queue to Kafka (see the module docstring)."""

    def __init__(
        self,
        queue: LeasedQueue,
        publisher: Publisher,
        parser: Parser,
        *,
        origin: str,
        batch: int = 10,
        wait_s: int = 10,
        receivers: int = 1,
        max_receives: int = 5,
        drain_s: float = 10.0,
        retry: RetryPolicy | None = None,
        count_lag_s: float = 0.0,
    ) -> None:
        if receivers < 1:
            raise ValueError("a queue consumer needs at least one receiver")
        if max_receives < 1:
            raise ValueError("max_receives must be at least 1")
        self.queue = queue
        self.publisher = publisher
        self.parser = parser
        self.origin = origin
        self.batch = batch
        self.wait_s = wait_s
        self.receivers = receivers
        self.max_receives = max_receives
        self.drain_s = drain_s
        # How far behind its own state the service's message counts may be (queue_depth).
        self.count_lag_s = count_lag_s
        self.retry = retry or RetryPolicy(
            max_attempts=1_000_000, max_delay=30, time_budget=float("inf")
        )
        self.holdings = Holdings()

    # -- IngestBacklog ------------------------------------------------------------------------

    def oldest_unpublished(self, matches: UrlFilter | None = None) -> datetime | None:
        return self.holdings.oldest(matches)

    async def queue_depth(self) -> QueueDepth | None:
        return await self.queue.depth()

    # -- one batch -----------------------------------------------------------------------------

    async def poll_once(self) -> int:
        """Receive one batch, publish it, delete what is done; returns the events published."""
        messages = await self.queue.receive(self.batch, self.wait_s)
        if not messages:
            return 0
        received_at = datetime.now(UTC)
        batch = [self._accept(message, received_at) for message in messages]
        # The latest value of each message: an extension may change its receipt.
        latest = {message.message_id: message for message in messages}
        try:
            async with self._leases(latest):
                counts = await asyncio.gather(*(self._settle(item) for item in batch))
            await self.queue.delete(list(latest.values()))
        except BaseException:
            with contextlib.suppress(StoreError):
                await asyncio.shield(self.queue.release(list(latest.values())))
            raise
        finally:
            for item in batch:
                if item.token is not None:
                    self.holdings.release(item.token)
        return sum(counts)

    def _accept(self, message: QueueMessage, received_at: datetime) -> _Received:
        """Parse and hold one message; synchronous, so nothing is received unaccounted."""
        since = min(received_at, message.sent_at or received_at)
        if message.receive_count > self.max_receives:
            rejection = Rejection(
                f"received {message.receive_count} times (limit {self.max_receives}) without "
                "being settled: every receiver died or timed out holding it",
                "TooManyReceives",
            )
            return _Received(message, self.holdings.hold(since, None), [], rejection)
        parsed = parse_notification(self.parser, message.body)
        if isinstance(parsed, Rejection):
            return _Received(message, self.holdings.hold(since, None), [], parsed)
        routed = self.publisher.routed(parsed)
        token = None
        if routed:
            token = self.holdings.hold(
                min(e.event_time for e in routed), (e.source_url for e in routed)
            )
        return _Received(message, token, parsed, None)

    async def _settle(self, item: _Received) -> int:
        """Publish (or dead-letter) one message, retrying while Kafka is unavailable."""
        rng = random.Random()
        delay = self.retry.base_delay
        while True:
            try:
                if item.rejection is not None:
                    await self.publisher.dead_letter(
                        item.message.body,
                        item.rejection,
                        self.origin,
                        [
                            ("replicator.queue", self.queue.name),
                            ("replicator.message_id", item.message.message_id),
                            ("replicator.receive_count", str(item.message.receive_count)),
                        ],
                    )
                    published = 0
                else:
                    published = await self.publisher.publish(item.events)
            except (BusError, Unavailable) as exc:
                # Kafka, or the catalog the changes are recorded in first, is down: the
                # message stays leased and is tried again.
                delay = self.retry.next_delay(delay, rng)
                log.error(
                    "Kafka or the catalog unavailable; holding the queue message",
                    queue=self.queue.name,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
                continue
            if item.token is not None:
                self.holdings.release(item.token)
                item.token = None
            return published

    @contextlib.asynccontextmanager
    async def _leases(self, latest: dict[str, QueueMessage]) -> AsyncIterator[None]:
        """Keep the messages in ``latest`` leased while the body runs, updating each to its
        latest value."""
        done = asyncio.Event()

        async def keep() -> None:
            interval = max(0.5, self.queue.lease_s / 3)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), interval)
                if done.is_set():
                    return
                try:
                    renewed = await self.queue.extend(list(latest.values()))
                except StoreError as exc:
                    log.warning(
                        "cannot extend queue leases; messages may be received twice",
                        queue=self.queue.name,
                        error=str(exc),
                    )
                    continue
                latest.update((message.message_id, message) for message in renewed)

        keeper = asyncio.create_task(keep(), name=f"lease-keeper {self.queue.name}")
        try:
            yield
        finally:
            # Let an extension in progress finish rather than cancel it: its answer may carry
            # the receipt that the delete needs.
            done.set()
            await asyncio.shield(keeper)

    # -- the loops -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        loops = [
            asyncio.create_task(self._receive(stop), name=f"receive {self.queue.name}")
            for _ in range(self.receivers)
        ]
        await stop.wait()
        _, late = await asyncio.wait(loops, timeout=self.drain_s)
        for task in late:
            task.cancel()
        if late:
            log.warning(
                "queue consumer stopped with messages in flight; released for redelivery",
                queue=self.queue.name,
            )
        await asyncio.gather(*loops, return_exceptions=True)

    async def _receive(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.retry.run(self.poll_once, what=f"poll {self.queue.name}")
            except Exception as exc:
                log.error(
                    "queue polling failed; retrying",
                    queue=self.queue.name,
                    error=str(exc),
                    error_type=type(exc).__name__,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5)
