"""The Azure Storage Queue consumer: Event Grid blob events (Event Grid schema or CloudEvents
1.0) that Event Grid delivered to a Storage Queue, moved to Kafka with the lease handling of
``replicator.pipeline.ingest.queue``. The pattern Azure documents for consumers that cannot
expose a webhook: nothing reaches in, the daemon pulls."""

from __future__ import annotations

from connectors.azure_queue import AzureQueue
from replicator.engine.retry import RetryPolicy
from replicator.pipeline.events import parse_azure
from replicator.pipeline.ingest.publisher import Publisher
from replicator.pipeline.ingest.queue import QueueConsumer


class AzureQueueConsumer(QueueConsumer):
    def __init__(
        self,
        queue: AzureQueue,
        publisher: Publisher,
        *,
        wait_s: int = 10,
        receivers: int = 2,
        max_receives: int = 5,
        drain_s: float = 10.0,
        retry: RetryPolicy | None = None,
        count_lag_s: float = 0.0,
    ) -> None:
        super().__init__(
            queue,
            publisher,
            parse_azure,
            origin="azure-queue",
            batch=32,
            wait_s=wait_s,
            receivers=receivers,
            max_receives=max_receives,
            drain_s=drain_s,
            retry=retry,
            count_lag_s=count_lag_s,
        )
        self.queue: AzureQueue = queue
