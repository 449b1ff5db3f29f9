"""The SQS poller: S3 notifications from an SQS queue to Kafka."""

from __future__ import annotations

import asyncio

import structlog

from connectors.base import StoreError
from connectors.sqs import SQSQueue
from replicator.engine.retry import RetryPolicy
from replicator.pipeline.events import parse_s3
from replicator.pipeline.ingest.publisher import Publisher

log = structlog.get_logger(__name__)


class SQSPoller:
    """Moves S3 notifications from an SQS queue to Kafka; deletes a message only once Kafka
    acknowledged everything it carried.

    One receive returns at most 10 messages, and each round trip (receive, publish, delete)
    takes tens of milliseconds even on AWS, so a single loop caps the rate a queue can drain
    at; ``receivers`` loops run at once so that a busy queue is drained as fast as it fills.
    """

    def __init__(
        self,
        queue: SQSQueue,
        publisher: Publisher,
        *,
        wait_s: int = 10,
        receivers: int = 4,
        retry: RetryPolicy | None = None,
    ) -> None:
        if receivers < 1:
            raise ValueError("an SQS poller needs at least one receiver")
        self.queue = queue
        self.publisher = publisher
        self.wait_s = wait_s
        self.receivers = receivers
        self.retry = retry or RetryPolicy(
            max_attempts=1_000_000, max_delay=30, time_budget=float("inf")
        )

    async def poll_once(self) -> int:
        messages = await self.queue.receive(10, self.wait_s)
        counts = await asyncio.gather(
            *(self.publisher.ingest(m.body, parse_s3, "sqs") for m in messages)
        )
        await self.queue.delete(messages)
        return sum(counts)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._receive(stop) for _ in range(self.receivers)))

    async def _receive(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.retry.run(self.poll_once, what=f"poll {self.queue.queue_url}")
            except StoreError as exc:
                log.error(
                    "SQS polling failed; retrying", queue=self.queue.queue_url, error=str(exc)
                )
                await asyncio.sleep(5)
