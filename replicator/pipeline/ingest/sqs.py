"""The SQS poller: S3 notifications (direct, through SNS or EventBridge) from an SQS queue to
Kafka, with the lease handling of ``replicator.pipeline.ingest.queue``."""

from __future__ import annotations

from connectors.sqs import SQSQueue
from replicator.engine.retry import RetryPolicy
from replicator.pipeline.events import parse_s3
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.queue import QueueConsumer

__all__ = ["SQSPoller"]


class SQSPoller(QueueConsumer):
    """Moves S3 notifications from an SQS queue to Kafka.

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
        max_receives: int = 5,
        drain_s: float = 10.0,
        retry: RetryPolicy | None = None,
        count_lag_s: float = 0.0,
    ) -> None:
        super().__init__(
            queue,
            publisher,
            parse_s3,
            origin="sqs",
            batch=10,
            wait_s=wait_s,
            receivers=receivers,
            max_receives=max_receives,
            drain_s=drain_s,
            retry=retry,
            count_lag_s=count_lag_s,
        )
        self.queue: SQSQueue = queue
