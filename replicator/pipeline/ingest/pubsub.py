"""The Pub/Sub pull subscriber: GCS notifications from a Pub/Sub subscription to Kafka, with
the lease handling of ``replicator.pipeline.ingest.queue`` (leases are ack deadlines).

Flow control: each of ``receivers`` loops pulls at most ``batch`` messages and pulls again
only once its batch is settled, so at most ``receivers x batch`` messages are outstanding
(delivered and not yet acknowledged) at any time, however far Kafka falls behind.
"""

from __future__ import annotations

from connectors.pubsub import PubSubSubscription
from replicator.engine.retry import RetryPolicy
from replicator.pipeline.events import parse_gcs
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.queue import QueueConsumer


class PubSubConsumer(QueueConsumer):
    def __init__(
        self,
        subscription: PubSubSubscription,
        publisher: Publisher,
        *,
        batch: int = 100,
        wait_s: int = 10,
        receivers: int = 2,
        max_receives: int = 5,
        drain_s: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            subscription,
            publisher,
            parse_gcs,
            origin="pubsub",
            batch=batch,
            wait_s=wait_s,
            receivers=receivers,
            max_receives=max_receives,
            drain_s=drain_s,
            retry=retry,
        )
        self.queue: PubSubSubscription = subscription
